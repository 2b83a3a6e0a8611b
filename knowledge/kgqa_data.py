"""Readers for knowledge-graph QA data: questions with gold answers and (optionally) a topic.

Three line formats are understood, so one trainer serves the user's files and the benchmarks:

- MetaQA style: ``question with the [topic entity] marked \\t answer1|answer2`` (``.txt``/``.tsv``,
  optionally gzipped). The bracketed span is the topic entity.
- PathQuestion style: ``question \\t ans(ans1/ans2/) \\t gold#path#...``. The gold path is never
  read: the topic is found by linking the question against the graph (see ``link_underscored``).
- JSON lines: ``{"question": ..., "answers": [...], "topic": optional}``.

Questions are *masked* before encoding (the topic span becomes ``NE``) so a trained model
learns the wording of a relation, not the names of the entities it saw in training.
A curated KB whose distinct names the graph would merge (case, articles, punctuation) is
renamed apart with :func:`distinct_names` before it is loaded.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from knowledge.errors import KnowledgeError

MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_QUESTION_CHARS = 2000
_BRACKET = re.compile(r"\[([^\[\]]{1,300})\]")
_HEADERS = [["head", "relation", "tail"], ["subject", "relation", "object"], ["s", "r", "o"],
            ["subject", "predicate", "object"]]  # fmt: skip
_PQ_ANSWER = re.compile(r"^(.*?)\((.*)\)\s*$")


class KGQADataError(KnowledgeError):
    """A KGQA data file cannot be read; the message names the file and line."""


@dataclass
class KGQAExample:
    """One question. ``topic`` is the entity the question is about, when the data marks it."""

    question: str
    answers: list[str]
    topic: str | None = None
    qtype: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def masked(self) -> str:
        return mask_question(self.question, self.topic)


def mask_question(question: str, topic: str | None) -> str:
    """Replace the topic mention (``[X]``, or the topic's surface form) with ``NE``."""
    q = _BRACKET.sub("NE", question)
    if topic and q == question:
        for form in (topic, topic.replace("_", " ")):
            if form and form in q:
                q = q.replace(form, "NE")
                break
    return " ".join(q.split())


def entity_text(name: str) -> str:
    """How an entity name is written when it is embedded (underscores read as spaces)."""
    return " ".join(name.replace("_", " ").split())


def _open_text(path: Path) -> list[str]:
    if not path.is_file():
        raise KGQADataError(f"KGQA data file not found: {path}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise KGQADataError(f"{path.name}: {size} bytes is over the {MAX_FILE_BYTES} byte limit")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise KGQADataError(f"{path.name}: broken gzip file ({exc})") from exc
        if len(raw) > MAX_FILE_BYTES:
            raise KGQADataError(f"{path.name}: decompressed size is over the limit")
    if b"\x00" in raw[:65536]:
        raise KGQADataError(f"{path.name}: looks like a binary file, expected text lines")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KGQADataError(f"{path.name}: not UTF-8 text ({exc})") from exc
    return text.splitlines()


def parse_line(line: str, where: str = "") -> KGQAExample | None:
    """Parse one line of any supported format; ``None`` for blank lines and comments."""
    s = line.strip()
    if not s or s.startswith("#"):
        return None
    if s.startswith("{"):
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as exc:
            raise KGQADataError(f"{where}: invalid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("question"), str):
            raise KGQADataError(f'{where}: expected an object with a "question" string')
        answers = obj.get("answers", obj.get("answer"))
        if isinstance(answers, str):
            answers = [answers]
        if not isinstance(answers, list) or not answers:
            raise KGQADataError(f'{where}: "answers" must be a non-empty list of strings')
        topic = obj.get("topic")
        return _checked(obj["question"], [str(a) for a in answers], topic, where)
    parts = line.rstrip("\n").split("\t")
    if len(parts) < 2:
        raise KGQADataError(f"{where}: expected 'question<TAB>answers', got {s[:60]!r}")
    question, ans = parts[0].strip(), parts[1].strip()
    m = _PQ_ANSWER.match(ans) if len(parts) >= 3 else None
    if m:  # PathQuestion: "x(x/y/)"; the third column (gold path) is deliberately ignored
        answers = [a for a in m.group(2).split("/") if a] or [m.group(1)]
        return _checked(question, answers, None, where)
    answers = [a.strip() for a in ans.split("|") if a.strip()]
    br = _BRACKET.search(question)
    return _checked(question, answers, br.group(1).strip() if br else None, where)


def _checked(question: str, answers: list[str], topic, where: str) -> KGQAExample:
    if not question.strip():
        raise KGQADataError(f"{where}: empty question")
    if len(question) > MAX_QUESTION_CHARS:
        raise KGQADataError(f"{where}: question longer than {MAX_QUESTION_CHARS} characters")
    if not answers:
        raise KGQADataError(f"{where}: no answers")
    if topic is not None and not isinstance(topic, str):
        raise KGQADataError(f'{where}: "topic" must be a string')
    return KGQAExample(question=question.strip(), answers=answers, topic=topic)


def read_kgqa(path: str | Path, limit: int | None = None) -> list[KGQAExample]:
    """Read a KGQA file (MetaQA, PathQuestion or JSONL; gzip allowed)."""
    path = Path(path)
    out: list[KGQAExample] = []
    for i, line in enumerate(_open_text(path), start=1):
        ex = parse_line(line, f"{path.name}:{i}")
        if ex is not None:
            out.append(ex)
            if limit is not None and len(out) >= limit:
                break
    if not out:
        raise KGQADataError(f"{path.name}: no questions found")
    return out


def read_flags(path: str | Path) -> list[int]:
    """A MetaQA ``*_all_answers_reachable.txt`` file: one 0/1 per question."""
    return [int(x) for x in _open_text(Path(path)) if x.strip()]


def read_kb(path: str | Path) -> list[tuple[str, str, str]]:
    """A KB file of ``subject<TAB>relation<TAB>object`` or ``subject|relation|object`` lines."""
    path = Path(path)
    out: list[tuple[str, str, str]] = []
    for i, line in enumerate(_open_text(path), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = [p.strip() for p in (s.split("\t") if "\t" in s else s.split("|"))]
        parts = [p for p in parts if p]
        if not out and [p.lower() for p in parts] in _HEADERS:
            continue  # a header row
        if len(parts) != 3:
            raise KGQADataError(f"{path.name}:{i}: expected 3 fields, got {len(parts)}")
        out.append((parts[0], parts[1], parts[2]))
    return out


def link_underscored(question: str, entities: set[str]) -> str | None:
    """Topic of a PathQuestion-style question: the longest token that names a KB entity."""
    best = None
    for tok in question.split():
        if tok in entities and (best is None or len(tok) > len(best)):
            best = tok
    return best


def distinct_names(triples: list[tuple[str, str, str]]) -> dict[str, str]:
    """Renames that keep apart KB entities whose names only differ in case, articles or marks.

    :class:`knowledge.graph.KnowledgeGraph` keys entities by a normalised name (lower case,
    no leading article, no punctuation), which suits text from users but merges different
    entities of a curated KB: in MetaQA "The Unknown" (1927) and "Unknown" (2011) become one
    film, "Help!" and "The Help" too, and the tag "hotel" swallows the film "Hotel" (then
    "describe Hotel" has the topic as its answer). Within each group of names that normalise
    alike, the most frequent keeps its name and the others get a ``#n`` suffix, which
    normalises differently. Apply the map to the KB and to every question (:func:`rename`).
    """
    from knowledge.graph import normalize

    count: dict[str, int] = {}
    for s, _, o in triples:
        count[s] = count.get(s, 0) + 1
        count[o] = count.get(o, 0) + 1
    groups: dict[str, list[str]] = {}
    for name in count:
        groups.setdefault(normalize(name), []).append(name)
    taken = set(groups)
    out: dict[str, str] = {}
    for names in groups.values():
        if len(names) < 2:
            continue
        names.sort(key=lambda n: (-count[n], n))
        n = 1
        for name in names[1:]:
            while True:
                n += 1
                new = f"{name} #{n}"
                if normalize(new) not in taken:
                    break
            taken.add(normalize(new))
            out[name] = new
    return out


def rename(
    triples: list[tuple[str, str, str]], examples: list[KGQAExample], names: dict[str, str]
) -> list[tuple[str, str, str]]:
    """Apply :func:`distinct_names` renames to ``examples`` (in place) and return the triples."""
    for ex in examples:
        if ex.topic is not None:
            ex.topic = names.get(ex.topic, ex.topic)
        ex.answers = [names.get(a, a) for a in ex.answers]
    return [(names.get(s, s), r, names.get(o, o)) for s, r, o in triples]
