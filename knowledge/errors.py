"""Errors the knowledge package raises, each with a one-line message worth printing.

    KnowledgeError
     ├── IngestError          one file could not be ingested (names the file and why)
     │    ├── UnsafePathError  outside the allowed roots, symlink escape, special file
     │    └── UnsupportedFileError
     ├── StoreError           the SQLite store or the FAISS index cannot be used
     └── QueryError           empty, oversized or undecodable question

``KnowledgeError`` subclasses ``RuntimeError`` so callers that only know the standard
hierarchy still catch it; the CLI prints ``error: <message>``.
"""

from __future__ import annotations


class KnowledgeError(RuntimeError):
    """Base class for anything the knowledge package reports to a user."""


class IngestError(KnowledgeError):
    """A file was skipped; the message names it and gives the reason."""


class UnsafePathError(IngestError):
    pass


class UnsupportedFileError(IngestError):
    pass


class StoreError(KnowledgeError):
    pass


class QueryError(KnowledgeError):
    pass
