"""Index reads during ingestion (RELIABILITY B, issue 8 item 3): searches and answers from
other threads never fail or see a half-written document while files are being ingested."""

from __future__ import annotations

import threading
from pathlib import Path

from knowledge.base import KnowledgeBase
from tests.knowledge._kb_support import FakeEmbedder


def test_searches_during_ingestion_never_fail_or_see_partial_documents(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "refunds.md").write_text(
        "# Refunds\n\nRefunds reach your card within 5 business days of the return arriving.\n"
    )
    kb = KnowledgeBase.open(tmp_path / "store", FakeEmbedder(), index_kind="flat")
    try:
        kb.ingest([docs], roots=[docs])
        stop = threading.Event()
        errors: list[BaseException] = []
        seen: set[str] = set()

        def reader() -> None:
            while not stop.is_set():
                try:
                    for p in kb.search("refund delivery parcel", k=5):
                        seen.add(p.citation.title)
                        assert p.text.strip(), "empty passage"
                    kb.answer("how long do refunds take?")
                except BaseException as exc:  # collected, reported by the main thread
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        for i in range(25):
            (docs / f"parcel-{i}.md").write_text(
                f"# Parcel {i}\n\nParcel {i} ships from Fernhill. Delivery takes {i % 5 + 1} days. "
                f"Refund rules for parcel {i} follow the refund policy.\n"
            )
            kb.ingest([docs / f"parcel-{i}.md"], roots=[docs])
        stop.set()
        for t in threads:
            t.join(30)
        assert not errors, errors[0]
        assert len(seen) > 1  # the readers really saw documents land while they searched
        stats = kb.stats()
        assert stats["documents"] == 26 and stats["vectors"] == stats["chunks"] + stats["faq"]
    finally:
        kb.close()
