"""Summaries: extractive TextRank by default, a local abstractive model when one is trained.

Extractive path (always available): the text is cut into units (sentences; for dialogue,
sentences of each speaker turn), each unit is embedded with MiniLM, and units are ranked by
PageRank (networkx) over their cosine-similarity graph, mixed with a position prior (the
opening usually states the point) and a length prior (one-word turns rarely carry content).
Units are then picked greedily with MMR so the summary does not repeat itself, within a length
budget, and printed in their original order.

Dialogue is written the way summaries of dialogue are written: greetings, fillers, laughter
and emoji are dropped, and first-person turns become third person ("Amanda: I baked cookies"
-> "Amanda baked cookies"); our own transcripts keep who said what ("You asked ...").

Long documents (a hundred pages) stay within a bounded time: past ``MAX_EMBED`` sentences a
cheap lexical centrality keeps the best candidates of each section, and the similarity graph
keeps only each sentence's strongest neighbours, so work grows linearly with the length.

What the skill summarizes, in order: text given in the message ("summarize: ..." or quoted),
the referent the router resolved ("summarize that" -> the last reply, "summarize our
conversation" -> this session), or an ingested document named in the message.
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skills.base import Reply, Services, Skill, SkillRequest, Slot, Source
from skills.languages import language_name
from skills.quality import degenerate

#: Languages the extractive summarizer handles (MiniLM and the dialogue rules are English).
SUPPORTED_LANGUAGES = ("en",)
#: Past this many sentences, a lexical pre-selection decides which ones get embedded.
MAX_EMBED = 300
#: Neighbours each sentence keeps in the similarity graph of a long text.
GRAPH_NEIGHBOURS = 12

Progress = Callable[[int, int], None]  # (done, total) units embedded


# -- splitting ------------------------------------------------------------------------
_SENT_SPLIT = re.compile(r"(?<=[.!?…])[\"”’)\]]*\s+(?=[\"“‘(\[]?[A-Z0-9#])")
_DIALOGUE_SENT_SPLIT = re.compile(r"(?<=[.!?…])[\"”’)\]]*\s+(?=\S)")
_SPEAKER = re.compile(
    r"^\s*(?P<who>#[A-Za-z][\w ]{0,20}#|[A-Z][\w.'-]*(?: [A-Z][\w.'-]*){0,2}|user|assistant|agent)"
    r"\s*:\s*(?P<body>.*)$",
    re.I,
)
_MD_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_MD_EMPHASIS = re.compile(r"(\*\*|__|\*|`)")
_OWN_SPEAKERS = {"user", "assistant", "agent"}


@dataclass
class Unit:
    """One sentence of the input; ``turn`` is its speaker turn (dialogue) or paragraph."""

    text: str
    position: int
    speaker: str | None = None
    turn: int = 0


@dataclass
class Parsed:
    units: list[Unit]
    dialogue: bool = False
    speakers: list[str] = field(default_factory=list)
    words: int = 0


def _plain(text: str) -> str:
    """Markdown emphasis and link syntax are not part of a sentence a summary should quote."""
    return _MD_EMPHASIS.sub("", _MD_LINK.sub(r"\1", text))


def _sentences(text: str, pattern: re.Pattern[str] = _SENT_SPLIT) -> list[str]:
    out = []
    for s in pattern.split(_plain(text).strip()):
        s = s.strip()
        if len(s) >= 2 and re.search(r"\w", s):
            out.append(s)
    return out


def parse(text: str) -> Parsed:
    """Sentences, or dialogue turns when most lines look like ``Speaker: text``."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [ln for ln in text.split("\n") if ln.strip()]
    matches = [_SPEAKER.match(ln) for ln in lines]
    names = [m.group("who").lower() for m in matches if m]
    # a dialogue: most lines have a speaker, and speakers come back (a "Key: value" list does not)
    if len(names) >= max(2, math.ceil(0.6 * len(lines))) and len(set(names)) <= max(
        3, 0.7 * len(names)
    ):
        units: list[Unit] = []
        speakers: list[str] = []
        speaker: str | None = None
        turn = -1
        for ln, m in zip(lines, matches, strict=True):
            if m:
                speaker, body = m.group("who").strip(), m.group("body")
                if speaker.lower() in _OWN_SPEAKERS:
                    speaker = speaker.capitalize()
                if speaker not in speakers:
                    speakers.append(speaker)
                turn += 1
            else:
                body = ln  # a line continuing the previous turn
                turn = max(turn, 0)
            for s in _sentences(body, _DIALOGUE_SENT_SPLIT):
                units.append(Unit(s, len(units), speaker, turn))
        return Parsed(units, True, speakers, len(text.split()))
    units = []
    for p, para in enumerate(re.split(r"\n\s*\n", text)):
        # Markdown headings and table rows are not sentences a summary can quote
        para = re.sub(r"^\s*(?:#+\s.*|\|.*)$", "", para, flags=re.M)
        for s in _sentences(" ".join(para.split())):
            units.append(Unit(s, len(units), None, p))
    return Parsed(units, False, [], len(text.split()))


def split_units(text: str) -> list[Unit]:
    return parse(text).units


# -- dialogue clean-up and third person -----------------------------------------------------
_EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\ufe0f\u200d\u2190-\u21ff]+")
_EMOTICON = re.compile(
    r"(?<![\w])(?:[:;=8][-'^o]?[)(\]\[dDpPoO/\\|*3]+|<3+|\^_?\^|[xX][dD]+)(?![\w])"
)
_TAG = re.compile(r"<[a-z_]{1,20}>", re.I)  # <file_photo>, <link> placeholders in chat exports
_LAUGH = re.compile(
    r"\b(?:a?(?:ha){2,}h?|(?:he){2,}|(?:hi){3,}|lo+l+|lmf?ao+|rofl|xd+)\b[!.]*", re.I
)
_FILLER = (
    r"(?:oh+|ah+|uh+|um+|hmm+|ugh|wow|ok(?:ay)?|k+|yeah|yea|yep|yup|yes|no|nope|hi+|hey+|hello|"
    r"well|so|sure|right|cool|great|thanks|thank you|thx|ty|alright|all right|omg|dear|hm+|"
    r"aw+|ooh+|haha|lol|please|sorry|good|nice|fine|anyway|yay|damn|excellent|really|indeed)"
)
_LEAD_FILLER = re.compile(rf"^(?:{_FILLER})\b[\s,.!?…~-]*", re.I)
_SPACED_APOS = re.compile(r"(\w) ?(['’]) ?(\w)")


def clean_turn(text: str) -> str:
    """Drop what a summary never keeps: emoji, emoticons, laughter, leading fillers."""
    text = _SPACED_APOS.sub(lambda m: m.group(1) + "'" + m.group(3).lower(), text)
    text = _TAG.sub(" ", text)
    text = _EMOJI.sub(" ", text)
    text = _EMOTICON.sub(" ", text)
    text = _LAUGH.sub(" ", text)
    text = " ".join(text.split())
    for _ in range(4):
        new = _LEAD_FILLER.sub("", text)
        if new == text:
            break
        text = new
    text = text.lstrip(",.;:!?-–— ")
    text = re.sub(r"([!?.])\1+", r"\1", text)
    return text[:1].upper() + text[1:] if text else ""


def _possessive(name: str) -> str:
    return name + ("'" if name.endswith("s") else "'s")


def third_person(text: str, speaker: str, other: str | None) -> str:
    """Rewrite a turn as reported speech: "I'll bring it" said by Amanda -> "Amanda will bring it"."""
    s = speaker

    def sub(pattern: str, repl: str, t: str) -> str:
        return re.sub(pattern, lambda _m: repl, t, flags=re.I)

    t = text
    t = sub(r"\bI(?:'m| am)\b", f"{s} is", t)
    t = sub(r"\bI(?:'ve| have)\b", f"{s} has", t)
    t = sub(r"\bI(?:'ll| will)\b", f"{s} will", t)
    t = sub(r"\bI'd\b", f"{s} would", t)
    t = sub(r"\bI (?:don't|do not)\b", f"{s} doesn't", t)
    t = sub(r"\bI was\b", f"{s} was", t)
    t = re.sub(r"(?<![\w'])[Ii](?![\w'])", s, t)
    t = sub(r"\b(?:me|myself)\b", s, t)
    t = sub(r"\b(?:my|mine)\b", _possessive(s), t)
    if other:
        t = sub(r"\byou(?:'re| are)\b", f"{other} is", t)
        t = sub(r"\byou(?:'ve| have)\b", f"{other} has", t)
        t = sub(r"\byou'll\b", f"{other} will", t)
        t = sub(r"\byou'd\b", f"{other} would", t)
        t = sub(r"\b(?:you|yourself)\b", other, t)
        t = sub(r"\byours?\b", _possessive(other), t)
        t = sub(r"\bwe(?:'re| are)\b", f"{s} and {other} are", t)
        t = sub(r"\bwe(?:'ll| will)\b", f"{s} and {other} will", t)
        t = sub(r"\bwe(?:'ve| have)\b", f"{s} and {other} have", t)
        t = sub(r"\bwe\b", f"{s} and {other}", t)
        t = re.sub(r"\bus\b", f"{s} and {other}", t)  # case-sensitive: not "US"
    return t


def _content_words(text: str) -> int:
    return len(re.findall(r"[^\W\d_]{2,}|\d+", text))


# -- length ---------------------------------------------------------------------------
_RATIO_WORDS = {
    "half": 0.5,
    "a half": 0.5,
    "a third": 1 / 3,
    "one third": 1 / 3,
    "a quarter": 0.25,
    "one quarter": 0.25,
    "a fourth": 0.25,
    "a fifth": 0.2,
    "one fifth": 0.2,
    "a tenth": 0.1,
    "one tenth": 0.1,
}
_RATIO_TEXT = re.compile(
    r"\b(?:(?P<pct>\d{1,2})\s?(?:%|percent\b)|(?:to |by |in |into )?(?P<frac>"
    + "|".join(sorted(map(re.escape, _RATIO_WORDS), key=len, reverse=True))
    + r")\b(?: (?:as long|the length|its length|of (?:the|its) length|the size))?)",
    re.I,
)


def ratio_from_text(text: str) -> str | None:
    """ "half as long", "to a third", "20%" -> ``ratio:0.5`` etc.; None when absent."""
    m = _RATIO_TEXT.search(text)
    if not m:
        return None
    value = int(m.group("pct")) / 100 if m.group("pct") else _RATIO_WORDS[m.group("frac").lower()]
    return f"ratio:{max(0.01, min(0.9, value)):.3f}"


@dataclass
class Length:
    """A resolved length: at most ``sentences`` units and/or ``words`` words."""

    sentences: int | None = None
    words: int | None = None
    exact_words: bool = False  # "in 50 words": a hard cap, the last sentence may be cut


def parse_length(spec: str | None, n_units: int, n_words: int = 0) -> tuple[int | None, int | None]:
    """``sentences:2`` / ``words:50`` / ``ratio:0.2`` -> (max sentences, max words).

    A ratio is a share of the words (``ratio:0.5`` is half as long). Without a spec the
    length adapts to the input: about 0.6·sqrt(n) sentences, 1 to 10.
    """
    length = resolve_length(spec, n_units, n_words)
    return length.sentences, length.words


def resolve_length(spec: str | None, n_units: int, n_words: int = 0) -> Length:
    default = Length(sentences=max(1, min(10, n_units, round(0.6 * math.sqrt(max(n_units, 1))))))
    if not spec:
        return default
    kind, _, value = spec.partition(":")
    try:
        if kind == "sentences":
            return Length(sentences=max(1, int(value)))
        if kind == "words":
            return Length(words=max(5, int(value)), exact_words=True)
        if kind == "ratio":
            share = float(value.rstrip("%")) / (100 if value.endswith("%") else 1)
            if not 0 < share <= 1:
                return default
            if n_words:
                return Length(words=max(5, round(share * n_words)))
            return Length(sentences=max(1, round(share * n_units)))
    except ValueError:
        pass
    return default


# -- ranking --------------------------------------------------------------------------
@dataclass
class Params:
    """Weights of the extractive ranker (tuned on SAMSum val and DialogSum dev, never test)."""

    position_weight: float = 0.5
    length_weight: float = 0.35
    mmr_lambda: float = 0.7
    min_words: int = 3  # units with fewer content words are never picked (unless nothing else)
    dialogue_words_base: float = 16.0  # default dialogue budget: base + slope * dialogue words
    dialogue_words_slope: float = 0.1
    rewrite: bool = True  # third person and filler removal for dialogue


def _pagerank(sim: np.ndarray) -> np.ndarray:
    import networkx as nx

    n = sim.shape[0]
    if n > 150:  # building a graph from a dense matrix visits all n² cells
        from scipy.sparse import csr_matrix

        g = nx.from_scipy_sparse_array(csr_matrix(sim))
    else:
        g = nx.from_numpy_array(sim)
    try:
        pr = nx.pagerank(g, weight="weight", max_iter=200, tol=1e-6)
        central = np.array([pr[i] for i in range(n)])
    except nx.PowerIterationFailedConvergence:
        central = sim.sum(1)
    return central / (central.max() or 1.0)


def _similarity(vectors: np.ndarray) -> np.ndarray:
    """Cosine similarities, clipped at 0; on long inputs only each row's top neighbours."""
    sim = np.clip(vectors @ vectors.T, 0.0, 1.0).astype(np.float64)
    np.fill_diagonal(sim, 0.0)
    n = sim.shape[0]
    if n > 2 * GRAPH_NEIGHBOURS + 50:
        k = GRAPH_NEIGHBOURS
        keep = np.zeros_like(sim, dtype=bool)
        idx = np.argpartition(-sim, k, axis=1)[:, :k]
        keep[np.arange(n)[:, None], idx] = True
        sim = np.where(keep | keep.T, sim, 0.0)
    return sim


def textrank(
    units: list[Unit],
    vectors: np.ndarray,
    max_sentences: int | None,
    max_words: int | None,
    position_weight: float = 0.3,
    mmr_lambda: float = 0.7,
    *,
    params: Params | None = None,
    texts: list[str] | None = None,
    exact_words: bool = False,
) -> list[int]:
    """Indices of the chosen units, in document order.

    ``texts`` are what will be printed for each unit (they decide the word count).
    """
    p = params or Params(position_weight=position_weight, mmr_lambda=mmr_lambda)
    n = len(units)
    if n == 0:
        return []
    texts = texts if texts is not None else [u.text for u in units]
    sim = _similarity(vectors)
    central = _pagerank(sim) if n > 1 else np.ones(1)
    turns = np.array([u.turn for u in units], dtype=np.float64)
    prior = 1.0 / np.sqrt(1.0 + turns)  # early turns/paragraphs tend to carry the point
    content = np.array([_content_words(t) for t in texts], dtype=np.float64)
    lengthp = np.minimum(1.0, content / 12.0)
    score = (
        (1 - p.position_weight) * central + p.position_weight * prior + p.length_weight * lengthp
    )
    eligible = content >= p.min_words
    if not eligible.any():
        eligible = content >= 1
    if not eligible.any():
        eligible[:] = True
    n_words = np.array([len(t.split()) for t in texts])
    dense_sim = np.clip(vectors @ vectors.T, 0.0, 1.0)
    chosen: list[int] = []
    total = 0
    limit = max_sentences if max_sentences is not None else n
    redundancy = np.zeros(n)
    avail = eligible.copy()
    while len(chosen) < min(limit, n) and avail.any():
        val = p.mmr_lambda * score - (1 - p.mmr_lambda) * redundancy
        val[~avail] = -np.inf
        best = int(np.argmax(val))
        w = int(n_words[best])
        if max_words is not None and chosen and total + w > max_words:
            if exact_words:
                break
            # a ratio or default word budget: skip this unit, a shorter one may still fit
            avail[best] = False
            continue
        chosen.append(best)
        avail[best] = False
        total += w
        redundancy = np.maximum(redundancy, dense_sim[best])
        if max_words is not None and total >= max_words:
            break
    return sorted(chosen)


# -- the whole extractive pipeline ----------------------------------------------------
@dataclass
class Summary:
    text: str
    units: list[Unit]  # the units picked, in order
    dialogue: bool = False
    total_units: int = 0


def _render(p: Parsed, chosen: list[Unit], rewrite: bool) -> list[str]:
    """The printed form of each picked unit (speaker turns in reported speech)."""
    out = []
    own = bool(p.speakers) and {s.lower() for s in p.speakers} <= _OWN_SPEAKERS
    for u in chosen:
        if not p.dialogue or u.speaker is None:
            out.append(u.text)
            continue
        if own:
            who = {"user": "You", "agent": "Our agent"}.get(u.speaker.lower(), "I")
            asked = who == "You" and u.text.rstrip().endswith("?")
            out.append(f"{who} {'asked' if asked else 'said'}: {u.text}")
            continue
        if not rewrite:
            out.append(f"{u.speaker}: {u.text}")
            continue
        others = [s for s in p.speakers if s != u.speaker]
        t = third_person(u.text, u.speaker, others[0] if len(others) == 1 else None)
        out.append(t if t.startswith(u.speaker) else f"{u.speaker}: {t}")
    return out


def _prefilter(units: list[Unit], keep: int) -> list[int]:
    """Indices of ``keep`` units chosen without embeddings: lexical centrality per section.

    Each unit is scored by the summed TF-IDF cosine to the other units of its section (one
    section per ~``keep``-th of the text), so every part of a long document keeps candidates.
    """
    from collections import Counter

    docs = [Counter(re.findall(r"[a-z]{3,}", u.text.lower())) for u in units]
    df: Counter[str] = Counter()
    for d in docs:
        df.update(d.keys())
    n = len(units)
    vocab = {w: i for i, w in enumerate(df)}
    idf = np.array([math.log(n / df[w]) + 1.0 for w in vocab])
    rows, cols, vals = [], [], []
    for r, d in enumerate(docs):
        for w, c in d.items():
            rows.append(r)
            cols.append(vocab[w])
            vals.append((1 + math.log(c)) * idf[vocab[w]])
    from scipy.sparse import csr_matrix

    x = csr_matrix((vals, (rows, cols)), shape=(n, len(vocab)))
    norms = np.sqrt(np.asarray(x.multiply(x).sum(1)).ravel()) + 1e-9
    x = csr_matrix(x.multiply(1 / norms[:, None]))
    sections = max(1, min(keep // 4, 40))
    bounds = np.linspace(0, n, sections + 1).astype(int)
    per = max(1, keep // sections)
    picked: list[int] = []
    for a, b in itertools.pairwise(bounds):
        if b <= a:
            continue
        block = x[a:b]
        centrality = np.asarray((block @ block.T).sum(1)).ravel()
        length = np.array([min(1.0, len(units[i].text.split()) / 15) for i in range(a, b)])
        order = np.argsort(-(centrality * length))[:per]
        picked.extend(int(a + i) for i in order)
    return sorted(picked)


def summarize_text(
    text: str,
    embedder: Any,
    length: str | None = None,
    *,
    params: Params | None = None,
    progress: Progress | None = None,
) -> tuple[str, list[Unit]]:
    """Extractive summary of ``text`` and the units it kept (empty text -> ``("", [])``)."""
    s = summarize(text, embedder, length, params=params, progress=progress)
    return s.text, s.units


def summarize(
    text: str,
    embedder: Any,
    length: str | None = None,
    *,
    params: Params | None = None,
    progress: Progress | None = None,
) -> Summary:
    """Extractive summary with its bookkeeping; see the module docstring for the method."""
    p = params or Params()
    parsed = parse(text)
    if parsed.dialogue and p.rewrite:
        kept: list[Unit] = []
        for u in parsed.units:
            c = clean_turn(u.text)
            if c and re.search(r"\w", c):
                kept.append(Unit(c, len(kept), u.speaker, u.turn))
        parsed.units = kept or parsed.units
    units = parsed.units
    if not units:
        return Summary("", [], parsed.dialogue)
    lengths = resolve_length(length, len(units), parsed.words)
    if not length and parsed.dialogue and not _is_own(parsed):
        budget = p.dialogue_words_base + p.dialogue_words_slope * parsed.words
        lengths = Length(sentences=None, words=max(8, round(budget)))
    candidates = list(range(len(units)))
    if len(units) > MAX_EMBED:
        candidates = _prefilter(units, MAX_EMBED)
    cand_units = [units[i] for i in candidates]
    texts = _render(parsed, cand_units, p.rewrite)
    if len(cand_units) == 1:
        picked = [0]
    else:
        vecs = _encode(embedder, [u.text for u in cand_units], progress)
        picked = textrank(
            cand_units,
            vecs,
            lengths.sentences,
            lengths.words,
            params=p,
            texts=texts,
            exact_words=lengths.exact_words,
        )
    out = " ".join(_end_sentence(texts[i]) for i in picked)
    if lengths.words is not None and lengths.exact_words:
        words = out.split()
        if len(words) > lengths.words:
            out = " ".join(words[: lengths.words]).rstrip(",;:") + "…"
    return Summary(out, [cand_units[i] for i in picked], parsed.dialogue, len(units))


def _is_own(p: Parsed) -> bool:
    return bool(p.speakers) and {s.lower() for s in p.speakers} <= _OWN_SPEAKERS


def _end_sentence(t: str) -> str:
    t = t.strip()
    return t if not t or t[-1] in ".!?…\"”'»)" else t + "."


def _encode(embedder: Any, texts: list[str], progress: Progress | None) -> np.ndarray:
    total = len(texts)
    if progress is None:
        return np.asarray(embedder.encode(texts))
    done = 0
    progress(0, total)
    parts = []
    step = 64
    for a in range(0, total, step):
        parts.append(np.asarray(embedder.encode(texts[a : a + step])))
        done += len(texts[a : a + step])
        progress(done, total)
    return np.concatenate(parts)


# -- language -------------------------------------------------------------------------
_SCRIPT_NAMES = {
    "CJK": "Chinese or Japanese",
    "HIRAGANA": "Japanese",
    "KATAKANA": "Japanese",
    "HANGUL": "Korean",
}


def unsupported_language(text: str) -> str | None:
    """The name of the language (or script) of ``text`` when we cannot summarize it, else None.

    Non-Latin scripts are recognised from Unicode character names; among Latin-script
    languages, the stop-word vote of the translate skill tells English from German, French,
    Spanish, Italian and Dutch. Texts too short to tell are let through.
    """
    from skills.translate import detect_language

    sample = text[:20_000]
    letters = [c for c in sample if c.isalpha()]
    if len(letters) < 20:
        return None
    scripts: dict[str, int] = {}
    for c in letters:
        name = unicodedata.name(c, "UNKNOWN").split(" ")[0]
        scripts[name] = scripts.get(name, 0) + 1
    script, count = max(scripts.items(), key=lambda kv: kv[1])
    if script != "LATIN" and count >= 0.5 * len(letters):
        return _SCRIPT_NAMES.get(script, script.title()) + " script"
    if len(sample.split()) < 6:
        return None
    lang = detect_language(sample)
    if lang is not None and lang not in SUPPORTED_LANGUAGES:
        return language_name(lang)
    return None


def supported_names() -> str:
    return ", ".join(language_name(c) for c in SUPPORTED_LANGUAGES)


# -- the skill ------------------------------------------------------------------------
_INLINE = re.compile(
    r"^\s*(?:please\s+|can you\s+|could you\s+)?(?:summari[sz]e|sum up|tl;?dr|recap|condense)"
    r"[^:\n]*:\s*(?P<body>.+)$",
    re.I | re.S,
)
_QUOTED = re.compile(r"[\"“«„](?P<body>[^\"”»“]{20,})[\"”»“]", re.S)
_SHORTER = re.compile(r"\b(shorter|shorten|more concise|less detail|trim it)\b", re.I)
_LONGER = re.compile(r"\b(longer|more detail(?:ed)?|expand it|in more depth)\b", re.I)
#: Inputs longer than this go to an abstractive model as an extract of about 400 words.
ABSTRACTIVE_MAX_WORDS = 1000
#: Source texts up to this size are remembered so "make it shorter" can re-summarize them.
MEMORY_MAX_CHARS = 20_000


@dataclass
class _Source:
    text: str | None
    what: str
    sources: list[Source]
    document: str | None = None


class SummarizeSkill(Skill):
    name = "summarize"
    description = "Summarizes a text, the last answer, a document or this conversation."
    capability = "summarize a text, a document or our conversation"
    examples = [
        "summarize that",
        "give me a summary of the refund policy",
        "summarize our conversation",
        "tl;dr please",
        "can you sum up the shipping document in two sentences",
        "summarize this text: the meeting covered budgets and hiring",
        "make it shorter",
        "recap what we talked about",
        # a user's own documents: named by title or file name, in either spelling
        "summarize the installation guide",
        "summarise the meeting notes",
        "summarize notes.md",
        "give me the gist of the user manual",
    ]
    slots = [Slot("length", "How long should the summary be?", required=False)]

    def handle(self, request: SkillRequest, services: Services) -> Iterator[str | Reply]:
        src = self._source(request, services)
        length = self._length(request, src)
        if src.text is None:
            yield from self._say(
                request,
                "What should I summarize? Paste the text after 'summarize:', name a document, "
                "or say 'summarize that' after an answer.",
                {"needs": "text"},
            )
            return
        if not src.text.strip():
            yield from self._say(
                request, f"There is nothing to summarize: the {src.what or 'text'} is empty."
            )
            return
        lang = unsupported_language(src.text)
        if lang is not None:
            yield from self._say(
                request,
                f"I can only summarize {supported_names()} text, and this looks like {lang}.",
                {"error": "unsupported language", "language": lang},
                confidence=0.0,
            )
            return
        if services.embedder is None and services.summarizer is None:
            yield from self._say(
                request, "Summaries need the embedding model, which is not loaded.", confidence=0.0
            )
            return
        text, data = self._summarize(src.text, length, services)
        if not text:
            msg = "I couldn't find any sentences to summarize in that text."
            if data.get("fallback"):
                msg = f"Sorry, I couldn't summarize that: {data['fallback']}."
            yield from self._say(request, msg, confidence=0.0 if data.get("fallback") else None)
            return
        data.update({"of": src.what, "length": length or "auto"})
        if src.document:
            data["document"] = src.document
        memory: dict[str, Any] = {"of": src.what, "sentences": data.get("sentences")}
        memory["words"] = len(text.split())
        if src.document:
            memory["document"] = src.document
        elif len(src.text) <= MEMORY_MAX_CHARS:
            memory["text"] = src.text
        data["memory"] = memory
        yield text
        yield self.reply(text, confidence=request.confidence, sources=src.sources, data=data)

    def _say(
        self,
        request: SkillRequest,
        msg: str,
        data: dict[str, Any] | None = None,
        confidence: float | None = None,
    ) -> Iterator[str | Reply]:
        yield msg
        conf = request.confidence if confidence is None else confidence
        yield self.reply(msg, confidence=conf, data=data or {})

    def _summarize(
        self, text: str, length: str | None, services: Services
    ) -> tuple[str, dict[str, Any]]:
        """The summary and its ``Reply.data``: abstractive when a model is lent, else extractive."""
        model = services.summarizer
        note = ""
        if model is not None:
            try:
                abs_text, abs_data = self._abstractive(model, text, length, services)
                if abs_text and not degenerate(abs_data.pop("summary")):
                    return abs_text, abs_data
                note = (
                    "the summarization model's output was unusable"
                    if abs_text
                    else "the summarization model returned nothing"
                )
            except Exception as exc:  # an optional model must never cost the user a summary
                note = f"the summarization model failed ({type(exc).__name__})"
            if services.embedder is None:
                return "", {"fallback": note}
        s = summarize(text, services.embedder, length)
        data: dict[str, Any] = {
            "method": "extractive",
            "sentences": len(s.units),
            "words": len(s.text.split()),
            "input_sentences": s.total_units,
        }
        out = s.text
        if note and out:
            data["fallback"] = note
            out += f"\n\n({note}, so these are the key sentences of the text)"
        return out, data

    def _abstractive(
        self, model: Any, text: str, length: str | None, services: Services
    ) -> tuple[str, dict[str, Any]]:
        n_words = len(text.split())
        lengths = resolve_length(length, max(1, len(parse(text).units)), n_words)
        max_words = lengths.words
        if max_words is None and length and lengths.sentences:
            max_words = 25 * lengths.sentences
        model_input = text
        if n_words > ABSTRACTIVE_MAX_WORDS and services.embedder is not None:
            # a seq2seq model reads a few hundred tokens: give it the key sentences
            model_input = summarize(text, services.embedder, "words:400").text
        out = str(model.summarize(model_input, max_words=max_words) or "").strip()
        if max_words is not None and len(out.split()) > max_words:
            out = " ".join(out.split()[:max_words]).rstrip(",;:") + "…"
        name = str(getattr(model, "name", "") or "local model")
        data = {
            "method": "abstractive",
            "model": name,
            "summary": out,
            "words": len(out.split()),
            "sentences": len(_sentences(out)),
        }
        return (f"{out}\n\n(abstractive summary by {name})" if out else ""), data

    def _length(self, request: SkillRequest, src: _Source) -> str | None:
        spec = request.slots.get("length")
        ratio = ratio_from_text(request.text)
        # "half as long": the router's slot rules read "long" as "sentences:6"; a share wins
        # over anything but an explicit count of sentences or words
        if ratio and not re.search(
            r"\b(sentences?|lines?|bullets?|points|words?)\b", request.text, re.I
        ):
            return ratio
        if spec or ratio:
            return spec or ratio
        mem = request.session.memory.get("summarize") or {}
        if src.what.startswith("again") and mem:
            n = int(mem.get("sentences") or 0)
            if _SHORTER.search(request.text):
                return (
                    f"sentences:{max(1, n - 1)}"
                    if n > 1
                    else f"words:{max(5, int(mem.get('words', 20)) // 2)}"
                )
            if _LONGER.search(request.text):
                return f"sentences:{max(2, n + 2)}"
        return None

    def _source(self, request: SkillRequest, services: Services) -> _Source:
        m = _INLINE.match(request.text) or _QUOTED.search(request.text)
        body = m.group("body") if m else ""
        if m and (len(body.split()) >= 3 or len(body.strip()) >= 15):  # CJK has no spaces
            return _Source(body, "text", [])
        kind = request.referent_kind
        session = request.session
        mem = session.memory.get("summarize") or {}
        if (
            mem
            and session.last_skill == "summarize"
            and (_SHORTER.search(request.text) or _LONGER.search(request.text))
        ):
            # "make it shorter" after a summary: summarize the same source again
            if mem.get("document") and services.knowledge is not None:
                found = services.knowledge.document_text(mem["document"])
                if found:
                    title, body = found
                    return _Source(body, f"again: document {title}", [_doc_source(title)], title)
            if mem.get("text"):
                return _Source(str(mem["text"]), f"again: {mem.get('of', 'text')}", [])
        if kind == "conversation":
            lines = []
            for role, t in session.history:
                who = {"user": "User", "agent": "Agent"}.get(role, "Assistant")
                lines.append(f"{who}: {' '.join(t.split())}")
            return _Source(
                "\n".join(lines) if lines else None,
                "conversation",
                [Source(kind="session", title=f"session {session.session_id}")],
            )
        doc_name = request.slots.get("document")
        if kind == "last_document" and not doc_name:
            doc_name = session.last_document
        if doc_name and services.knowledge is not None:
            found = services.knowledge.document_text(doc_name)
            if found:
                title, body = found
                return _Source(body, f"document {title}", [_doc_source(title)], title)
        if kind == "last_reply" and session.last_reply:
            return _Source(
                session.last_reply, "last reply", [Source(kind="session", title="previous reply")]
            )
        if kind == "last_user_text" and session.last_user_text:
            return _Source(session.last_user_text, "your last message", [])
        if (
            kind is None
            and session.last_reply
            and re.search(r"\b(that|it|this)\b", request.text, re.I)
        ):
            return _Source(
                session.last_reply, "last reply", [Source(kind="session", title="previous reply")]
            )
        return _Source(None, "", [])


def _doc_source(title: str) -> Source:
    return Source(kind="document", title=title, ref=title)
