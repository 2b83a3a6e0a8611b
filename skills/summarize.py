"""Extractive summaries: TextRank over a sentence-embedding similarity graph.

Sentences are embedded with MiniLM, joined by their cosine similarity, ranked with PageRank
(networkx) plus a prior that favours early sentences, then picked greedily with MMR so the
summary does not repeat itself, and printed in their original order. Dialogue is summarized
turn by turn with the speaker kept ("Anna: ...").

What it summarizes, in order: text given in the message ("summarize: ..." or quoted), the
referent the router resolved ("summarize that" -> the last reply, "summarize our
conversation" -> this session), or an ingested document named in the message.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from skills.base import Reply, Services, Skill, SkillRequest, Slot, Source

_SENT_SPLIT = re.compile(r"(?<=[.!?…])[\"”’)\]]*\s+(?=[\"“‘(\[]?[A-Z0-9#])")
_SPEAKER = re.compile(r"^\s*(#?[A-Z][\w .'-]{0,30}#?|user|assistant|agent)\s*:\s*(.+)$", re.I)
MAX_SENTENCES = 3000


@dataclass
class Unit:
    text: str
    position: int
    speaker: str | None = None


def split_units(text: str) -> list[Unit]:
    """Sentences, or dialogue turns when most lines look like ``Speaker: text``."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    speaker_lines = [m for ln in lines if (m := _SPEAKER.match(ln))]
    units: list[Unit] = []
    if lines and len(speaker_lines) >= max(2, int(0.6 * len(lines))):
        for ln in lines:
            m = _SPEAKER.match(ln)
            speaker, body = (m.group(1).strip("# "), m.group(2)) if m else (None, ln)
            for s in _sentences(body):
                units.append(Unit(s, len(units), speaker))
    else:
        for para in re.split(r"\n\s*\n", text):
            para = re.sub(r"^#+\s.*$", "", para, flags=re.M)  # Markdown headings are not sentences
            for s in _sentences(" ".join(para.split())):
                units.append(Unit(s, len(units)))
    return units[:MAX_SENTENCES]


_MD_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_MD_EMPHASIS = re.compile(r"(\*\*|__|\*|`)")


def _plain(text: str) -> str:
    """Markdown emphasis and link syntax are not part of a sentence a summary should quote."""
    return _MD_EMPHASIS.sub("", _MD_LINK.sub(r"\1", text))


def _sentences(text: str) -> list[str]:
    text = _plain(text)
    out = []
    for s in _SENT_SPLIT.split(text.strip()):
        s = s.strip()
        if len(s) >= 3 and re.search(r"\w", s):
            out.append(s)
    return out


def parse_length(spec: str | None, n_units: int) -> tuple[int | None, int | None]:
    """``sentences:2`` / ``words:50`` / ``ratio:0.2`` -> (max sentences, max words)."""
    if not spec:
        return (min(3, n_units), None)
    kind, _, value = spec.partition(":")
    try:
        if kind == "sentences":
            return (max(1, int(value)), None)
        if kind == "words":
            return (None, max(5, int(value)))
        if kind == "ratio":
            return (max(1, round(float(value) * n_units)), None)
    except ValueError:
        pass
    return (min(3, n_units), None)


def textrank(
    units: list[Unit],
    vectors: np.ndarray,
    max_sentences: int | None,
    max_words: int | None,
    position_weight: float = 0.3,
    mmr_lambda: float = 0.7,
) -> list[int]:
    """Indices of the chosen units, in document order."""
    import networkx as nx

    n = len(units)
    if n == 0:
        return []
    sim = np.clip(vectors @ vectors.T, 0.0, 1.0)
    np.fill_diagonal(sim, 0.0)
    g = nx.from_numpy_array(sim)
    try:
        pr = nx.pagerank(g, weight="weight", max_iter=200, tol=1e-6)
        central = np.array([pr[i] for i in range(n)])
    except nx.PowerIterationFailedConvergence:
        central = sim.sum(1)
    central = central / (central.max() or 1.0)
    prior = 1.0 / np.sqrt(1.0 + np.arange(n))  # early sentences tend to carry the point
    score = (1 - position_weight) * central + position_weight * prior
    short = np.array([len(u.text.split()) < 4 for u in units])
    score[short] *= 0.3  # "Hi!", "OK." rarely summarize anything
    chosen: list[int] = []
    words = 0
    limit = max_sentences if max_sentences is not None else n
    while len(chosen) < min(limit, n):
        best, best_val = -1, -np.inf
        for i in range(n):
            if i in chosen:
                continue
            redundancy = max((sim[i, j] for j in chosen), default=0.0)
            val = mmr_lambda * score[i] - (1 - mmr_lambda) * redundancy
            if val > best_val:
                best, best_val = i, val
        if best < 0:
            break
        w = len(units[best].text.split())
        if max_words is not None and chosen and words + w > max_words:
            break
        chosen.append(best)
        words += w
        if max_words is not None and words >= max_words:
            break
    return sorted(chosen)


def summarize_text(
    text: str, embedder: object, length: str | None = None
) -> tuple[str, list[Unit]]:
    units = split_units(text)
    if not units:
        return "", []
    max_s, max_w = parse_length(length, len(units))
    if len(units) == 1:
        chosen = [0]
    else:
        vecs = embedder.encode([u.text for u in units])  # type: ignore[attr-defined]
        chosen = textrank(units, vecs, max_s, max_w)
    picked = [units[i] for i in chosen]
    parts = [f"{u.speaker}: {u.text}" if u.speaker else u.text for u in picked]
    summary = " ".join(parts)
    if max_w is not None:
        words = summary.split()
        if len(words) > max_w:
            summary = " ".join(words[:max_w]).rstrip(",;:") + "…"
    return summary, picked


_INLINE = re.compile(
    r"^\s*(?:please\s+)?(?:summari[sz]e|sum up|tl;?dr)[^:]*:\s*(?P<body>.+)$", re.I | re.S
)
_QUOTED = re.compile(r"[\"“«„](?P<body>[^\"”»“]{20,})[\"”»“]", re.S)


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
    ]
    slots = [Slot("length", "How long should the summary be?", required=False)]

    def handle(self, request: SkillRequest, services: Services) -> Iterator[str | Reply]:
        text, what, sources = self._source(request, services)
        if text is None:
            msg = (
                "What should I summarize? Paste the text after 'summarize:', name a document, "
                "or say 'summarize that' after an answer."
            )
            yield msg
            yield self.reply(msg, confidence=request.confidence, data={"needs": "text"})
            return
        if not text.strip():
            msg = "There is nothing to summarize: the text is empty."
            yield msg
            yield self.reply(msg, confidence=request.confidence)
            return
        if services.embedder is None:
            msg = "Summaries need the embedding model, which is not loaded."
            yield msg
            yield self.reply(msg, confidence=0.0)
            return
        summary, picked = summarize_text(text, services.embedder, request.slots.get("length"))
        if not summary:
            msg = "I couldn't find any sentences to summarize in that text."
            yield msg
            yield self.reply(msg, confidence=request.confidence)
            return
        yield summary
        data = {"method": "extractive", "of": what, "sentences": len(picked)}
        if what.startswith("document"):
            data["document"] = sources[0].title if sources else ""
        yield self.reply(summary, confidence=request.confidence, sources=sources, data=data)

    def _source(
        self, request: SkillRequest, services: Services
    ) -> tuple[str | None, str, list[Source]]:
        m = _INLINE.match(request.text) or _QUOTED.search(request.text)
        if m and len(m.group("body").split()) >= 3:
            return m.group("body"), "text", []
        kind = request.referent_kind
        session = request.session
        if kind == "conversation":
            lines = []
            for role, t in session.history:
                lines.append(f"{'User' if role == 'user' else 'Assistant'}: {t}")
            return (
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
                return body, f"document {title}", [Source(kind="document", title=title, ref=title)]
        if kind == "last_reply" and session.last_reply:
            return (
                session.last_reply,
                "last reply",
                [Source(kind="session", title="previous reply")],
            )
        if kind == "last_user_text" and session.last_user_text:
            return session.last_user_text, "your last message", []
        if (
            kind is None
            and session.last_reply
            and re.search(r"\b(that|it|this)\b", request.text, re.I)
        ):
            return (
                session.last_reply,
                "last reply",
                [Source(kind="session", title="previous reply")],
            )
        return None, "", []
