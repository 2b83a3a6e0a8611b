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
