"""PII redaction for everything that leaves the raw session store: logs, exports, tickets.

    from assistant.pii import redact, redact_obj, install_logging_filter

    redact("mail jo@example.com or call +44 20 7946 0958")   # 'mail [email] or call [phone]'
    install_logging_filter()   # every handler of the root and uvicorn loggers redacts

What counts (deterministic recognisers; like Presidio we never claim "no PII", only that these
shapes are caught):

* **email** ``local@domain.tld``; URL-encoded ``%40`` counts as ``@`` (and ``%2B``, ``%20``... as
  ``+``, space... for phones), so query strings in access logs are covered.
* **card** 13–19 digits, optionally grouped with single spaces or dashes, and only when the
  Luhn checksum holds (so order numbers and random IDs are left alone).
* **iban** two letters, two check digits, 11–30 letters/digits (spaces allowed), only when the
  ISO 13616 mod-97 check holds and, for known countries, the length matches.
* **phone** ``+CC`` or ``00CC`` international numbers with 8–15 digits, and national numbers
  written as ``(555) 123-4567`` / ``555-123-4567`` / ``555.123.4567`` / ``555 123 4567`` or a
  leading trunk ``0`` followed by grouped digits (``020 7946 0958``, ``07700 900123``), 10–11
  digits. Not phones: dates (``2024-05-01``, ``01/05/2024``), prices (``$1,299.00``), times,
  order numbers glued to letters (``JH-482913``), and bare digit runs without a ``+``/``0``.

Matching runs on a normalised view of the text (NFKC, so full-width digits count; zero-width
characters and soft hyphens dropped) while replacements cut the original text, so everything
that is not PII comes out unchanged. Redaction repeats until nothing changes, which makes
``redact`` idempotent.
"""

from __future__ import annotations

import logging
import re
import traceback
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from assistant.errors import ConfigError

__all__ = [
    "PIIConfig",
    "PIIMatch",
    "RedactingFilter",
    "find_pii",
    "iban_valid",
    "install_logging_filter",
    "luhn_valid",
    "redact",
    "redact_obj",
]

KINDS = ("email", "card", "iban", "phone")

_ZERO_WIDTH = frozenset("\u00ad\u180e\u200b\u200c\u200d\u2060\ufeff")
# percent-escapes that can hide an email or phone number in a URL or query string
_URL_ESCAPES = {f"{ord(c):02X}": c for c in "@+-(). "}
_LABEL_RE = re.compile(r"[a-z][a-z0-9_]{0,30}")


class PIIConfig(BaseModel):
    """Which kinds to redact, plus site-specific patterns (``extra``: label -> regex)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    email: bool = True
    card: bool = True
    iban: bool = True
    phone: bool = True
    extra: dict[str, str] = Field(default_factory=dict)
    """Custom recognisers, e.g. ``{"customer_id": r"CUST-\\d{6}"}`` -> ``[customer_id]``."""

    @field_validator("extra")
    @classmethod
    def _check_extra(cls, value: dict[str, str]) -> dict[str, str]:
        for label, pattern in value.items():
            if not _LABEL_RE.fullmatch(label) or label in KINDS:
                raise ValueError(
                    f"pii label {label!r} must be lower-case letters/digits/_ and not a built-in kind"
                )
            try:
                rx = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pii pattern for {label!r} is not a valid regex: {exc}") from None
            if rx.match(""):
                raise ValueError(f"pii pattern for {label!r} matches the empty string")
        return value

    @classmethod
    def build(cls, **kwargs: Any) -> PIIConfig:
        """Like the constructor, but a bad setting raises :class:`ConfigError` (one line)."""
        try:
            return cls(**kwargs)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            errors = getattr(exc, "errors", None)
            msg = errors()[0]["msg"] if callable(errors) else str(exc)
            raise ConfigError(f"pii: {msg}") from None


_DEFAULT = PIIConfig()


@dataclass(frozen=True)
class PIIMatch:
    """One recognised span of the *original* text."""

    kind: str
    start: int
    end: int
    text: str


# -- checksums -------------------------------------------------------------------------------
def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check used by every payment card number."""
    if not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# Lengths from the SWIFT IBAN registry for the countries a shop usually sees; others are
# accepted at any length 15-34 if the mod-97 check holds.
_IBAN_LENGTHS = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18,
    "EE": 20, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GI": 23, "GL": 18, "GR": 27,
    "HR": 21, "HU": 28, "IE": 22, "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "TR": 26, "UA": 29, "VA": 22,
}  # fmt: skip


def iban_valid(iban: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters -> 10..35, mod 97 == 1."""
    s = iban.replace(" ", "").upper()
    if not (15 <= len(s) <= 34) or not s.isascii() or not s.isalnum():
        return False
    if not (s[:2].isalpha() and s[2:4].isdigit()):
        return False
    want = _IBAN_LENGTHS.get(s[:2])
    if want is not None and len(s) != want:
        return False
    rearranged = s[4:] + s[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


# -- recognisers (run on the normalised view) ------------------------------------------------
# RFC 5322 also allows / = ? in the local part; they are left out so that a query string
# ("?email=jo@example.com") loses the address, not the URL in front of it.
_EMAIL_RE = re.compile(
    r"(?<![\w.!#$%&'*+^`{|}~-])"
    r"[\w!#$%&'*+^`{|}~-]+(?:\.[\w!#$%&'*+^`{|}~-]+)*"
    r"@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_][\w-]*[^\W_]"
)
# A run of digit groups separated by single spaces/dashes; card windows are cut from it.
_DIGIT_RUN_RE = re.compile(r"(?<!\d)\d+(?:[ -]\d+)*(?!\d)")
_IBAN_RE = re.compile(r"(?<![^\W_])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}(?![^\W_])")
_PHONE_RES = [
    # +CC ... or 00CC ...: digit groups with single separators, optional "(0)" / "(20)" part.
    # Possessive repeats keep a failed match linear (no backtracking through digit splits).
    re.compile(
        r"(?<![\w+.-])(?<!\d[ .-])(?:\+|00)\d++(?:[ .-]?\(\d{1,4}\)[ .-]?\d++)?(?:[ .-]\d++)*+"
        r"(?![\w-]|[ .,]\d)"
    ),
    # North American: (555) 123-4567, 555-123-4567, 555.123.4567, 555 123 4567, 1-800-555-0199.
    re.compile(
        r"(?<![\w+.,$/-])(?<!\d[ .-])(?:1[ .-])?(?:\(\d{3}\) ?|\d{3}([ .-]))\d{3}[ .-]\d{4}(?![\w-]|[ .,]\d)"
    ),
    # National with a trunk 0: 020 7946 0958, 07700 900123, 030-1234567, (020) 7946 0958.
    re.compile(
        r"(?<![\w+.,$/-])(?<!\d[ .-])(?:\(0\d{1,4}\)|0\d{1,4})(?:[ -]\d{2,8}){1,4}(?![\w-]|[ .,]\d)"
    ),
]
_PHONE_DIGITS = {0: (8, 15), 1: (10, 11), 2: (10, 11)}
_IBAN_HEAD = re.compile(r"(?<![^\W_])[A-Za-z]{2}\d{2}(?: [A-Za-z0-9]{4})* $")
_DATE_LIKE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}-\d{1,2}-\d{2,4}")


def _normalise(text: str) -> tuple[str, list[int]]:
    """NFKC per character, zero-width dropped, URL-encoded ``@+-(). `` decoded; plus offsets.

    Returns the view and, for each view index (and one past the end), its original index.
    """
    if text.isascii() and "%" not in text:
        return text, list(range(len(text) + 1))
    out: list[str] = []
    where: list[int] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "%":
            decoded = _URL_ESCAPES.get(text[i + 1 : i + 3].upper())
            if decoded:
                out.append(decoded)
                where.append(i)
                i += 3
                continue
        if ch in _ZERO_WIDTH:
            i += 1
            continue
        norm = ch if ch.isascii() else unicodedata.normalize("NFKC", ch)
        for c in norm:
            out.append(c)
            where.append(i)
        i += 1
    where.append(n)
    return "".join(out), where


def _cards(view: str) -> Iterable[tuple[int, int]]:
    for run in _DIGIT_RUN_RE.finditer(view):
        groups = [(m.start(), m.end()) for m in re.finditer(r"\d+", run.group())]
        base = run.start()
        i = 0
        while i < len(groups):
            found = None
            # longest window of whole groups starting at group i with 13-19 digits
            digits = ""
            best_j = -1
            for j in range(i, len(groups)):
                s, e = groups[j]
                digits += run.group()[s:e]
                if len(digits) > 19:
                    break
                # no issuer number starts with 0 (and all-zero runs pass Luhn)
                if len(digits) >= 13 and digits[0] != "0" and luhn_valid(digits):
                    best_j = j
            if best_j >= 0:
                found = (base + groups[i][0], base + groups[best_j][1])
                yield found
                i = best_j + 1
            else:
                i += 1


def _ibans(view: str) -> Iterable[tuple[int, int]]:
    for m in _IBAN_RE.finditer(view):
        cand = m.group()
        # the greedy match may swallow a following upper-case word: try shorter prefixes too
        ends = [k + 1 for k, c in enumerate(cand) if c != " "]
        for end in reversed(ends):
            if iban_valid(cand[:end]):
                yield m.start(), m.start() + end
                break


def _phones(view: str) -> Iterable[tuple[int, int]]:
    for idx, rx in enumerate(_PHONE_RES):
        lo, hi = _PHONE_DIGITS[idx]
        for m in rx.finditer(view):
            s = m.group()
            n_digits = sum(c.isdigit() for c in s)
            if idx == 0 and s.startswith("00"):
                n_digits -= 2  # the 00 exit code is not part of the number
            if not lo <= n_digits <= hi:
                continue
            if idx == 1 and m.group(1) and s.count(m.group(1)) < 2 and "(" not in s:
                continue  # 555-123 4567: mixed separators are not a phone number
            if idx and _DATE_LIKE.fullmatch(s):
                continue
            if _IBAN_HEAD.search(view, max(0, m.start() - 48), m.start()):
                continue  # the tail of a mistyped IBAN ("NL91 ABNA 0417 1643 01"), not a phone
            yield m.start(), m.end()


def _placeholder_re(config: PIIConfig) -> re.Pattern[str]:
    labels = [*KINDS, *config.extra]
    return re.compile(r"\[(?:" + "|".join(map(re.escape, labels)) + r")\]")


def find_pii(text: str, config: PIIConfig | None = None) -> list[PIIMatch]:
    """Non-overlapping PII spans of ``text`` in reading order (one pass, no repetition)."""
    config = config or _DEFAULT
    view, where = _normalise(text)
    spans: list[tuple[int, int, str]] = []  # (start, end, kind) on the view, priority order
    if config.email:
        spans += [(m.start(), m.end(), "email") for m in _EMAIL_RE.finditer(view)]
    if config.iban:  # before cards: mod-97 plus country length is the stricter check
        spans += [(s, e, "iban") for s, e in _ibans(view)]
    if config.card:
        spans += [(s, e, "card") for s, e in _cards(view)]
    if config.phone:
        spans += [(s, e, "phone") for s, e in _phones(view)]
    for label, pattern in config.extra.items():
        spans += [
            (m.start(), m.end(), label) for m in re.finditer(pattern, view) if m.end() > m.start()
        ]
    taken = [(m.start(), m.end()) for m in _placeholder_re(config).finditer(view)]
    out: list[PIIMatch] = []
    for s, e, kind in spans:  # earlier kinds win overlaps
        if any(s < te and ts < e for ts, te in taken):
            continue
        taken.append((s, e))
        os_, oe = where[s], where[e - 1] + 1
        out.append(PIIMatch(kind, os_, oe, text[os_:oe]))
    out.sort(key=lambda m: m.start)
    return out


def redact(text: str, config: PIIConfig | None = None) -> str:
    """``text`` with every recognised PII span replaced by ``[kind]`` (idempotent)."""
    if not isinstance(text, str):
        raise TypeError(f"redact() needs a str, got {type(text).__name__}")
    for _ in range(8):  # each pass removes an '@' or digits, so this settles in 1-2 passes
        found = find_pii(text, config)
        if not found:
            return text
        parts: list[str] = []
        last = 0
        for m in found:
            parts.append(text[last : m.start])
            parts.append(f"[{m.kind}]")
            last = m.end
        parts.append(text[last:])
        text = "".join(parts)
    return text


def redact_obj(obj: Any, config: PIIConfig | None = None) -> Any:
    """A copy of ``obj`` with every string inside dicts/lists/tuples/sets redacted.

    Used for transcript exports, handoff tickets and any JSON that leaves the process; other
    values (numbers, None, bools) pass through unchanged.
    """
    if isinstance(obj, str):
        return redact(obj, config)
    if isinstance(obj, dict):
        return {redact_obj(k, config): redact_obj(v, config) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact_obj(v, config) for v in obj]
    if isinstance(obj, tuple):
        return tuple(redact_obj(v, config) for v in obj)
    if isinstance(obj, (set, frozenset)):
        return type(obj)(redact_obj(v, config) for v in obj)
    return obj


# -- logging ----------------------------------------------------------------------------------
class RedactingFilter(logging.Filter):
    """A logging filter that redacts the message, its arguments and any traceback text.

    Attach it to *handlers* (a filter on a logger does not see records propagated from child
    loggers). Records are rewritten, never dropped.
    """

    def __init__(self, config: PIIConfig | None = None, name: str = "") -> None:
        super().__init__(name)
        self.config = config or _DEFAULT

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._redact_record(record)
        except Exception:  # a log line must never be lost to the redactor: drop the content
            record.msg, record.args = "[log message withheld: redaction failed]", None
        return True

    def _redact_record(self, record: logging.LogRecord) -> None:
        cfg = self.config
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a, cfg) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: redact(v, cfg) if isinstance(v, str) else v for k, v in record.args.items()
            }
        if isinstance(record.msg, str) and not record.args:
            record.msg = redact(record.msg, cfg)
        else:
            message = record.getMessage()
            clean = redact(message, cfg)
            # uvicorn's access formatter unpacks record.args itself: keep its (already
            # redacted) arguments; anything else gets the fully formatted, redacted text
            changed = clean != message or not isinstance(record.msg, str)
            if changed and record.name != "uvicorn.access":
                record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = redact(text, cfg)
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, cfg)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, cfg)


_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "fastapi")


def install_logging_filter(
    config: PIIConfig | None = None, loggers: Iterable[str] = _LOGGERS
) -> RedactingFilter:
    """Attach one :class:`RedactingFilter` to every handler of ``loggers`` (idempotent).

    Call it after logging is configured (for uvicorn: in the app's lifespan/startup, when
    uvicorn's own handlers exist). Handlers that already carry a RedactingFilter are skipped.
    """
    filt = RedactingFilter(config)
    for name in loggers:
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(filt)
    return filt
