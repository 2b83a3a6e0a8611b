"""Fact extraction from prose with patterns, no language model.

What it finds:

- Relations stated with common copular/verb patterns, one per clause: "X is made by Y",
  "X is manufactured/produced by Y", "X costs Y", "X is priced at Y", "the price of X is Y",
  "X is located/based/headquartered in Y", "X has a warranty of Y", "X comes with a Y
  warranty", "the warranty of X is Y", "X was founded in/by Y", "X is owned by Y", "X is part
  of Y", "X works for Y", "X supports Y", "X is compatible with Y", "X weighs Y", "X is a Y",
  and aliases ("X, also known as Y", "X (aka Y)").
- Entities: capitalised spans ("Juniper Labs", "Lumo Kettle 2"), the subject/object noun
  phrases of the patterns above, and the subject of FAQ questions ("Q: How do I descale the
  Lumo Kettle?").
- Co-occurrence: named entities in one sentence with no pattern between them are joined by
  a ``mentioned_with`` fact (at most 6 entities per sentence).

What it cannot find: relations expressed any other way (passive voice beyond the listed
verbs, nominalisations, negation — "X is not made by Y" is skipped, not inverted), pronoun
or "it" coreference across sentences, lower-case entities outside a pattern, and facts split
over several sentences. Tables and lists are read as plain sentences.
"""

from __future__ import annotations

import re

MAX_TEXT_CHARS = 2_000_000
_MAX_NP_WORDS = 6

# (compiled pattern, relation). Groups "s" and "o" hold the raw subject / object text.
_V = r"(?:is|are|was|were)"
_PATTERNS: list[tuple[str, str]] = [
    (r"(?P<s>.+?),?\s+(?:also\s+known\s+as|also\s+called|aka)\s+(?P<o>.+)", "alias"),
    (rf"(?P<s>.+?)\s+{_V}\s+(?:made|manufactured|produced|built)\s+by\s+(?P<o>.+)", "made_by"),
    (r"(?P<s>.+?)\s+(?:costs?|sells?\s+for)\s+(?P<o>.+)", "costs"),
    (rf"(?P<s>.+?)\s+{_V}\s+priced\s+at\s+(?P<o>.+)", "costs"),
    (r"the\s+price\s+of\s+(?P<s>.+?)\s+is\s+(?P<o>.+)", "costs"),
    (
        rf"(?P<s>.+?)\s+{_V}\s+(?:located|based|headquartered|situated)\s+in\s+(?P<o>.+)",
        "located_in",
    ),
    (
        r"(?P<s>.+?)\s+(?:has|have|carries|offers)\s+an?\s+(?:warranty|guarantee)\s+of\s+(?P<o>.+)",
        "warranty",
    ),
    (
        r"(?P<s>.+?)\s+(?:comes?|is\s+sold)\s+with\s+an?\s+(?P<o>.+?)\s+(?:warranty|guarantee)",
        "warranty",
    ),
    (
        r"the\s+(?:warranty|guarantee)(?:\s+period)?\s+(?:of|for|on)\s+(?P<s>.+?)\s+is\s+(?P<o>.+)",
        "warranty",
    ),
    (rf"(?P<s>.+?)\s+{_V}\s+founded\s+in\s+(?P<o>.+)", "founded_in"),
    (rf"(?P<s>.+?)\s+{_V}\s+founded\s+by\s+(?P<o>.+)", "founded_by"),
    (rf"(?P<s>.+?)\s+{_V}\s+owned\s+by\s+(?P<o>.+)", "owned_by"),
    (rf"(?P<s>.+?)\s+{_V}\s+(?:a\s+)?part\s+of\s+(?P<o>.+)", "part_of"),
    (r"(?P<s>.+?)\s+works?\s+(?:for|at)\s+(?P<o>.+)", "works_for"),
    (rf"(?P<s>.+?)\s+{_V}\s+compatible\s+with\s+(?P<o>.+)", "compatible_with"),
    (r"(?P<s>.+?)\s+supports?\s+(?P<o>.+)", "supports"),
    (r"(?P<s>.+?)\s+weighs?\s+(?P<o>.+)", "weighs"),
    (rf"(?P<s>.+?)\s+{_V}\s+(?:a|an)\s+(?P<o>.+)", "is_a"),
]
_COMPILED = [(re.compile(p, re.IGNORECASE), r) for p, r in _PATTERNS]
_PAREN_ALIAS = re.compile(
    r"(?P<s>[^()]+?)\s*\((?:aka|a\.k\.a\.|also\s+known\s+as|also\s+called)\s+(?P<o>[^)]+)\)",
    re.IGNORECASE,
)
_NEG = re.compile(r"\b(?:not|never|no longer|n't)\b", re.IGNORECASE)
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])|\n{1,}")
_CAP_SPAN = re.compile(r"\b[A-Z][\w'&-]*(?:\s+(?:of\s+|de\s+|the\s+)?[A-Z0-9][\w'&-]*)*")
_FAQ_Q = re.compile(r"^\s*(?:q|question)\s*[:.)-]\s*(?P<q>.+)$", re.IGNORECASE)
_OBJ_STOP = re.compile(
    r"\s*(?:[,;:!?]|\.(?!\d)|\s(?:and|but|which|that|who|because|since|while|when|if|so|"
    r"for\s+(?:the|a|an)\s|with|from|after|before|until)\s).*$",
    re.IGNORECASE,
)
_LEAD = re.compile(r"^(?:the|a|an|its|their|our|this|that|these|those)\s+", re.IGNORECASE)
_STOPWORDS_TEXT = (
    "the a an it its this that these those which who what how why where when there here they we "
    "you he she i our your their his her and or but if so also yes no "
    # auxiliaries that open a question ("Is the Lumo Kettle cordless?")
    "is are was were do does did can could will would should may might must has have had "
)
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


def _clean_np(text: str, *, tail: bool) -> str:
    """Trim a raw pattern group to a short noun phrase (the end of a subject, the start of an object)."""
    s = text.strip().strip("\"'“”")
    if tail:
        # The subject is what ends right before the verb: prefer a trailing capitalised span.
        parts = re.split(r"[,;:()]|\s(?:and|but|because|since|while|when|if|so)\s", s)
        parts = [p for p in parts if p and p.strip()]
        s = parts[-1].strip() if parts else ""
        words = s.split()
        caps = list(_CAP_SPAN.finditer(s))
        if caps and caps[-1].end() >= len(s.rstrip(".")) - 1 and len(words) > _MAX_NP_WORDS:
            s = caps[-1].group(0)
        words = s.split()[-_MAX_NP_WORDS:]
        s = " ".join(words)
    else:
        s = _OBJ_STOP.sub("", s)
        s = " ".join(s.split()[:_MAX_NP_WORDS])
    s = _LEAD.sub("", s).strip(" .,'\"")
    if not s or s.lower() in _STOPWORDS or not re.search(r"\w", s):
        return ""
    return s


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT.split(text) if s and s.strip()]


def _named(sentence: str) -> list[str]:
    """Capitalised spans, minus a lone sentence-initial function word ("The", "How")."""
    out = []
    first = re.match(r"^\W*(?:[A-Za-z]{1,10}\s*:\s*)?", sentence)
    start0 = first.end() if first else 0
    for m in _CAP_SPAN.finditer(sentence):
        span = m.group(0).strip()
        words = span.split()
        while words and words[0].lower() in _STOPWORDS:
            words = words[1:]
        if not words:
            continue
        if len(words) == 1 and m.start() <= start0:
            continue  # a lone sentence-initial capital is usually just grammar
        out.append(" ".join(words))
    return out


def extract(text: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Facts ``(subject, relation, object)`` and entity mentions found in ``text``."""
    if "\x00" in text:
        from knowledge.graph import GraphError

        raise GraphError("document text contains NUL bytes (binary data?)")
    text = text[:MAX_TEXT_CHARS]
    facts: list[tuple[str, str, str]] = []
    mentions: list[str] = []
    for line in text.splitlines():
        m = _FAQ_Q.match(line)
        if m:
            subj = _named(m.group("q"))
            if not subj:
                the = re.search(r"\bthe\s+([\w-]+(?:\s+[\w-]+){0,2}?)\s*[?.]?$", m.group("q"), re.I)
                subj = [the.group(1)] if the else []
            mentions.extend(subj)
    for sent in _sentences(text):
        if len(sent) > 2000:
            sent = sent[:2000]
        sent = sent.rstrip(".!? ")
        linked: set[str] = set()
        for m in list(_PAREN_ALIAS.finditer(sent)):  # "X (aka Y)": an alias, then drop it
            a, b = _clean_np(m.group("s"), tail=True), _clean_np(m.group("o"), tail=False)
            if a and b:
                facts.append((a, "alias", b))
                mentions.extend([a, b])
        sent = _PAREN_ALIAS.sub(lambda m: m.group("s"), sent)
        if not _NEG.search(sent):
            _match_patterns(sent, facts, mentions, linked)
        named = list(dict.fromkeys(_named(sent)))[:6]
        mentions.extend(named)
        free = [n for n in named if n.lower() not in linked]
        for i, a in enumerate(free):
            for b in named[i + 1 :] if a in named else []:
                if a.lower() != b.lower() and not (a.lower() in linked and b.lower() in linked):
                    facts.append((a, "mentioned_with", b))
    return facts, list(dict.fromkeys(mentions))


def _match_patterns(sent: str, facts: list, mentions: list, linked: set[str]) -> None:
    """First matching pattern wins; an alias clause is consumed and the rest read again."""
    for _ in range(3):
        for rx, rel in _COMPILED:
            m = rx.fullmatch(sent)
            if not m:
                continue
            s = _clean_np(m.group("s"), tail=True)
            o = _clean_np(m.group("o"), tail=False)
            if s and o and s.lower() != o.lower():
                facts.append((s, rel, o))
                linked |= {s.lower(), o.lower()}
                mentions.extend([s, o])
                break
        else:
            return
        if rel != "alias":
            return
        # "X, also known as Y, was founded in Z": drop the alias clause, read "X was founded in Z"
        rest = m.group("o")
        cut = rest.find(o)
        rest = rest[cut + len(o) :] if cut >= 0 else ""
        rest = rest.lstrip(" ,);")
        if len(rest.split()) < 2:
            return
        sent = f"{s} {rest}"
