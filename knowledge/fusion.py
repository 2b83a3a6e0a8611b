"""Scoring and answer selection shared by :class:`knowledge.base.KnowledgeBase`.

Dense cosine (MiniLM) is the main signal and keeps an absolute scale, so one threshold
means the same thing for every question. BM25 is added as a bounded bonus
``w * s / (s + c)``: it can lift a passage that shares rare exact terms with the question,
never make an unrelated one look strong. For FAQ items the question's similarity to the
FAQ *answer* is mixed in too (users paraphrase, answers often repeat the key terms).

Thresholds come from ``benchmarks/knowledge_faq.py`` (StackFAQ + 20 off-topic questions) and
the demo bot: the top-1 fused score of a correct StackFAQ match has its 5th percentile near
0.61, while off-topic questions ("what's the capital of Peru", "asdf qwerty") peak at 0.42
(95th percentile 0.33). At ``faq=0.62`` 94.3% of correct StackFAQ top-1
matches are accepted and no off-topic question; on the demo bot, FAQ questions that merely
share an entity with the user's question ("Who founded Juniper Home?" vs "What is Juniper
Circle?") score 0.55-0.60, so matches between ``faq_weak=0.55`` (98.3% of correct StackFAQ
matches) and 0.62 are used only when the graph and the passages have nothing. Passages need
less (0.42) because a passage is longer than a question and cosine runs lower.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from knowledge.documents import split_sentences
from knowledge.graph import relation_key, relation_phrase
from knowledge.lexical import tokenize


@dataclass(frozen=True)
class FusionWeights:
    """How dense, answer-side and lexical evidence combine (see the module docstring)."""

    answer: float = 0.3  # weight of cos(question, FAQ answer) relative to cos(question, FAQ q)
    bm25: float = 0.1  # maximum lexical bonus of a passage
    bm25_half: float = 8.0  # BM25 score at which the bonus is half of ``bm25``
    # A FAQ question is a few words, so sharing its rare terms says more than sharing a
    # passage's: chosen on StackFAQ's dev half (benchmarks/knowledge_faq.py, BENCHMARKS.md).
    faq_bm25: float = 0.3
    faq_bm25_half: float = 32.0


@dataclass(frozen=True)
class Thresholds:
    faq: float = 0.62  # answer from the FAQ straight away
    faq_weak: float = 0.55  # ... or when neither the graph nor a passage has an answer
    passage: float = 0.42
    graph: float = 0.5
    sentence: float = 0.25


DEFAULT_WEIGHTS = FusionWeights()
DEFAULT_THRESHOLDS = Thresholds()


def lexical_bonus(bm25: float, weight: float, half: float) -> float:
    """``weight * s / (s + half)``: at most ``weight``, half of it at a BM25 score of ``half``."""
    return weight * bm25 / (bm25 + half) if bm25 > 0 else 0.0


def fuse_faq(q_cos: float, a_cos: float | None, bm25: float, w: FusionWeights) -> float:
    """Score of a FAQ item: question similarity, plus answer similarity, plus BM25."""
    dense = q_cos if a_cos is None else (q_cos + w.answer * a_cos) / (1.0 + w.answer)
    # Never rank below the plain question match: a verbatim hit stays a verbatim hit.
    dense = max(dense, q_cos - 0.05)
    return float(dense + lexical_bonus(bm25, w.faq_bm25, w.faq_bm25_half))


def fuse_passage(cos: float, bm25: float, w: FusionWeights) -> float:
    return float(cos + lexical_bonus(bm25, w.bm25, w.bm25_half))


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


# "and the warranty?", "what about the weight?", "how about the Brio grinder?"
_ELLIPSIS_LEAD = re.compile(r"\s*(?:(?:and\s+)?(?:what|how)\s+about|and)\b", re.I)
_NOT_TOPIC = _QWORDS | {"yes", "no", "yeah", "nope", "bye", "great", "cool", "thank", "you"}
_ASKS = {"what", "who", "where", "when", "why", "how", "which", "is", "are", "does", "do",
         "did", "can", "could", "should", "would", "will"}  # fmt: skip


def elliptical_rest(text: str) -> str | None:
    """What an elliptical follow-up asks about ("and the warranty?" -> "the warranty"), or
    None when ``text`` is a question of its own. Elliptical: a short phrase after "and" /
    "what about" / "how about", or a bare phrase of one or two words ("warranty?"). Such a
    question names no subject; the previous turn's subject is meant."""
    m = _ELLIPSIS_LEAD.match(text)
    rest = text[m.end() :] if m else text
    words = re.findall(r"[^\W_]+", rest.lower())
    if not [w for w in words if w not in _NOT_TOPIC]:
        return None
    if m is not None:
        # "and how long does delivery take?" is a new question, not an ellipsis
        return None if len(words) > 4 or words[0] in _ASKS else rest.strip(" ?.!,")
    return rest.strip(" ?.!,") if len(words) <= 2 else None


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
    question_vec: np.ndarray,
    text: str,
    encode,
    max_sentences: int = 2,
    question: str = "",
    subject: str = "",
) -> tuple[int, int, float]:
    """Span ``(start, end)`` in ``text`` of the sentence(s) that best answer the question.

    Sentences are ranked by cosine with the question plus a small bonus for the share of
    the question's content words they contain (cosine alone prefers a sentence that talks
    *about* the product over the one that states its price). The best sentence, plus its
    neighbour when that scores nearly as well. Returns the span and the best score.

    Spec lines ("**Price: $69** · **Warranty: 2 years**", "- Weight: 1.1 kg", "- Boils 1 litre
    in about 4 minutes") are answers of their own, one item each. ``subject`` names what the
    passage's document is about ("Lumo Kettle"): a spec line never repeats it, so it is read
    as "Lumo Kettle: Price: $69"; otherwise it could not compete with prose that names the
    product but states no figure. That reading is granted only to a line about what is asked:
    when the question names an attribute beyond its subject ("... take to *boil*?"), a line
    that does not mention it ("Keep-warm: 30 minutes") competes as itself (:func:`grounded`).
    """
    items = [(a, b, spec) for a, b, spec in _answer_items(text) if spec or _is_content(text[a:b])]
    # Headings and fragments name a topic; they do not answer anything.
    items = items or [(a, b, False) for a, b, _ in _answer_items(text)]
    if not items:
        return 0, len(text), 0.0
    spans = [(a, b) for a, b, _ in items]
    specs = [spec for _, _, spec in items]
    focus = focus_terms(question, subject)
    # the subject is what the whole document is about: each of its lines is read with it
    subject_terms = set(tokenize(subject)) if subject else set()
    texts, terms = [], []
    for a, b, spec in items:
        line = text[a:b]
        own = set(tokenize(line))
        if spec and subject and not (focus and not grounded(line, focus)):
            texts.append(f"{subject}: {_plain(line)}")
            terms.append(own | subject_terms)
        else:
            texts.append(line)
            terms.append(own if spec else own | subject_terms)
    vecs = encode(texts)
    scores = vecs @ question_vec
    q_terms = set(tokenize(question))
    if q_terms:
        overlap = [len(q_terms & t) / len(q_terms) for t in terms]
        scores = scores + 0.15 * np.asarray(overlap, dtype=np.float32)
    if _WANTS_NUMBER.search(question):
        # "how much / how long / what time" is answered by a sentence that states a figure
        has_figure = [bool(_FIGURE.search(text[a:b])) for a, b in spans]
        scores = scores + 0.1 * np.asarray(has_figure, dtype=np.float32)
    i = int(np.argmax(scores))
    a, b = spans[i]
    if max_sentences > 1 and not specs[i]:
        # a spec line is a whole answer; the lines beside it state other attributes
        near = [j for j in (i - 1, i + 1) if 0 <= j < len(spans) and not specs[j]]
        near = [j for j in near if scores[j] >= scores[i] - 0.08]
        if near:
            j = max(near, key=lambda j: scores[j])
            a, b = min(a, spans[j][0]), max(b, spans[j][1])
    return a, b, float(scores[i])


#: Words that say how something is asked, not what about: "how long does it *take*".
_ASKING = frozenset(tokenize(
    "much many long take get come need use should tell know want like please about any also "
    "just one kind sort"
))  # fmt: skip
_HOW = re.compile(r"\bhow\s+([^\W\d_]+)", re.I)


def focus_terms(question: str, subject: str = "") -> set[str]:
    """The question's own content terms: what it asks about beyond its subject and the way it
    asks ("how long does the Lumo kettle take to boil?" -> {"boil"}); empty for "how much is
    the Lumo kettle?", whose attribute lies in "how much" alone."""
    terms = set(tokenize(question)) - _ASKING
    terms -= set(tokenize(subject))
    terms -= set(tokenize(" ".join(_HOW.findall(question))))  # "how heavy", "how big"
    return terms


def grounded(line: str, focus: set[str]) -> bool:
    """Does a spec line speak of one of the question's ``focus`` terms, in its own words or in
    the usual phrasing of its key ("Price" -> "how much it costs")? A line that does not
    ("Keep-warm: 30 minutes" for "... take to boil?") answers a different question."""
    if not focus:
        return True
    words = set(tokenize(_plain(line)))
    key = spec_key(line)
    if key is not None:
        words |= set(tokenize(relation_phrase(relation_key(key))))
    return bool(focus & words)


def is_fact_item(text: str, start: int, end: int) -> bool:
    """Is ``text[start:end]`` a spec line of its own (see :func:`answer_spans`)?"""
    return any((a, b) == (start, end) and spec for a, b, spec in _answer_items(text))


_WANTS_NUMBER = re.compile(
    r"\b(how (much|many|long|big|heavy|often|old|far)|what time|when|price|cost|size|capacity)\b",
    re.I,
)
_FIGURE = re.compile(r"\d|\$|€|£")
# "Price: $69", "Grind settings: 40": a short key, a colon, a value (not "https://...", not "10:30")
_SPEC = re.compile(r"(?P<key>[^\W\d_][\w'’()/&+ -]{0,40}?)\s*:\s+(?P<value>\S.*)", re.S)
_BULLET = re.compile(r"\s*(?:[-*+•]|\d+[.)])\s+")
# a key is a noun phrase: "Her brief was simple: ..." is prose with a colon in it
_NOT_KEY_TEXT = (
    "is are was were be been has have had do does did i you he she it we they me my your her "
    "his its our their this that these those the a an if when so but not no there here"
)
_NOT_KEY = frozenset(_NOT_KEY_TEXT.split())
_ITEM_SEP = re.compile(r"\s[·•]\s")
_LINE_LEAD = re.compile(r"\s*(?:(?:[-*+•]|\d+[.)])\s+)?(?:\*\*|__)?")


def answer_spans(text: str) -> list[tuple[int, int]]:
    """Sentence spans of ``text`` as answers: each item of a ``·``-separated spec line
    ("**Price: $69** · **Warranty: 2 years**") on its own, without list bullets or the
    emphasis that wraps a whole item, so the answer reads "Price: $69"."""
    return [(a, b) for a, b, _ in _answer_items(text)]


def _answer_items(text: str) -> list[tuple[int, int, bool]]:
    """``(start, end, is_spec)``: spans as in :func:`answer_spans`; ``is_spec`` marks a
    ``Key: value`` line standing on its own (a list item, a line, an item of a ``·`` list),
    not a short sentence inside a paragraph ("Showroom phone: +1-555-0142." in prose), and a
    short list item that states a figure ("- Boils 1 litre in about 4 minutes")."""
    out: list[tuple[int, int, bool]] = []
    for a, b in split_sentences(text):
        parts = _items(text, a, b)
        own_line = len(parts) > 1 or _whole_line(text, a, b)
        bullet = len(parts) == 1 and _BULLET.match(text, text.rfind("\n", 0, a) + 1) is not None
        for a2, b2 in parts:
            a2, b2 = _trim(text, a2, b2)
            if b2 > a2:
                line = text[a2:b2]
                fact = spec_key(line) is not None or (
                    bullet and len(line.split()) <= _FACT_WORDS and bool(_FIGURE.search(line))
                )
                out.append((a2, b2, own_line and fact))
    return out


#: A list item this short that states a figure is a spec line without a key.
_FACT_WORDS = 12


def _whole_line(text: str, a: int, b: int) -> bool:
    line_start = text.rfind("\n", 0, a) + 1
    line_end = text.find("\n", b)
    line_end = len(text) if line_end < 0 else line_end
    lead = _LINE_LEAD.match(text, line_start, b)
    if lead is None or lead.end() < a or text[b:line_end].strip():
        return False
    # A passage may start inside a paragraph (chunks overlap by a sentence): there only a
    # bullet or emphasis shows that the first line is a line of its own.
    return line_start > 0 or bool(text[line_start : lead.end()].strip())


def _items(text: str, a: int, b: int) -> list[tuple[int, int]]:
    """Split ``text[a:b]`` at ``·``/``•`` separators that lie outside ``**bold**`` spans."""
    seps = [m for m in _ITEM_SEP.finditer(text, a, b) if text.count("**", a, m.start()) % 2 == 0]
    if not seps:
        return [(a, b)]
    out, s = [], a
    for m in seps:
        out.append((s, m.start()))
        s = m.end()
    out.append((s, b))
    return out


def _trim(text: str, a: int, b: int) -> tuple[int, int]:
    m = _BULLET.match(text, a, b)
    if m and m.end() < b:
        a = m.end()
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    for mark in ("**", "__"):
        inner = text[a + 2 : b - 2]
        if (
            b - a > 4
            and text.startswith(mark, a)
            and text.endswith(mark, a, b)
            and mark not in inner
        ):
            a, b = a + 2, b - 2
    return a, b


def _plain(sentence: str) -> str:
    """A sentence without list bullets and emphasis markers."""
    s = _BULLET.sub("", sentence, count=1) if _BULLET.match(sentence) else sentence
    return " ".join(s.replace("**", "").replace("__", "").split())


def spec_key(sentence: str) -> str | None:
    """The key of a ``Key: value`` line ("- Warranty: 2 years" -> "Warranty"), else None."""
    m = _SPEC.fullmatch(_plain(sentence))
    if m is None or m["value"].startswith("//"):
        return None
    words = m["key"].lower().split()
    if len(words) > 4 or any(w in _NOT_KEY for w in words):
        return None
    return m["key"].strip()


def _is_content(sentence: str) -> bool:
    s = sentence.lstrip()
    if s.startswith("|"):
        # a table row states facts ("| Queen | 228 x 228 cm | $149 |"); a separator does not
        cells = [c.strip() for c in s.strip().strip("|").split("|")]
        return len([c for c in cells if c and not set(c) <= set("-: ")]) >= 2
    return not s.startswith(("#", "---")) and len(s.split()) >= 4
