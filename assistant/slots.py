"""Slot extraction and follow-up detection: small, deterministic rules over the message text.

The classifier decides *which* skill a message wants; these rules pull out *what* it is about
(a target language, a summary length, a document) and notice when a message leans on the
conversation ("summarize that", "and in French?", "tell me more"). Rules are used here
because they are exact, fast and explainable, and these phrasings are a closed set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from skills.languages import LANGUAGE_NAMES, LANGUAGES  # noqa: F401 - re-exported

_LANG_ALT = "|".join(sorted((re.escape(k) for k in LANGUAGES), key=len, reverse=True))
_LANG_RE = re.compile(rf"\b(?:into|to|in|auf|en|nach|ins)\s+(?P<lang>{_LANG_ALT})\b", re.IGNORECASE)
_BARE_LANG_RE = re.compile(rf"\b(?P<lang>{_LANG_ALT})\b", re.IGNORECASE)

_NUMBER_WORDS = {
    "one": 1,
    "a": 1,
    "single": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "a couple of": 2,
    "a few": 3,
}
_NUM = r"(?P<num>\d{1,3}|one|a single|single|two|three|four|five|six|seven|eight|nine|ten|a couple of|a few|a)"
_SENT_RE = re.compile(rf"\b{_NUM}\s+(?:short\s+)?(?:sentences?|lines?)\b", re.IGNORECASE)
_WORDS_RE = re.compile(
    rf"\b(?:in\s+|under\s+|within\s+|max(?:imum)?\s+)?{_NUM}\s+words?\b", re.IGNORECASE
)
_PCT_RE = re.compile(r"\b(?P<pct>\d{1,2})\s?(?:%|percent\b)", re.IGNORECASE)
_BULLETS_RE = re.compile(rf"\b{_NUM}\s+(?:bullet(?:\s+point)?s?|points)\b", re.IGNORECASE)

# Anaphora: the message points at something said before.
_REF_REPLY = re.compile(
    r"\b(that|this|it|the (?:last |previous )?(?:answer|reply|response|message)|"
    r"what you (?:just )?(?:said|wrote)|your (?:last |previous )?(?:answer|reply))\b",
    re.IGNORECASE,
)
_REF_USER = re.compile(
    r"\b(what i (?:just )?(?:said|wrote|asked)|my (?:last |previous )?(?:message|question|text))\b",
    re.IGNORECASE,
)
_REF_DOC = re.compile(
    r"\b(?:the|that|this) (?:document|doc|file|page|policy|article)\b", re.IGNORECASE
)
_REF_CONVERSATION = re.compile(
    r"\b(?:our|the|this) (?:conversation|chat|discussion|session)\b|\bwhat we (?:said|discussed)\b",
    re.IGNORECASE,
)
_MORE_RE = re.compile(
    r"^\s*(?:please\s+)?(?:tell me more|more(?: details| info(?:rmation)?)?|go on|continue|"
    r"elaborate|can you elaborate|say more|and\?|more please)\s*[.!?]*\s*$",
    re.IGNORECASE,
)
_ELLIPTIC_LANG_RE = re.compile(
    rf"^\s*(?:and|now|also|what about|how about)?\s*(?:in|into|auf|en)?\s*(?P<lang>{_LANG_ALT})"
    r"\s*(?:please|too|as well)?\s*[?.!]*\s*$",
    re.IGNORECASE,
)
_SUMMARIZE_VERB = re.compile(r"\b(summari[sz]e|summary|sum up|tl;?dr|recap|condense|gist)\b", re.I)
_TRANSLATE_VERB = re.compile(
    r"\b(translate|translation|übersetze|traduis|traduce|say .* in)\b", re.I
)


@dataclass
class FollowUp:
    skill: str | None  # a skill forced by the follow-up rule, or None to let the classifier decide
    referent_kind: str | None  # "last_reply" | "last_user_text" | "last_document" | "conversation"


def target_language(text: str) -> str | None:
    """ "into German", "auf Deutsch", "in French please" -> "de" / "fr"."""
    m = _LANG_RE.search(text)
    if m:
        return LANGUAGES[m.group("lang").lower()]
    return None


def any_language(text: str) -> str | None:
    m = _BARE_LANG_RE.search(text)
    return LANGUAGES[m.group("lang").lower()] if m else None


def _num(value: str) -> int:
    value = value.lower()
    return int(value) if value.isdigit() else _NUMBER_WORDS.get(value, 1)


_FRACTIONS = [
    (r"\b(half|one half)\b", 0.5),
    (r"\b(a|one) third\b", 0.33),
    (r"\b(a|one) quarter\b", 0.25),
    (r"\b(a|one) fifth\b", 0.2),
    (r"\b(a|one) tenth\b", 0.1),
]


def summary_length(text: str) -> str | None:
    """ "in two sentences" -> "sentences:2"; "50 words" -> "words:50"; "20%" -> "ratio:0.2"."""
    if m := _SENT_RE.search(text):
        return f"sentences:{max(1, min(50, _num(m.group('num'))))}"
    if m := _BULLETS_RE.search(text):
        return f"sentences:{max(1, min(50, _num(m.group('num'))))}"
    if m := _WORDS_RE.search(text):
        return f"words:{max(5, min(2000, _num(m.group('num'))))}"
    if m := _PCT_RE.search(text):
        return f"ratio:{max(1, min(90, int(m.group('pct')))) / 100:.2f}"
    low = text.lower()
    for pattern, share in _FRACTIONS:  # "half as long", "a third of it"
        if re.search(pattern, low):
            return f"ratio:{share:.2f}"
    if re.search(r"\b(one-liner|one liner|tl;?dr|very short|in short|briefly)\b", low):
        return "sentences:1"
    if re.search(r"\b(short|brief|quick)\b", low):
        return "sentences:2"
    if re.search(r"\b(detailed|long(?!\s+as)|longer|in depth|thorough)\b", low):
        return "sentences:6"
    return None


def _tokens(text: str) -> set[str]:
    return {t for t in re.findall(r"[a-z0-9]+", text.lower()) if len(t) > 2}


_STOP = {
    "the",
    "and",
    "our",
    "your",
    "please",
    "summarize",
    "summarise",
    "summary",
    "document",
    "doc",
    "file",
    "page",
    "policy",
    "about",
    "what",
    "does",
    "say",
    "give",
    "with",
    "sentences",
    "sentence",
    "words",
    "into",
    "translate",
    "short",
    "brief",
    "that",
    "this",
    "for",
    "can",
    "you",
}


def document_name(text: str, names: list[str]) -> str | None:
    """Match a mentioned document ("the refund policy") to an ingested document name."""
    words = _tokens(text) - _STOP
    if not words or not names:
        return None
    best, best_key = None, (0.0, 0.0)
    named: list[tuple[int, str]] = []
    for name in names:
        stem = re.sub(r"\.[a-z0-9]+$", "", name.lower())
        all_words = _tokens(stem.replace("-", " ").replace("_", " "))
        name_words = (all_words - _STOP) or all_words
        if not name_words:
            continue
        if re.search(r"(?<!\w)" + re.escape(stem) + r"(?!\w)", text.lower()):
            named.append((len(stem), name))
        overlap: float = len(words & name_words)
        # prefix matches catch "refund" vs "refunds", "ship" vs "shipping"
        overlap += 0.5 * sum(
            1 for w in words for n in name_words if w != n and (w.startswith(n) or n.startswith(w))
        )
        # the larger overlap wins a tie: "the greenhouse notes" is "Greenhouse notes" (2 of 2
        # words), not "notes.txt" (1 of 1)
        key = (overlap / len(name_words), overlap)
        if overlap and key > best_key:
            best, best_key = name, key
    if named:  # named outright; the longest name holds the others ("greenhouse notes", "notes")
        return max(named)[1]
    return best if best_key[0] >= 0.5 else None


# "summarize this: <text>", "translate to German: <text>": the command is explicit, and the
# pasted text (in any language) must not outvote it in the classifier
_EXPLICIT_COMMAND = re.compile(
    r"^\s*(?:please\s+|can you\s+|could you\s+)?(?P<verb>summari[sz]e|sum up|tl;?dr|translate)"
    r"\b[^:\"“„«\n]{0,60}(?::|[\"“„«])",
    re.I,
)


def follow_up(text: str, last_skill: str | None, has_history: bool) -> FollowUp | None:
    """Notice messages that only make sense against the conversation so far, and explicit
    commands whose pasted text would otherwise dominate the classifier."""
    if m := _EXPLICIT_COMMAND.match(text):
        verb = m.group("verb").lower()
        return FollowUp(
            skill="translate" if verb == "translate" else "summarize", referent_kind=None
        )
    if not has_history:
        return None
    if _MORE_RE.match(text) and last_skill:
        return FollowUp(skill=last_skill, referent_kind="last_user_text")
    if _ELLIPTIC_LANG_RE.match(text) and last_skill == "translate":
        return FollowUp(skill="translate", referent_kind="translate_source")
    summarize = bool(_SUMMARIZE_VERB.search(text))
    translate = bool(_TRANSLATE_VERB.search(text))
    if not (summarize or translate):
        return None
    skill = (
        "summarize"
        if summarize and not translate
        else "translate"
        if translate and not summarize
        else None
    )
    if _REF_CONVERSATION.search(text):
        return FollowUp(skill=skill, referent_kind="conversation")
    if _REF_USER.search(text):
        return FollowUp(skill=skill, referent_kind="last_user_text")
    if _REF_DOC.search(text) and not _has_quote(text):
        return FollowUp(skill=skill, referent_kind="last_document")
    if _REF_REPLY.search(text) and not _has_quote(text) and len(text.split()) <= 12:
        return FollowUp(skill=skill, referent_kind="last_reply")
    return None


def _has_quote(text: str) -> bool:
    return bool(re.search(r"[\"“”«»„'].{3,}[\"“”«»'“]", text)) or ":" in text
