"""Fused answers through the real MiniLM encoder, FAISS and SQLite on a small folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowledge.base import KnowledgeBase
from tests.knowledge._kb_support import make_corpus

FAQ = (
    "question,answer\n"
    "How do I track my order?,Use the tracking link in your shipping confirmation email.\n"
    'Can I pay with PayPal?,"Yes, we accept PayPal, Visa and Mastercard."\n'
    "What is your returns window?,You can return any item within 45 days of delivery.\n"
)


@pytest.fixture(scope="module")
def real_kb(embedder, tmp_path_factory: pytest.TempPathFactory):
    root = make_corpus(tmp_path_factory.mktemp("content"))
    (root / "faq.csv").write_text(FAQ)
    kb = KnowledgeBase.open(tmp_path_factory.mktemp("store"), embedder)
    report = kb.ingest([root])
    assert not report.errors
    yield kb
    kb.close()


def test_faq_paraphrase_is_answered_verbatim(real_kb: KnowledgeBase) -> None:
    a = real_kb.answer("how can I follow where my parcel is?")
    assert a.found and a.kind == "faq"
    assert a.text == "Use the tracking link in your shipping confirmation email."
    assert a.citations[0].title == "How do I track my order?"
    assert Path(a.citations[0].ref).name == "faq.csv"
    assert 0.5 <= a.confidence <= 1.0


def test_passage_answer_cites_file_and_span(real_kb: KnowledgeBase) -> None:
    a = real_kb.answer("How often should I descale the kettle?")
    assert a.found and a.kind == "passage", a
    cit = a.citations[0]
    assert cit.title == "kettle.md" and cit.span is not None
    text = Path(cit.ref).read_text()
    assert text[cit.span[0] : cit.span[1]] == a.text
    assert "every month" in a.text


@pytest.mark.parametrize(
    "q", ["what's the capital of Peru", "asdf qwerty", "who won the 1998 world cup"]
)
def test_unrelated_questions_are_not_found(real_kb: KnowledgeBase, q: str) -> None:
    a = real_kb.answer(q)
    assert not a.found and a.kind == "none" and a.citations == []


def test_follow_up_resolves_pronoun(real_kb: KnowledgeBase) -> None:
    first = real_kb.answer("Who makes the Lumo Kettle?")
    assert first.found
    ents = first.data["entities"]
    assert any("Lumo Kettle" in e or "Juniper Labs" in e for e in ents), ents
    follow = real_kb.answer("how long is its warranty?", context={"entities": ["Lumo Kettle"]})
    assert follow.data["query"].startswith("Lumo Kettle")
    assert follow.found and "two-year" in follow.text, follow


def test_search_ranks_relevant_passage_first(real_kb: KnowledgeBase) -> None:
    hits = real_kb.search("which company manufactures the kettle", k=3)
    assert hits[0].citation.title in {"kettle.md", "facts.tsv"}
    assert hits[0].score >= hits[-1].score
