"""FAISS vector index: exact inner product when small, HNSW when large.

Vectors are unit length, so inner product is cosine. Below ``hnsw_threshold`` vectors the
index is ``IndexIDMap2(IndexFlatIP)`` (exact, supports removal); above it ``IndexHNSWFlat``
(sub-millisecond queries at recall@10 around 0.99 on 100k clustered vectors). HNSW cannot
remove vectors, so removals become tombstones filtered at search time until the owner
rebuilds (:attr:`VectorIndex.needs_rebuild`).

Searches run concurrently under a shared lock; adds and removals take it exclusively.
Files are written to a temp file, fsync'd and hashed; the caller records the hash in
SQLite and then moves the file into place, and :meth:`VectorIndex.load` refuses a file
whose hash differs *before* FAISS parses a single byte of it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import cast

import numpy as np

from knowledge.errors import StoreError

HNSW_THRESHOLD = 20_000
KINDS = ("auto", "flat", "hnsw")
_MAX_THREADS = max(1, os.cpu_count() or 1)


class RWLock:
    """Many readers or one writer; a waiting writer goes before new readers (no starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting = 0

    def read(self):
        return _Guard(self._acquire_read, self._release_read)

    def write(self):
        return _Guard(self._acquire_write, self._release_write)

    def _acquire_read(self) -> None:
        with self._cond:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1

    def _release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    def _acquire_write(self) -> None:
        with self._cond:
            self._waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._writer = True

    def _release_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()


class _Guard:
    def __init__(self, enter, leave) -> None:
        self._enter, self._leave = enter, leave

    def __enter__(self) -> None:
        self._enter()

    def __exit__(self, *exc) -> None:
        self._leave()


def auto_ef_search(n: int) -> int:
    """HNSW search beam width for an index of ``n`` vectors.

    Recall at a fixed beam falls as the graph grows: efSearch 96 gives recall@10 0.9993 at
    100k vectors, while at 1M efSearch 128 gives 0.91 and 512 is needed for 0.95
    (``benchmarks/knowledge_vectors.py``). A wider beam costs query time, so it widens with
    the size instead of always paying the 1M price.
    """
    if n <= 200_000:
        return 96
    if n <= 500_000:
        return 256
    return 512


def resolve_kind(kind: str, n: int, threshold: int = HNSW_THRESHOLD) -> str:
    if kind not in KINDS:
        raise StoreError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "auto":
        return "hnsw" if n >= threshold else "flat"
    return kind


class VectorIndex:
    """A FAISS index of ``dim``-d unit vectors keyed by int64 chunk ids.

    Args:
        dim: vector size (384 for MiniLM).
        kind: "flat" (exact) or "hnsw" (approximate); resolve "auto" with :func:`resolve_kind`.
        hnsw_m, ef_construction: HNSW graph degree and build beam width.
        ef_search: HNSW search beam width; ``None`` follows the size (:func:`auto_ef_search`).
    """

    def __init__(
        self,
        dim: int,
        kind: str = "flat",
        *,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int | None = None,
        _faiss_index=None,
    ) -> None:
        import faiss

        if kind not in ("flat", "hnsw"):
            raise StoreError(f"index kind must be 'flat' or 'hnsw', not {kind!r}")
        if ef_search is not None and not 1 <= ef_search <= 65_536:
            raise StoreError(f"ef_search must be between 1 and 65536, not {ef_search}")
        self.dim, self.kind = dim, kind
        self._lock = RWLock()
        self._tombstones: set[int] = set()
        self._ef_search = ef_search
        if _faiss_index is not None:
            self._index = _faiss_index
        elif kind == "flat":
            self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        else:
            inner = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = ef_construction
            self._index = faiss.IndexIDMap2(inner)
        self._set_ef()

    def _beam(self) -> int:
        return self._ef_search or auto_ef_search(int(self._index.ntotal))

    @property
    def ef_search(self) -> int | None:
        """The HNSW search beam in use (None for a flat index)."""
        return self._beam() if self.kind == "hnsw" else None

    def _set_ef(self) -> None:
        import faiss

        if self.kind == "hnsw":
            # downcast_index returns the concrete subclass; its stub says plain ``Index``.
            hnsw = cast("faiss.IndexHNSW", faiss.downcast_index(self._index.index))
            hnsw.hnsw.efSearch = self._beam()

    # -- size --------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        """Live vectors (tombstoned ones excluded)."""
        return int(self._index.ntotal) - len(self._tombstones)

    @property
    def needs_rebuild(self) -> bool:
        return bool(self._tombstones)

    def ids(self) -> np.ndarray:
        import faiss

        with self._lock.read():
            ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        if self._tombstones:
            ids = ids[~np.isin(ids, np.fromiter(self._tombstones, dtype=np.int64))]
        return ids

    def id_checksum(self) -> tuple[int, int]:
        ids = self.ids()
        return len(ids), int(((ids * 2654435761) % 4294967291).sum())

    # -- writes ------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[1] != self.dim or vecs.shape[0] != len(ids):
            raise StoreError(f"vectors must have shape (n, {self.dim}); got {vecs.shape}")
        with self._lock.write():
            self._index.add_with_ids(vecs, np.ascontiguousarray(ids, dtype=np.int64))
            self._set_ef()  # the automatic beam widens as the index grows

    def remove(self, ids) -> None:
        import faiss

        ids = np.ascontiguousarray(list(ids), dtype=np.int64)
        if len(ids) == 0:
            return
        with self._lock.write():
            if self.kind == "flat":
                self._index.remove_ids(faiss.IDSelectorBatch(ids))
            else:
                self._tombstones.update(int(i) for i in ids)

    # -- search ------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) for each query row; missing slots have id -1."""
        import faiss

        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise StoreError(f"query vectors must have {self.dim} dimensions, not {q.shape[1]}")
        # One query gains nothing from OpenMP, and on busy cores the thread hand-off costs
        # 10-50x (measured: HNSW 0.44 ms with 1 thread vs 5-20 ms with 2). The setting is
        # per calling thread, so concurrent searches do not disturb each other.
        faiss.omp_set_num_threads(1 if len(q) <= 4 else _MAX_THREADS)
        with self._lock.read():
            n = int(self._index.ntotal)
            if n == 0 or k <= 0:
                return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
            extra = min(len(self._tombstones), 4 * k) if self._tombstones else 0
            scores, ids = self._index.search(q, min(k + extra, n))
            dead = np.fromiter(self._tombstones, dtype=np.int64) if self._tombstones else None
        if dead is not None:
            out_s = np.full((len(q), k), -np.inf, np.float32)
            out_i = np.full((len(q), k), -1, np.int64)
            for r in range(len(q)):
                keep = ~np.isin(ids[r], dead) & (ids[r] >= 0)
                s, i = scores[r][keep][:k], ids[r][keep][:k]
                out_s[r, : len(s)], out_i[r, : len(i)] = s, i
            return out_s, out_i
        return scores, ids

    # -- persistence -------------------------------------------------------------------
    def write_temp(self, path: Path) -> tuple[Path, str]:
        """Serialize to ``<path>.tmp`` (fsync'd); return (temp path, sha256 of its bytes)."""
        import faiss

        if self._tombstones:
            raise StoreError("rebuild the HNSW index before saving (it holds removed vectors)")
        with self._lock.read():
            data = faiss.serialize_index(self._index).tobytes()
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:  # disk full, I/O error: no half-written temp file stays behind
            tmp.unlink(missing_ok=True)
            raise StoreError(f"{path}: cannot write the index ({exc.strerror or exc})") from None
        return tmp, hashlib.sha256(data).hexdigest()

    @classmethod
    def load(cls, path: Path, expected_sha256: str, *, ef_search: int | None = None) -> VectorIndex:
        """Load ``path`` only if its bytes hash to ``expected_sha256``; else StoreError."""
        import faiss

        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StoreError(f"{path}: cannot read the index ({exc.strerror or exc})") from exc
        if hashlib.sha256(data).hexdigest() != expected_sha256:
            raise StoreError(f"{path}: index file does not match its recorded checksum")
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except Exception as exc:  # faiss raises RuntimeError with C++ text
            raise StoreError(f"{path}: unreadable index ({exc})") from exc
        inner = faiss.downcast_index(index.index) if hasattr(index, "index") else None
        kind = "hnsw" if isinstance(inner, faiss.IndexHNSW) else "flat"
        return cls(index.d, kind, ef_search=ef_search, _faiss_index=index)


def fsync_dir(path: Path) -> None:
    """Make a rename durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
