"""Scoring and answer selection shared by :class:`knowledge.base.KnowledgeBase`.

Dense cosine (MiniLM) is the main signal and keeps an absolute scale, so one threshold
means the same thing for every question. BM25 is added as a bounded bonus
``w * s / (s + c)``: it can lift a passage that shares rare exact terms with the question,
never make an unrelated one look strong. For FAQ items the question's similarity to the
FAQ *answer* is mixed in too (users paraphrase, answers often repeat the key terms).

Thresholds come from ``benchmarks/knowledge_faq.py`` (StackFAQ + 20 off-topic questions) and
the demo bot: the top-1 fused score of a correct StackFAQ match has its 5th percentile near
0.59, while off-topic questions ("what's the capital of Peru", "asdf qwerty") peak at 0.41
(95th percentile 0.31). At ``faq=0.62`` 91.8% of correct StackFAQ top-1
matches are accepted and no off-topic question; on the demo bot, FAQ questions that merely
share an entity with the user's question ("Who founded Juniper Home?" vs "What is Juniper
Circle?") score 0.55-0.60, so matches between ``faq_weak=0.55`` (97.6% of correct StackFAQ
matches) and 0.62 are used only when the graph and the passages have nothing. Passages need
less (0.42) because a passage is longer than a question and cosine runs lower.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from knowledge.documents import split_sentences


@dataclass(frozen=True)
class FusionWeights:
    """How dense, answer-side and lexical evidence combine (see the module docstring)."""

    answer: float = 0.3  # weight of cos(question, FAQ answer) relative to cos(question, FAQ q)
    bm25: float = 0.1  # maximum lexical bonus
    bm25_half: float = 8.0  # BM25 score at which the bonus is half of ``bm25``


@dataclass(frozen=True)
class Thresholds:
    faq: float = 0.62  # answer from the FAQ straight away
    faq_weak: float = 0.55  # ... or when neither the graph nor a passage has an answer
    passage: float = 0.42
    graph: float = 0.5
    sentence: float = 0.25


DEFAULT_WEIGHTS = FusionWeights()
DEFAULT_THRESHOLDS = Thresholds()


def lexical_bonus(bm25: float, w: FusionWeights) -> float:
    return w.bm25 * bm25 / (bm25 + w.bm25_half) if bm25 > 0 else 0.0


def fuse_faq(q_cos: float, a_cos: float | None, bm25: float, w: FusionWeights) -> float:
    """Score of a FAQ item: question similarity, plus answer similarity, plus BM25."""
    dense = q_cos if a_cos is None else (q_cos + w.answer * a_cos) / (1.0 + w.answer)
    # Never rank below the plain question match: a verbatim hit stays a verbatim hit.
    dense = max(dense, q_cos - 0.05)
    return float(dense + lexical_bonus(bm25, w))


def fuse_passage(cos: float, bm25: float, w: FusionWeights) -> float:
    return float(cos + lexical_bonus(bm25, w))


# -- pronouns and entities for multi-turn questions ---------------------------------------
_PRONOUN = re.compile(r"\b(it|its|it's|they|them|their|that|this|he|she|his|her|him)\b", re.I)
_QWORDS = {
    "what", "who", "where", "when", "why", "how", "which", "is", "are", "does", "do", "can",
    "could", "should", "would", "will", "tell", "please", "the", "a", "an", "i", "my", "and",
    "hi", "hello", "thanks", "ok", "okay", "also", "so",
}  # fmt: skip
_CAPS = re.compile(r"\b[A-Z][\w'’-]*(?:[ \t]+[A-Z0-9][\w'’-]*)*")
_SENTENCE_START = re.compile(r"(?:^|[.!?:#|\n*-])\s*$")


def has_pronoun(text: str) -> bool:
    return bool(_PRONOUN.search(text))


def guess_entities(text: str) -> list[str]:
    """Capitalised names in ``text`` ("Lumo Kettle", "Juniper Labs"), a graph-free fallback."""
    out: list[str] = []
    for m in _CAPS.finditer(text):
        words = m.group(0).split()
        while words and words[0].lower() in _QWORDS:
            words = words[1:]
        if len(words) == 1 and _SENTENCE_START.search(text, 0, m.start()):
            continue  # "Once", "Missing": capitalised only because a sentence starts there
        name = " ".join(words).strip(" '’-")
        ok = name and name.lower() not in _QWORDS and not _PRONOUN.fullmatch(name)
        if ok and name not in out:
            out.append(name)
    return out


# -- extractive answers --------------------------------------------------------------------
def best_sentences(
    question_vec: np.ndarray, text: str, encode, max_sentences: int = 2, question: str = ""
) -> tuple[int, int, float]:
    """Span ``(start, end)`` in ``text`` of the sentence(s) that best answer the question.

    Sentences are ranked by cosine with the question plus a small bonus for the share of
    the question's content words they contain (cosine alone prefers a sentence that talks
    *about* the product over the one that states its price). The best sentence, plus its
    neighbour when that scores nearly as well. Returns the span and the best score.
    """
    from knowledge.lexical import tokenize

    spans = split_sentences(text)
    # Headings and fragments name a topic; they do not answer anything.
    content = [(a, b) for a, b in spans if _is_content(text[a:b])]
    spans = content or spans
    if not spans:
        return 0, len(text), 0.0
    vecs = encode([text[a:b] for a, b in spans])
    scores = vecs @ question_vec
    q_terms = set(tokenize(question))
    if q_terms:
        overlap = [len(q_terms & set(tokenize(text[a:b]))) / len(q_terms) for a, b in spans]
        scores = scores + 0.15 * np.asarray(overlap, dtype=np.float32)
    if _WANTS_NUMBER.search(question):
        # "how much / how long / what time" is answered by a sentence that states a figure
        has_figure = [bool(_FIGURE.search(text[a:b])) for a, b in spans]
        scores = scores + 0.1 * np.asarray(has_figure, dtype=np.float32)
    i = int(np.argmax(scores))
    a, b = spans[i]
    if max_sentences > 1:
        near = [j for j in (i - 1, i + 1) if 0 <= j < len(spans)]
        near = [j for j in near if scores[j] >= scores[i] - 0.08]
        if near:
            j = max(near, key=lambda j: scores[j])
            a, b = min(a, spans[j][0]), max(b, spans[j][1])
    return a, b, float(scores[i])


_WANTS_NUMBER = re.compile(
    r"\b(how (much|many|long|big|heavy|often|old|far)|what time|when|price|cost|size|capacity)\b",
    re.I,
)
_FIGURE = re.compile(r"\d|\$|€|£")


def _is_content(sentence: str) -> bool:
    s = sentence.lstrip()
    if s.startswith("|"):
        # a table row states facts ("| Queen | 228 x 228 cm | $149 |"); a separator does not
        cells = [c.strip() for c in s.strip().strip("|").split("|")]
        return len([c for c in cells if c and not set(c) <= set("-: ")]) >= 2
    return not s.startswith(("#", "---")) and len(s.split()) >= 4
