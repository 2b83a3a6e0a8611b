"""Index reads during ingestion (RELIABILITY B, issue 8 item 3): searches and answers from
other threads never fail or see a half-written document while files are being ingested."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from knowledge.base import KnowledgeBase
from tests.knowledge._kb_support import FakeEmbedder
from tests.reliability.conftest import REPO


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


_OPEN_AT = """
import sys, time
from pathlib import Path
from assistant.sessions import SessionStore
start = float(sys.argv[2])
while time.time() < start:
    pass
SessionStore(Path(sys.argv[1])).close()
print("opened")
"""


@pytest.mark.parametrize("round_", range(3))
def test_processes_opening_a_new_session_database_at_once_all_succeed(tmp_path, round_):
    """``llmos serve --workers 4`` on a fresh project: every worker creates the database at the
    same moment and each asks for WAL mode, which SQLite refuses at once ("database is locked")
    to a loser instead of waiting. Each must open it anyway."""
    db = tmp_path / "sessions.db"
    start = time.time() + 3.0  # the interpreters start first, then all open together
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_AT, str(db), repr(start)],
            cwd=str(REPO),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-500:] for _, err in results]
    assert all(out.strip() == "opened" for out, _ in results)
