"""Errors the language-model package raises, each printable on one line.

LMError                  anything a user can fix from the message (bad corpus, bad options)
 ├── CheckpointError     a model directory is missing files, truncated or mismatched
 │    └── UnsafeCheckpointError   weights that are not safetensors (pickle): refused, never loaded
 └── DataError           empty, binary or too-small corpora and malformed chat JSONL
"""

from __future__ import annotations


class LMError(Exception):
    """Base class for language-model errors a user can act on."""


class CheckpointError(LMError):
    pass


class UnsafeCheckpointError(CheckpointError):
    pass


class DataError(LMError):
    pass


# -- seq2seq (translator, abstractive summarizer) ---------------------------------------------
#
# DataError
#  └── PairFileError      a pair file (TSV/CSV/JSONL or parallel .en/.de files) that cannot be
#                         read as pairs: names the file and line (malformed row, mismatched line
#                         counts, empty file, undecodable bytes)
# CheckpointError
#  └── MissingDependencyError   a model directory that needs an optional package (sentencepiece)


class PairFileError(DataError):
    """A pair file that cannot be read; the message names ``file:line``."""


class MissingDependencyError(CheckpointError):
    """Loading this model needs a package that is not installed; the message says which."""
