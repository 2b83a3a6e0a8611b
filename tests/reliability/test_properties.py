"""Property-based tests (hypothesis) for the parsers, the chunker and the session store
(RELIABILITY.md C1 light, C2, A5 light): arbitrary input never escapes our error types,
chunk offsets are exact, and the session store round-trips any encodable text."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from knowledge.documents import LoadedDocument, chunk_document, load_document
from knowledge.errors import IngestError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAMES = ["faq.csv", "faq.jsonl", "faq.json", "facts.tsv", "facts.triples.csv", "a.txt", "a.html"]


@SETTINGS
@given(data=st.binary(max_size=4096), name=st.sampled_from(NAMES))
def test_parsers_raise_only_ingest_errors_on_arbitrary_bytes(data: bytes, name: str) -> None:
    try:
        doc = load_document(Path(name), data)
    except IngestError as exc:
        assert "\n" not in str(exc)
        return
    for item in doc.faq:
        assert item.question.strip() and item.answer.strip()
    for t in doc.triples:
        assert len(t) == 3 and all(t)


CSV_CELL = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)


@SETTINGS
@given(rows=st.lists(st.tuples(CSV_CELL, CSV_CELL), max_size=10), name=st.sampled_from(NAMES[:5]))
def test_structured_text_never_escapes(rows: list[tuple[str, str]], name: str) -> None:
    import csv
    import io
    import json

    if name.endswith(".csv") and "triples" not in name:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["question", "answer"])
        w.writerows(rows)
        data = buf.getvalue().encode()
    elif name.endswith(".jsonl"):
        data = "\n".join(json.dumps({"question": q, "answer": a}) for q, a in rows).encode()
    elif name.endswith(".json"):
        data = json.dumps([{"q": q, "a": a} for q, a in rows]).encode()
    else:
        data = "\n".join("\t".join((q, "rel", a)) for q, a in rows).encode()
    try:
        load_document(Path(name), data)
    except IngestError as exc:
        assert "\n" not in str(exc)


TEXT = st.text(
    st.characters(blacklist_categories=["Cs"]) | st.sampled_from(list(".!?\n #-*1) ")),
    min_size=1,
    max_size=3000,
)


@SETTINGS
@given(text=TEXT, max_words=st.integers(1, 60), overlap=st.integers(0, 2))
def test_chunk_offsets_are_exact_and_cover_the_text(
    text: str, max_words: int, overlap: int
) -> None:
    doc = LoadedDocument(Path("a.txt"), "text", text=text, pages=[(0, 0, len(text))])
    chunks = chunk_document(doc, max_words=max_words, overlap=overlap)
    covered = [False] * len(text)
    for c in chunks:
        assert 0 <= c.start < c.end <= len(text)
        assert text[c.start : c.end] == c.text
        for i in range(c.start, c.end):
            covered[i] = True
    # every non-space character of the document is in some chunk
    assert all(covered[i] for i, ch in enumerate(text) if not ch.isspace())


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store for all examples (a module-scoped fixture, which hypothesis allows), kept
    under pytest's temporary root so it is cleaned up like every other test's files."""
    return tmp_path_factory.mktemp("prop-store")


@settings(max_examples=120, deadline=None)
@given(
    turns=st.lists(st.text(max_size=300), min_size=1, max_size=5),
    title=st.text(max_size=40),
)
def test_session_store_round_trips_any_text(store_dir: Path, turns: list[str], title: str) -> None:
    from assistant.errors import InputError
    from assistant.sessions import SessionStore

    store = SessionStore(store_dir / "s.db")
    try:
        sid = store.create(title="").id
        stored: list[tuple[str, str]] = []
        for t in turns:
            try:
                t.encode("utf-8")
                ok = True
            except UnicodeEncodeError:
                ok = False
            if ok:
                store.append(sid, t, t[::-1], data={"t": t})
                stored.append((t, t[::-1]))
            else:
                try:
                    store.append(sid, t, "x")
                except InputError as exc:
                    assert "\n" not in str(exc)
                else:
                    raise AssertionError("a lone surrogate was accepted")
        store.close()
        store = SessionStore(store_dir / "s.db")  # reopen: what persisted
        got = store.turns(sid)
        assert [(x.user_text, x.reply_text) for x in got] == stored
        assert [x.n for x in got] == list(range(1, len(stored) + 1))
        assert all(x.data == {"t": x.user_text} for x in got)
    finally:
        store.close()
