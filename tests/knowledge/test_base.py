"""KnowledgeBase with a fast fake encoder: ingestion, incremental updates, repair, answers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from knowledge.base import KnowledgeBase
from knowledge.errors import QueryError, StoreError
from tests.knowledge._kb_support import FakeEmbedder, make_corpus


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return make_corpus(tmp_path / "content")


@pytest.fixture
def kb(tmp_path: Path):
    kb = KnowledgeBase.open(tmp_path / "store", FakeEmbedder())
    yield kb
    kb.close()


def _consistent(kb: KnowledgeBase) -> None:
    """Index <-> SQLite invariant (RELIABILITY D1)."""
    assert kb.index.id_checksum() == kb.store.id_checksum()


def test_ingest_every_format(kb: KnowledgeBase, corpus: Path) -> None:
    seen = []
    report = kb.ingest([corpus], on_progress=lambda d, t, info: seen.append((d, t)))
    names = sorted(Path(p).name for p in report.added)
    assert names == ["about.html", "facts.tsv", "faq.csv", "kettle.md", "manual.pdf", "notes.txt"]
    assert report.errors == [] and report.chunks > 0
    assert seen[-1] == (6, 6)
    stats = kb.stats()
    assert stats["documents"] == 6 and stats["faq"] == 2 and stats["vectors"] == report.chunks
    _consistent(kb)
    docs = {d["name"]: d for d in kb.documents()}
    assert docs["manual.pdf"]["kind"] == "pdf" and docs["faq.csv"]["chunks"] == 2
    title, text = kb.document_text("kettle")
    assert title == "kettle.md" and "Descale the kettle" in text
    assert kb.document_text("zzzz qqqq") is None
    # a document is also found by the title its text opens with
    assert docs["kettle.md"]["title"] == "Lumo Kettle" and docs["notes.txt"]["title"] == ""
    assert kb.document_text("Lumo Kettle")[0] == "kettle.md"
    pdf_hits = [p for p in kb.search("warranty claim", k=10) if p.citation.title == "manual.pdf"]
    assert pdf_hits and pdf_hits[0].citation.page == 2


def test_incremental_reingest(kb: KnowledgeBase, corpus: Path) -> None:
    kb.ingest([corpus])
    emb: FakeEmbedder = kb.embedder
    before = emb.texts
    again = kb.ingest([corpus])
    assert len(again.unchanged) == 6 and not again.added and emb.texts == before
    notes = corpus / "docs" / "notes.txt"
    notes.write_text("Shipping costs nine dollars. Express delivery takes one day.\n")
    old_ids = set(kb.index.ids())
    changed = kb.ingest([corpus])
    assert [Path(p).name for p in changed.updated] == ["notes.txt"]
    assert any("nine dollars" in p.text for p in kb.search("shipping costs nine dollars", 3))
    assert all("fifty" not in p.text for p in kb.search("free over fifty dollars", 10))
    assert set(kb.index.ids()) != old_ids
    _consistent(kb)
    (corpus / "docs" / "about.html").unlink()
    no_sync = kb.ingest([corpus])
    assert no_sync.removed == [] and kb.stats()["documents"] == 6
    synced = kb.ingest([corpus], sync=True)
    assert [Path(p).name for p in synced.removed] == ["about.html"]
    assert kb.stats()["documents"] == 5
    assert kb.forget(corpus / "faq.csv") is True
    assert kb.forget(corpus / "faq.csv") is False
    assert kb.stats()["faq"] == 0
    _consistent(kb)


def test_bad_files_are_reported_and_the_rest_lands(kb: KnowledgeBase, tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    root.mkdir()
    (root / "good.md").write_text("Good content about kettles. It is fine.")
    (root / "binary.txt").write_bytes(b"\x00\x01\x02" * 100)
    (root / "empty.txt").write_text("")
    (root / "broken.csv").write_text("question,answer\nonly question,\n")
    (root / "big.txt").write_text("x " * 3000)
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (root / "escape.txt").symlink_to(outside)
    kb.max_bytes = 4000
    report = kb.ingest([root])
    assert [Path(p).name for p in report.added] == ["good.md"]
    reasons = {Path(p).name: msg for p, msg in report.errors}
    assert set(reasons) == {"binary.txt", "empty.txt", "broken.csv", "big.txt", "escape.txt"}
    assert all("\n" not in m for m in reasons.values())
    assert "too large" in reasons["big.txt"] and "outside" in reasons["escape.txt"]
    trav = kb.ingest([root / ".." / "secret.txt"], roots=[root])
    assert trav.added == [] and "outside" in trav.errors[0][1]


def test_graph_follows_documents(kb: KnowledgeBase, corpus: Path) -> None:
    if kb.graph is None:
        pytest.skip("knowledge.graph is not installed")
    kb.ingest([corpus / "facts.tsv"], roots=[corpus])
    assert kb.stats()["facts"] >= 1
    kb.forget(corpus / "facts.tsv")
    assert kb.stats()["facts"] == 0


@pytest.mark.parametrize("damage", ["delete", "truncate", "stale_tmp", "store_ahead", "garbage"])
def test_index_repaired_on_open(tmp_path: Path, corpus: Path, damage: str) -> None:
    store = tmp_path / "store"
    kb = KnowledgeBase.open(store, FakeEmbedder())
    kb.ingest([corpus])
    n = kb.index.ntotal
    kb.close()
    faiss_file = store / "vectors.faiss"
    if damage == "delete":
        faiss_file.unlink()
    elif damage == "truncate":
        faiss_file.write_bytes(faiss_file.read_bytes()[:100])
    elif damage == "garbage":
        faiss_file.write_bytes(os.urandom(4000))
    elif damage == "stale_tmp":
        (store / "vectors.faiss.tmp").write_bytes(b"half written")
    else:  # a document committed to SQLite, killed before the index was saved
        from knowledge.store import ChunkRow, Store

        s = Store(store / "knowledge.db")
        v = np.ones(384, np.float32) / np.sqrt(384)
        s.put_document(path="/x/late.txt", name="late.txt", kind="text", sha256="0", size=1,
                       text="late", graph_payload="", chunks=[ChunkRow("passage", "late", v)])  # fmt: skip
        s.close()
        n += 1
    kb = KnowledgeBase.open(store, FakeEmbedder())
    assert kb.index.ntotal == n
    _consistent(kb)
    assert (kb.rebuilt is None) == (damage == "stale_tmp")
    assert not (store / "vectors.faiss.tmp").exists()
    assert kb.search("kettle", 3)
    kb.close()


KILL_SCRIPT = """
import os, sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from knowledge.base import KnowledgeBase
from tests.knowledge._kb_support import FakeEmbedder
kb = KnowledgeBase.open(Path({store!r}), FakeEmbedder())
def cb(done, total, info):
    if done == {kill_at}:
        os._exit(9)
kb.ingest([Path({src!r})], on_progress=cb)
"""


def test_killed_mid_ingest_leaves_whole_documents(tmp_path: Path) -> None:
    src = tmp_path / "many"
    src.mkdir()
    for i in range(12):
        (src / f"doc{i:02d}.md").write_text(f"Document {i} talks about topic {i}. " * 30)
    store = tmp_path / "store"
    repo = str(Path(__file__).resolve().parents[2])
    code = KILL_SCRIPT.format(repo=repo, store=str(store), src=str(src), kill_at=5)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == 9, proc.stderr.decode()[-500:]
    kb = KnowledgeBase.open(store, FakeEmbedder())
    assert kb.rebuilt  # SQLite was ahead of the index file
    _consistent(kb)
    present = {d["name"]: d["chunks"] for d in kb.documents()}
    assert len(present) == 5 and all(c > 0 for c in present.values())
    report = kb.ingest([src])
    assert len(report.unchanged) == 5 and len(report.added) == 7
    _consistent(kb)
    kb.close()


def test_concurrent_searches_during_ingest(kb: KnowledgeBase, tmp_path: Path) -> None:
    src = tmp_path / "stream"
    src.mkdir()
    for i in range(40):
        (src / f"d{i:02d}.txt").write_text(f"Item {i} is a kettle of size {i}. It boils fast.")
    kb.ingest([src / "d00.txt"], roots=[src])
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                for p in kb.search("kettle boils", 5):
                    assert p.text and p.citation.ref.startswith(str(src))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    kb.ingest([src])
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert kb.stats()["documents"] == 40
    _consistent(kb)


def test_answers_with_fake_encoder(kb: KnowledgeBase, corpus: Path) -> None:
    kb.ingest([corpus])
    a = kb.answer("How do I reset my password?")
    assert a.found and a.kind == "faq" and a.text == "Open Settings and choose Reset password."
    assert a.citations[0].kind == "faq" and a.citations[0].ref.endswith("faq.csv")
    none = kb.answer("zebra quantum saxophone")
    assert not none.found and none.kind == "none" and none.citations == []
    with pytest.raises(QueryError, match="empty"):
        kb.answer("   ")
    with pytest.raises(QueryError, match="too long"):
        kb.search("x" * 10_000)


def test_pronoun_uses_context_entities(kb: KnowledgeBase, corpus: Path) -> None:
    kb.ingest([corpus])
    a = kb.answer("how do I descale it?", context={"entities": ["Lumo Kettle"]})
    assert a.data["query"].startswith("Lumo Kettle")
    assert "Lumo Kettle" in a.data["entities"]
    own = kb.answer("What does the Brio Grinder cost?", context={"entities": ["Lumo Kettle"]})
    assert own.data["query"] == "What does the Brio Grinder cost?"
    assert "Brio Grinder" in own.data["entities"]


def test_index_kind_override_and_auto_growth(tmp_path: Path, corpus: Path) -> None:
    with pytest.raises(StoreError, match="unknown index kind"):
        KnowledgeBase.open(tmp_path / "s0", FakeEmbedder(), index_kind="ivf")
    kb = KnowledgeBase.open(tmp_path / "s1", FakeEmbedder(), index_kind="hnsw")
    kb.ingest([corpus])
    assert kb.index.kind == "hnsw"
    kb.forget(corpus / "faq.csv")  # HNSW cannot delete: rebuilt at the checkpoint
    assert kb.index.kind == "hnsw" and not kb.index.needs_rebuild
    _consistent(kb)
    kb.close()
    kb = KnowledgeBase.open(tmp_path / "s1", FakeEmbedder(), index_kind="flat")
    assert kb.index.kind == "flat" and kb.rebuilt
    kb.close()
    kb = KnowledgeBase.open(tmp_path / "s2", FakeEmbedder(), hnsw_threshold=5)
    kb.ingest([corpus])
    assert kb.index.kind == "hnsw"
    _consistent(kb)
    kb.close()


def test_graph_journal_repairs_after_crash(tmp_path: Path, corpus: Path) -> None:
    kb = KnowledgeBase.open(tmp_path / "store", FakeEmbedder())
    if kb.graph is None:
        pytest.skip("knowledge.graph is not installed")
    kb.close()
    from knowledge.store import Store

    # Committed to SQLite, killed before graph.json was written: the journal row survives.
    s = Store(tmp_path / "store" / "knowledge.db")
    s.put_document(path="/x/kg.tsv", name="kg.tsv", kind="triples", sha256="1", size=1,
                   text="A r B", graph_payload='[["Alpha Corp", "owns", "Beta Ltd"]]', chunks=[])  # fmt: skip
    s.close()
    kb = KnowledgeBase.open(tmp_path / "store", FakeEmbedder())
    assert kb.stats()["facts"] == 1 and kb.store.pending_graph() == []
    kb.forget("/x/kg.tsv")
    kb.close()
    kb = KnowledgeBase.open(tmp_path / "store", FakeEmbedder())
    assert kb.stats()["facts"] == 0
    kb.close()


def test_graph_temp_file_of_a_killed_save_is_swept_on_open(tmp_path: Path, corpus: Path) -> None:
    # kill -9 between atomic_write's temp file and its rename (found by the kill-9 harness,
    # tests/reliability/test_crash_ingest.py, seed 1500742966)
    kb = KnowledgeBase.open(tmp_path / "store", FakeEmbedder())
    kb.ingest([corpus])
    facts = kb.stats()["facts"]
    kb.close()
    litter = tmp_path / "store" / ".graph.json.xm8obss_.tmp"
    litter.write_text('{"half": ')
    kb = KnowledgeBase.open(tmp_path / "store", FakeEmbedder())
    assert not litter.exists() and kb.stats()["facts"] == facts
    assert not [f for f in (tmp_path / "store").iterdir() if f.name.endswith(".tmp")]
    kb.close()
