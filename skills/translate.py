"""Translation: the bot's phrasebook first (exact and fuzzy matches), then a local model.

The text to translate comes from quotes in the message, the text after "translate", or the
referent ("translate that" -> the last reply). The target language comes from the message
("into German", "auf Deutsch"); when it is missing the skill asks for it. Without a model for
the language pair it says so and names the command that trains one, instead of pretending.
"""

from __future__ import annotations

import csv
import difflib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from skills.base import Reply, Services, Skill, SkillRequest, Slot, Source
from skills.languages import language_name
from skills.quality import degenerate

_STOPWORDS = {
    "en": {
        "the",
        "and",
        "is",
        "are",
        "you",
        "your",
        "my",
        "to",
        "of",
        "it",
        "in",
        "for",
        "what",
        "where",
        "i",
        "please",
        "thank",
        "order",
    },
    "de": {
        "der",
        "die",
        "das",
        "und",
        "ist",
        "sind",
        "ich",
        "sie",
        "nicht",
        "mein",
        "meine",
        "wo",
        "was",
        "bitte",
        "danke",
        "ein",
        "eine",
        "zu",
        "mit",
        "ihre",
    },
    "fr": {
        "le",
        "la",
        "les",
        "et",
        "est",
        "je",
        "vous",
        "pas",
        "mon",
        "ma",
        "où",
        "que",
        "merci",
        "une",
        "un",
        "pour",
        "avec",
        "votre",
        "des",
        "commande",
    },
    "es": {
        "el",
        "la",
        "los",
        "las",
        "y",
        "es",
        "yo",
        "usted",
        "no",
        "mi",
        "dónde",
        "que",
        "gracias",
        "una",
        "un",
        "para",
        "con",
        "por",
    },
    "it": {
        "il",
        "lo",
        "la",
        "gli",
        "e",
        "è",
        "io",
        "non",
        "mio",
        "dove",
        "che",
        "grazie",
        "una",
        "un",
        "per",
        "con",
    },
    "nl": {
        "de",
        "het",
        "en",
        "is",
        "ik",
        "niet",
        "mijn",
        "waar",
        "wat",
        "bedankt",
        "een",
        "voor",
        "met",
    },
}

_QUOTED = re.compile(r"[\"“«„'](?P<body>[^\"”»“]{2,}?)[\"”»“']")
_AFTER_COLON = re.compile(r"^[^:]{0,60}\btranslat\w*[^:]*:\s*(?P<body>.+)$", re.I | re.S)
_STRIP_CMD = re.compile(
    r"^\s*(?:please\s+|can you\s+|could you\s+)?translate\s+(?P<body>.+?)"
    r"(?:\s+(?:in)?to\s+\w+|\s+auf\s+\w+|\s+in\s+\w+)?\s*(?:please)?[.!?]*\s*$",
    re.I | re.S,
)


def detect_language(text: str) -> str | None:
    """Stop-word vote; good enough to tell en/de/fr/es/it/nl apart on a sentence."""
    words = re.findall(r"[a-zà-ÿäöüß]+", text.lower())
    if not words:
        return None
    scores = {lang: sum(w in sw for w in words) for lang, sw in _STOPWORDS.items()}
    if re.search(r"[äöüß]", text.lower()):
        scores["de"] += 2
    if re.search(r"[àâçéèêëîïôûù]", text.lower()):
        scores["fr"] += 1
    lang, best = max(scores.items(), key=lambda kv: kv[1])
    return lang if best > 0 else None


class Phrasebook:
    """Translation memory: rows of the same phrase in several languages (TSV, header = codes)."""

    def __init__(self, rows: list[dict[str, str]]) -> None:
        self.rows = rows
        self.languages = sorted({k for r in rows for k in r})

    @classmethod
    def load(cls, path: Path) -> Phrasebook:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t")
            rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in reader]
        return cls([r for r in rows if any(r.values())])

    def lookup(
        self, text: str, src: str, tgt: str, cutoff: float = 0.85
    ) -> tuple[str, float, str] | None:
        """(translation, similarity, matched source phrase) or None."""
        norm = _norm(text)
        candidates = [(r, _norm(r.get(src, ""))) for r in self.rows if r.get(src) and r.get(tgt)]
        for r, n in candidates:
            if n == norm:
                return r[tgt], 1.0, r[src]
        best: tuple[str, float, str] | None = None
        for r, n in candidates:
            ratio = difflib.SequenceMatcher(None, n, norm).ratio()
            if ratio >= cutoff and (best is None or ratio > best[1]):
                best = (r[tgt], ratio, r[src])
        return best


def _norm(s: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())


class TranslateSkill(Skill):
    name = "translate"
    description = (
        "Translates text between languages, using the phrasebook and local translation models."
    )
    capability = "translate short texts"
    examples = [
        "translate that into German",
        "how do you say thank you in French",
        "translate 'where is my parcel' to Spanish",
        "can you translate this to german: our store opens at nine",
        "auf Deutsch bitte",
        "translate it into French please",
        "what is 'good morning' in Italian",
    ]
    slots = [Slot("target_language", "Which language should I translate it into?")]

    def __init__(self) -> None:
        self._phrasebooks: dict[str, Phrasebook] = {}

    def handle(self, request: SkillRequest, services: Services) -> Iterator[str | Reply]:
        text, _what = self._text(request)
        if text is None:
            msg = "What should I translate? Put the text in quotes, or say 'translate that' after a reply."
            yield msg
            yield self.reply(msg, confidence=request.confidence, data={"needs": "text"})
            return
        if not text.strip():
            msg = "There is nothing to translate: the text is empty."
            yield msg
            yield self.reply(msg, confidence=request.confidence)
            return
        tgt = request.slots.get("target_language")
        src = request.slots.get("source_language") or detect_language(text) or "en"
        memory = {"source_text": text, "source_language": src}
        if not tgt:  # the dialogue manager asks for required slots; this is a safety net
            msg = self.slots[0].prompt
            yield msg
            yield self.reply(
                msg,
                confidence=request.confidence,
                data={"needs": "target_language", "memory": memory},
            )
            return
        if src == tgt:
            msg = f"That text already looks like {language_name(tgt)}."
            yield msg
            yield self.reply(msg, confidence=request.confidence, data={"memory": memory})
            return
        book = self._phrasebook(services)
        if book is not None:
            hit = book.lookup(text, src, tgt)
            if hit is not None:
                out, sim, matched = hit
                yield out
                yield self.reply(
                    out,
                    confidence=min(request.confidence, sim) if request.confidence else sim,
                    sources=[Source(kind="memory", title="phrasebook", snippet=matched, score=sim)],
                    data={
                        "method": "translation memory",
                        "source_language": src,
                        "target_language": tgt,
                        "match": round(sim, 3),
                        "memory": memory,
                    },
                )
                return
        translator = services.translator
        if translator is not None and translator.supports(src, tgt):
            # Beam search decodes the whole text before the first word exists anyway, so the
            # output is checked before it is shown: an undertrained model's "Luuueeee" must not
            # reach the user as a translation.
            out = translator.translate([text], src=src, tgt=tgt)[0].strip()
            data = {
                "method": "model",
                "model": translator.name(src, tgt),
                "source_language": src,
                "target_language": tgt,
                "memory": memory,
            }
            why = degenerate(out, source=text)
            if why is not None:
                msg = (
                    f"The {language_name(src)}-to-{language_name(tgt)} model "
                    f"({data['model']}) is not ready: its output was unusable ({why}). Train it "
                    f"longer: llmos train translator --pairs PAIRS.tsv --src {src} --tgt {tgt} "
                    "--resume"
                )
                yield msg
                yield self.reply(
                    msg,
                    confidence=request.confidence,
                    data={**data, "method": "none", "unusable": out},
                )
                return
            yield from re.findall(r"\S+\s*", out)
            yield self.reply(out, confidence=request.confidence, data=data)
            return
        msg = (
            f"I have no {language_name(src)}-to-{language_name(tgt)} translation model yet, and the "
            f"phrasebook has no match for this text. Train one with: "
            f"llmos train translator --pairs PAIRS.tsv --src {src} --tgt {tgt}"
        )
        yield msg
        yield self.reply(
            msg,
            confidence=request.confidence,
            data={
                "method": "none",
                "source_language": src,
                "target_language": tgt,
                "memory": memory,
            },
        )

    def _text(self, request: SkillRequest) -> tuple[str | None, str]:
        if request.referent_kind == "translate_source":
            mem = request.session.memory.get(self.name, {})
            if mem.get("source_text"):
                return str(mem["source_text"]), "previous text"
        if (
            request.referent_kind in ("last_reply", "last_user_text", "last_document")
            and request.referent
        ):
            return request.referent, request.referent_kind
        if m := _AFTER_COLON.match(request.text):
            return m.group("body").strip(), "message"
        if m := _QUOTED.search(request.text):
            return m.group("body").strip(), "quoted"
        if m := _STRIP_CMD.match(request.text):
            body = m.group("body").strip()
            if body.lower() not in {"that", "it", "this", "the last answer"}:
                return body, "message"
        if request.referent:
            return request.referent, request.referent_kind or "referent"
        return None, ""

    def _phrasebook(self, services: Services) -> Phrasebook | None:
        path: Any = getattr(services, "phrasebook_path", None)
        if not path:
            return None
        key = str(path)
        if key not in self._phrasebooks:
            try:
                self._phrasebooks[key] = Phrasebook.load(Path(path))
            except (OSError, csv.Error, UnicodeDecodeError):
                return None
        return self._phrasebooks[key]
