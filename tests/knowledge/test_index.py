"""FAISS wrapper: exact and HNSW search, removal, checksummed persistence, locking."""

from __future__ import annotations

import math
import random
import threading
from pathlib import Path

import numpy as np
import pytest

from knowledge.errors import StoreError
from knowledge.index import RWLock, VectorIndex, resolve_kind
from knowledge.lexical import BM25, tokenize


def _unit(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_search_finds_itself_and_removal_hides(kind: str) -> None:
    x = _unit(300)
    ids = np.arange(1000, 1300, dtype=np.int64)
    idx = VectorIndex(32, kind)
    idx.add(ids, x)
    scores, got = idx.search(x[:5], 3)
    assert list(got[:, 0]) == list(ids[:5])
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)
    idx.remove([1000, 1001])
    _, got = idx.search(x[:2], 3)
    assert 1000 not in got and 1001 not in got
    assert idx.ntotal == 298
    assert idx.needs_rebuild == (kind == "hnsw")


def test_resolve_kind() -> None:
    assert resolve_kind("auto", 10, threshold=100) == "flat"
    assert resolve_kind("auto", 100, threshold=100) == "hnsw"
    assert resolve_kind("flat", 10**6) == "flat"
    with pytest.raises(StoreError, match="unknown index kind"):
        resolve_kind("ivf", 1)


def test_save_load_checks_hash_before_parsing(tmp_path: Path, monkeypatch) -> None:
    idx = VectorIndex(32, "flat")
    idx.add(np.arange(10, dtype=np.int64), _unit(10))
    path = tmp_path / "v.faiss"
    tmp, sha = idx.write_temp(path)
    tmp.replace(path)
    loaded = VectorIndex.load(path, sha)
    assert loaded.id_checksum() == idx.id_checksum()

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    import faiss

    def boom(*a, **k):
        raise AssertionError("faiss parsed an unverified file")

    monkeypatch.setattr(faiss, "deserialize_index", boom)
    with pytest.raises(StoreError, match="checksum"):
        VectorIndex.load(path, sha)
    with pytest.raises(StoreError, match="cannot read"):
        VectorIndex.load(tmp_path / "missing.faiss", sha)


def test_bad_shapes() -> None:
    idx = VectorIndex(32, "flat")
    with pytest.raises(StoreError, match="shape"):
        idx.add(np.arange(2, dtype=np.int64), np.zeros((2, 16), np.float32))
    with pytest.raises(StoreError, match="dimensions"):
        idx.search(np.zeros(16, np.float32), 1)
    s, i = idx.search(np.zeros(32, np.float32), 5)
    assert s.shape == (1, 0) and i.shape == (1, 0)


def test_concurrent_search_during_adds() -> None:
    idx = VectorIndex(32, "flat")
    x = _unit(2000, seed=1)
    idx.add(np.arange(100, dtype=np.int64), x[:100])
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                _, got = idx.search(x[:4], 5)
                assert (got >= 0).all() and (got < 2000).all()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for s in range(100, 2000, 100):
        idx.add(np.arange(s, s + 100, dtype=np.int64), x[s : s + 100])
        idx.remove(range(s - 50, s - 40))
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert idx.ntotal == 2000 - 19 * 10


def test_rwlock_excludes_writer_while_reading() -> None:
    lock, log = RWLock(), []
    with lock.read():
        t = threading.Thread(target=lambda: (lock.write().__enter__(), log.append("w")))
        t.start()
        t.join(0.1)
        assert log == []  # the writer waits for the reader
    t.join(1)
    assert log == ["w"]


def test_bm25_ranks_rare_terms_and_removes() -> None:
    bm = BM25()
    bm.add([(1, "the kettle boils water"), (2, "the grinder grinds coffee beans"),
            (3, "order JH-1234 shipped")])  # fmt: skip
    assert bm.search("grinding coffee", 1)[0][0] == 2
    assert bm.search("JH-1234", 1)[0][0] == 3
    assert bm.score("kettle", [1, 2])[2] == 0.0
    bm.remove([2])
    assert bm.search("coffee", 3) == []
    assert len(bm) == 2
    assert tokenize("The Refunds!") == ["refund"]
    # inflections meet: release / released, freeze / freezes, charge / charging
    for a, b in (("release", "released"), ("freeze", "freezes"), ("charge", "charging")):
        assert tokenize(a) == tokenize(b), (a, b)


def _bm25_reference(docs: dict[int, str], query: str, k1: float = 1.2, b: float = 0.75):
    """BM25 by the textbook formula, one document at a time."""
    toks = {i: tokenize(t) for i, t in docs.items()}
    n, avg = len(toks), sum(map(len, toks.values())) / len(toks)
    out = {}
    for i, ts in toks.items():
        s = 0.0
        for q in set(tokenize(query)):
            df = sum(q in t for t in toks.values())
            tf = ts.count(q)
            if tf:
                idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
                s += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(ts) / avg))
        if s:
            out[i] = s
    return out


@pytest.mark.parametrize("id_scale", [1, 10_000_019])  # compact rowids, then sparse ones
def test_bm25_vectorised_search_equals_the_formula(id_scale: int) -> None:
    rng = random.Random(3)
    words = [
        "kettle",
        "grinder",
        "refund",
        "parcel",
        "coffee",
        "water",
        "filter",
        "lid",
        "box",
        "steel",
        "delivery",
    ]
    docs = {i * id_scale: " ".join(rng.choices(words, k=rng.randint(1, 12))) for i in range(1, 300)}
    bm = BM25()
    bm.add(docs.items())
    # Changes after the first search must invalidate the packed postings.
    bm.search("kettle refund", 5)
    gone = [i * id_scale for i in range(1, 300, 7)]
    bm.remove(gone)
    for i in gone:
        docs.pop(i)
    docs[5 * id_scale] = "coffee coffee grinder"
    bm.add([(5 * id_scale, docs[5 * id_scale])])
    for query in ["kettle refund", "coffee", "steel lid box water", "nothing matches"]:
        ref = _bm25_reference(docs, query)
        got = bm.search(query, 10)
        want = sorted(ref.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want])
        some = [i for i, _ in want[:3]] + [next(iter(docs))]
        assert bm.score(query, some) == pytest.approx({i: ref.get(i, 0.0) for i in some})


def test_ef_search_follows_the_size_unless_fixed() -> None:
    import faiss

    from knowledge.index import auto_ef_search

    assert auto_ef_search(100_000) == 96
    assert auto_ef_search(300_000) > 96
    assert auto_ef_search(1_000_000) >= 512  # measured: recall@10 0.957 at 1M needs 512

    def beam(ix: VectorIndex) -> int:
        return faiss.downcast_index(ix._index.index).hnsw.efSearch

    auto = VectorIndex(32, "hnsw")
    auto.add(np.arange(50), _unit(50))
    assert auto.ef_search == beam(auto) == auto_ef_search(50)
    fixed = VectorIndex(32, "hnsw", ef_search=300)
    fixed.add(np.arange(50), _unit(50))
    assert fixed.ef_search == beam(fixed) == 300
    assert VectorIndex(32, "flat").ef_search is None
    with pytest.raises(StoreError, match="ef_search"):
        VectorIndex(32, "hnsw", ef_search=0)
