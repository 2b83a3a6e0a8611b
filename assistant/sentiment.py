"""A lexicon-based sentiment scorer for customer messages (VADER-style, our own word list).

    from assistant.sentiment import score, label, is_negative

    score("Not happy at all, the kettle leaks!")    # about -0.7
    is_negative("How long does delivery take?")    # False

Why a lexicon and not a model: it needs no training data, runs in microseconds on every turn,
and its decisions can be read off the word list (``assistant/sentiment_lexicon.py``). The
dialogue manager uses :func:`is_negative` to hand a conversation to a person after repeated
negative messages; ``benchmarks/sentiment.py`` measures it against a majority-class baseline
and small trained classifiers on ``assistant/demo/eval/sentiment.tsv``.

Rules, after Hutto & Gilbert's VADER (ICWSM 2014), re-implemented here:

* word and phrase valences (-4..+4); phrases ("waste of money", "fed up") match first;
* negation ("not", "never", "n't", "no", "without", ...) up to three words back, inside the
  same clause, flips praise (x -0.74) but only softens a complaint (x -0.3);
* intensifiers ("very", "so", "absolutely") and dampeners ("slightly", "a bit") up to three
  words back; an ALL-CAPS sentiment word in a mixed-case message counts extra;
* "but"/"however": what comes before counts half, what follows 1.5x;
* "!" (up to 4) and "??" push the score further in its direction;
* emoticons and emoji carry valences;
* sarcasm, narrowly: a stand-alone cheer ("Great, ...", "Just great.", "Thanks a lot.") in
  a message whose other words are clearly negative counts as negative.

The sum is squashed to [-1, 1] with ``s / sqrt(s*s + 15)``.
"""

from __future__ import annotations

import math
import re
import unicodedata
from functools import lru_cache

from assistant.sentiment_lexicon import LEXICON

__all__ = ["NEGATIVE_THRESHOLD", "POSITIVE_THRESHOLD", "is_negative", "label", "score"]

NEGATIVE_THRESHOLD = -0.25
"""``score <= this`` is negative (chosen on the dev half of the eval set)."""
POSITIVE_THRESHOLD = 0.25
"""``score >= this`` is positive."""

_ALPHA = 15.0
_NEGATION_SCALAR = -0.74
_NEGATED_NEGATIVE = -0.3
_IDIOMS = frozenset({"believe", "wait"})
_BOOST = 0.293
_CAPS = 0.733
_MAX_CHARS = 5000  # longer messages are scored on their first 5,000 characters

_NEGATORS = frozenset(
    [
        "not",
        "no",
        "never",
        "none",
        "nothing",
        "neither",
        "nor",
        "without",
        "cannot",
        "hardly",
        "nowhere",
        "dont",
        "doesnt",
        "didnt",
        "isnt",
        "wasnt",
        "arent",
        "werent",
        "cant",
        "couldnt",
        "wont",
        "wouldnt",
        "shouldnt",
        "havent",
        "hasnt",
        "hadnt",
        "aint",
    ]
)
_BOOSTERS = {
    "very": 1, "really": 1, "so": 1, "extremely": 1, "absolutely": 1, "totally": 1,
    "incredibly": 1, "super": 1, "completely": 1, "utterly": 1, "highly": 1, "truly": 1,
    "most": 1, "such": 1, "too": 1, "seriously": 1, "insanely": 1, "hugely": 1, "deeply": 1,
    "particularly": 1, "especially": 1, "even": 0.5, "quite": 0.5, "pretty": 0.5,
    "slightly": -1, "somewhat": -1, "fairly": -0.5, "barely": -1, "marginally": -1,
    "kind of": -1, "kinda": -1, "sort of": -1, "a bit": -1, "a little": -1, "a tad": -1,
}  # fmt: skip
_CONTRAST = frozenset({"but", "however"})
_CLAUSE_END = frozenset(".,;:!?…—–-()")
_CHEERS = frozenset(
    [
        "great",
        "fantastic",
        "wonderful",
        "brilliant",
        "perfect",
        "lovely",
        "awesome",
        "thanks",
        "nice",
        "super",
        "excellent",
    ]
)

_TOKEN = re.compile(
    r">?[:;]['-]?[()dDpP/\\|]|\(:|<3"  # emoticons
    r"|[^\W\d_](?:[\w'’]*\w)?|\d+(?:[.,]\d+)?"  # words, numbers
    r"|[^\w\s]",  # punctuation, emoji (one code point each)
)


@lru_cache(maxsize=1)
def _lexicon() -> tuple[dict[str, float], dict[tuple[str, ...], float], int]:
    words: dict[str, float] = {}
    phrases: dict[tuple[str, ...], float] = {}
    for raw in LEXICON.splitlines():
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        entry, value = line.rsplit(None, 1)
        toks = tuple(t.lower() for t in _TOKEN.findall(entry))
        if len(toks) == 1:
            words[toks[0]] = float(value)
        else:
            phrases[toks] = float(value)
    longest = max((len(p) for p in phrases), default=1)
    return words, phrases, longest


_BOOST_PHRASES = {tuple(k.split()): v for k, v in _BOOSTERS.items() if " " in k}


def _tokens(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text[:_MAX_CHARS]).replace("’", "'").replace("\ufe0f", "")
    return _TOKEN.findall(text)


def _norm(tok: str) -> str:
    return tok.lower().replace("'", "")


def _is_negator(tok: str) -> bool:
    low = tok.lower()
    return _norm(tok) in _NEGATORS or low.endswith("n't")


def score(text: str) -> float:
    """Sentiment of ``text`` in [-1, 1]: below 0 negative, above 0 positive, 0 neutral/unknown."""
    if not isinstance(text, str):
        raise TypeError(f"score() needs a str, got {type(text).__name__}")
    words, phrases, longest = _lexicon()
    toks = _tokens(text)
    if not toks:
        return 0.0
    letters = [t for t in toks if t[0].isalpha() and len(t) > 1]
    shouting = bool(letters) and sum(t.isupper() for t in letters) / len(letters) > 0.5

    # 1. items: (position, length, valence); phrases first, longest match wins
    items: list[list[float]] = []
    low = [t.lower() for t in toks]
    i = 0
    while i < len(toks):
        for n in range(min(longest, len(toks) - i), 1, -1):
            v = phrases.get(tuple(low[i : i + n]))
            if v is not None:
                if v:
                    items.append([i, n, v])
                i += n
                break
        else:
            v = words.get(low[i])
            if v is None and low[i].endswith("s"):
                v = words.get(low[i][:-1])
            if v:
                items.append([i, 1, v])
            i += 1

    # 2. modifiers in the three words before each item, inside its clause
    for item in items:
        pos, _, v = int(item[0]), int(item[1]), item[2]
        sign = 1.0 if v > 0 else -1.0
        tok = toks[pos]
        if not shouting and tok.isupper() and len(tok) > 1 and tok[0].isalpha():
            v += sign * _CAPS
        negated = False
        for back, decay in ((1, 1.0), (2, 0.95), (3, 0.9)):
            j = pos - back
            if j < 0 or toks[j] in _CLAUSE_END:
                break
            b = _BOOSTERS.get(low[j])
            if j >= 1 and (low[j - 1], low[j]) in _BOOST_PHRASES:
                b = _BOOST_PHRASES[(low[j - 1], low[j])]
            if b is not None and " " not in low[j]:
                v += sign * _BOOST * b * decay
            # "can't believe", "can't wait" intensify rather than negate
            if _is_negator(toks[j]) and (j + 1 >= len(low) or low[j + 1] not in _IDIOMS):
                negated = True
        if negated:
            # negators flip praise but only soften a complaint: "not angry" is not praise
            # (Kiritchenko & Mohammad 2016: negated negative words are mostly neutral)
            v *= _NEGATION_SCALAR if v > 0 else _NEGATED_NEGATIVE
        item[2] = v

    # 3. sarcasm: a stand-alone cheer in an otherwise clearly negative message
    def standalone(pos: int, n: int) -> bool:
        before = pos == 0 or toks[pos - 1] in _CLAUSE_END or low[pos - 1] in {"oh", "just", "yeah"}
        end = pos + n
        if low[pos] == "thanks" and low[end : end + 2] == ["a", "lot"]:
            end += 2
        after = end >= len(toks) or toks[end] in _CLAUSE_END
        return before and after

    cheers = [it for it in items if it[2] > 0 and low[int(it[0])] in _CHEERS]
    cheers = [it for it in cheers if standalone(int(it[0]), int(it[1]))]
    if cheers:
        ids = {id(it) for it in cheers}
        rest = sum(it[2] for it in items if id(it) not in ids)
        if rest <= -1.5:
            for it in cheers:
                it[2] = -abs(it[2])

    # 4. contrast: "X but Y" -> X counts half, Y one and a half
    cut = max((k for k, t in enumerate(low) if t in _CONTRAST), default=-1)
    total = 0.0
    for item in items:
        weight = 1.0 if cut < 0 else 0.5 if item[0] < cut else 1.5
        total += item[2] * weight

    # 5. punctuation emphasis in the direction of the sum
    if total:
        bangs = min(toks.count("!"), 4)
        qs = toks.count("?")
        emph = bangs * 0.292 + (min(qs * 0.18, 0.96) if qs > 1 else 0.0)
        total += emph if total > 0 else -emph
    compound = total / math.sqrt(total * total + _ALPHA)
    return max(-1.0, min(1.0, round(compound, 4)))


def label(text: str) -> str:
    """``"negative"``, ``"neutral"`` or ``"positive"`` by the module thresholds."""
    s = score(text)
    if s <= NEGATIVE_THRESHOLD:
        return "negative"
    if s >= POSITIVE_THRESHOLD:
        return "positive"
    return "neutral"


def is_negative(text: str, threshold: float = NEGATIVE_THRESHOLD) -> bool:
    """True when the message reads as a complaint or frustration (``score <= threshold``)."""
    return score(text) <= threshold
