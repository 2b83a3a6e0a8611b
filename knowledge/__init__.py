"""Knowledge: ingestion, embeddings, the FAISS index, the knowledge graph and fused answers.

Imports stay light: ``knowledge.base`` (FAISS, SQLite) loads only when these names are used.
"""

from __future__ import annotations

from typing import Any

from knowledge.errors import KnowledgeError

_LAZY = {
    "Answer": "knowledge.base",
    "Citation": "knowledge.base",
    "IngestReport": "knowledge.base",
    "KnowledgeBase": "knowledge.base",
    "Passage": "knowledge.base",
}

__all__ = ["Answer", "Citation", "IngestReport", "KnowledgeBase", "KnowledgeError", "Passage"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'knowledge' has no attribute {name!r}")
