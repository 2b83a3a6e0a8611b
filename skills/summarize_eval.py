"""Scoring summaries: data loaders, ROUGE-1/2/L, and the baselines we compare against.

Shared by ``llmos eval summarize`` and ``benchmarks/summarize.py`` so both measure the same
way: ROUGE F1 from ``rouge-score`` with the Porter stemmer on, ``rougeL`` (not ``rougeLsum``),
averaged over a pair's references when it has several (DialogSum test has three).

Data formats (one pair per row):
  * JSONL with the input in ``text``, ``dialogue`` or ``document`` (a document name in the
    bot's knowledge base) and the reference(s) in ``summary``, ``reference``, ``references``
    (a list) or ``summary1``..``summary3`` (DialogSum);
  * CSV with ``dialogue``/``text`` and ``summary`` columns (SAMSum).
"""

from __future__ import annotations

import csv
import json
import re
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skills.summarize import Params, Parsed, clean_turn, parse, summarize

METRICS = ("rouge1", "rouge2", "rougeL")


class SummaryDataError(ValueError):
    """The evaluation data cannot be read; the message says which file and row."""


@dataclass
class Pair:
    """One evaluation item: the input (or the name of a document) and its references."""

    text: str
    references: list[str]
    document: str | None = None  # a knowledge-base document to read the text from
    id: str = ""


@dataclass
class SystemScores:
    name: str
    scores: dict[str, float] = field(default_factory=dict)  # metric -> mean F1 x 100
    words: float = 0.0  # mean summary length in words
    outputs: list[str] = field(default_factory=list)


# -- loading --------------------------------------------------------------------------
_TEXT_KEYS = ("text", "dialogue", "document_text", "article", "input")
_REF_KEYS = ("summary", "reference", "summary1", "summary2", "summary3", "highlights")


def _refs(row: dict[str, Any]) -> list[str]:
    refs = row.get("references")
    if isinstance(refs, list):
        return [str(r).strip() for r in refs if str(r).strip()]
    out = []
    for k in _REF_KEYS:
        v = row.get(k)
        if isinstance(v, str) and v.strip():
            out.append(v.strip())
    return out


def _pair(row: dict[str, Any], where: str) -> Pair:
    refs = _refs(row)
    if not refs:
        raise SummaryDataError(f"{where}: no reference summary (summary, reference or references)")
    text = next((str(row[k]) for k in _TEXT_KEYS if isinstance(row.get(k), str)), "")
    doc = row.get("document")
    if not text and not (isinstance(doc, str) and doc.strip()):
        raise SummaryDataError(f"{where}: no input (text, dialogue or document)")
    pid = str(row.get("id") or row.get("fname") or "")
    return Pair(text, refs, doc.strip() if isinstance(doc, str) and not text else None, pid)


def load_pairs(path: str | Path, limit: int | None = None) -> list[Pair]:
    """Pairs from a JSONL or CSV file (formats in the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise SummaryDataError(f"no such file: {path}")
    pairs: list[Pair] = []
    try:
        if path.suffix.lower() == ".csv":
            with path.open(encoding="utf-8", newline="") as fh:
                for i, row in enumerate(csv.DictReader(fh), start=2):
                    pairs.append(_pair(row, f"{path.name} line {i}"))
                    if limit and len(pairs) >= limit:
                        break
        else:
            with path.open(encoding="utf-8") as fh:
                for i, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise SummaryDataError(
                            f"{path.name} line {i}: not JSON ({exc.msg})"
                        ) from None
                    if not isinstance(row, dict):
                        raise SummaryDataError(f"{path.name} line {i}: expected a JSON object")
                    pairs.append(_pair(row, f"{path.name} line {i}"))
                    if limit and len(pairs) >= limit:
                        break
    except UnicodeDecodeError:
        raise SummaryDataError(f"{path.name}: not UTF-8 text") from None
    if not pairs:
        raise SummaryDataError(f"{path.name}: no summary pairs found")
    return pairs


# -- ROUGE ----------------------------------------------------------------------------
def rouge_scorer() -> Any:
    try:
        from rouge_score import rouge_scorer as rs
    except ImportError:  # pragma: no cover - part of the eval extra
        raise SummaryDataError(
            "ROUGE needs the rouge-score package: pip install 'llmos[eval]'"
        ) from None
    return rs.RougeScorer(list(METRICS), use_stemmer=True)


def rouge(scorer: Any, prediction: str, references: list[str]) -> dict[str, float]:
    """F1 x 100 per metric, averaged over the references."""
    per = [scorer.score(ref, prediction) for ref in references]
    return {m: 100 * statistics.fmean(p[m].fmeasure for p in per) for m in METRICS}


def score_system(
    name: str, outputs: list[str], pairs: list[Pair], scorer: Any | None = None
) -> SystemScores:
    scorer = scorer or rouge_scorer()
    rows = [rouge(scorer, o, p.references) for o, p in zip(outputs, pairs, strict=True)]
    means = {m: statistics.fmean(r[m] for r in rows) if rows else 0.0 for m in METRICS}
    words = statistics.fmean(len(o.split()) for o in outputs) if outputs else 0.0
    return SystemScores(name, means, words, outputs)


# -- baselines ------------------------------------------------------------------------
def lead(text: str, n: int = 3) -> str:
    """Lead-n: the first n dialogue turns as written (speaker included), or first n sentences."""
    p: Parsed = parse(text)
    if p.dialogue:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return " ".join(lines[:n])
    return " ".join(u.text for u in p.units[:n])


def plain_textrank(text: str, embedder: Any, n: int = 3) -> str:
    """Classic TextRank: PageRank over sentence similarity, top n, no priors, no rewriting."""
    plain = Params(
        position_weight=0.0, length_weight=0.0, mmr_lambda=1.0, min_words=0, rewrite=False
    )
    return summarize(text, embedder, f"sentences:{n}", params=plain).text


def clean_lead(text: str, n: int = 3) -> str:
    """Lead-n after dropping fillers from each turn (isolates the effect of our clean-up)."""
    p = parse(text)
    if not p.dialogue:
        return lead(text, n)
    seen: list[str] = []
    last_turn = -1
    for u in p.units:
        c = clean_turn(u.text)
        if u.turn != last_turn:
            if len(seen) >= n:
                break
            seen.append(f"{u.speaker}: {c}")
            last_turn = u.turn
        else:
            seen[-1] += " " + c
    return " ".join(seen)


def run_systems(
    pairs: list[Pair],
    systems: dict[str, Callable[[str], str]],
    progress: Callable[[str, int, int], None] | None = None,
) -> list[SystemScores]:
    """Each system's outputs on every pair, scored side by side."""
    scorer = rouge_scorer()
    results = []
    for name, fn in systems.items():
        outs = []
        for i, p in enumerate(pairs):
            outs.append(fn(p.text))
            if progress is not None:
                progress(name, i + 1, len(pairs))
        results.append(score_system(name, outs, pairs, scorer))
    return results


def markdown_table(results: Iterable[SystemScores], title: str = "") -> str:
    lines = [f"### {title}", ""] if title else []
    lines += ["| system | ROUGE-1 | ROUGE-2 | ROUGE-L | words |", "|---|---:|---:|---:|---:|"]
    for r in results:
        s = r.scores
        lines.append(
            f"| {r.name} | {s['rouge1']:.2f} | {s['rouge2']:.2f} | {s['rougeL']:.2f} | {r.words:.1f} |"
        )
    return "\n".join(lines)


def words_of(text: str) -> int:
    return len(re.findall(r"\S+", text))
