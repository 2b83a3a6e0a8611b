"""kill -9 during ingestion (RELIABILITY.md A2, D1; invariant I2 atomicity).

A driver process ingests a changing corpus (text, markdown, FAQ CSV, triples) with
``sync=True`` and is SIGKILLed at a random moment inside the ingest; the store is reopened
(which runs its repair) and every document must be wholly present (SQLite row, all its chunk
rows, exactly those vectors in FAISS with the stored values, its graph facts) or absent, with
no orphan temp files. At the end an uninterrupted re-ingest must reach the same state as a
clean ingest of the same corpus into a fresh store.

The driver embeds with a small deterministic hash embedder instead of MiniLM (seconds per
restart): the property under test is storage atomicity, not retrieval quality.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability._crash import IngestCrashHarness


def test_15_kill9_cycles_leave_documents_whole_or_absent(tmp_path: Path, seed: int) -> None:
    stats = IngestCrashHarness(tmp_path, seed).run(15)
    d = stats.as_dict()
    print(d)
    assert d["problems"] == [], d
    assert d["killed_mid_ingest"] >= 5, d  # the kills really landed inside ingests
    assert d["documents_checked"] > 0


@pytest.mark.slow
def test_150_kill9_cycles_ingest(tmp_path: Path, seed: int) -> None:
    stats = IngestCrashHarness(tmp_path, seed, files=40).run(150)
    d = stats.as_dict()
    print(d)
    assert d["problems"] == [], d
