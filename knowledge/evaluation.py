"""Evaluate answers and retrieval of a knowledge base from JSONL files.

QA file, one object a line: ``{"question", "answer", "source"?}``; an answer counts as right
when the expected text occurs in it (case and spacing ignored) and, if ``source`` is given,
a citation names that file or FAQ question. Retrieval file: ``{"query", "relevant": [...]}``
where each relevant entry is a document file name or a FAQ question. Reports are written
as Markdown and JSON (atomically) so they can be diffed between runs.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from knowledge.atomic import atomic_write
from knowledge.errors import KnowledgeError

MAX_EVAL_BYTES = 20 * 1024 * 1024


def _norm(s: str) -> str:
    return " ".join(re.findall(r"[^\W_]+", s.lower()))


def load_jsonl(path: str | Path, required: tuple[str, ...]) -> list[dict]:
    """Rows of a JSONL file, each checked for ``required`` keys; KnowledgeError names the line."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_EVAL_BYTES:
            raise KnowledgeError(f"{p}: evaluation file larger than {MAX_EVAL_BYTES >> 20} MB")
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise KnowledgeError(f"{p}: cannot read ({exc.strerror or exc})") from exc
    rows = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise KnowledgeError(f"{p}: line {i} is not valid JSON ({exc})") from exc
        if not isinstance(obj, dict) or any(k not in obj for k in required):
            raise KnowledgeError(f"{p}: line {i} needs the keys {', '.join(required)}")
        rows.append(obj)
    if not rows:
        raise KnowledgeError(f"{p}: no evaluation rows")
    return rows


def _cites(citations: list, source: str) -> bool:
    """Does an answer cite ``source`` ("faq" matches faq.csv, "warranty.md" matches itself)?"""
    want = {_norm(Path(source).name), _norm(Path(source).stem)}
    for c in citations:
        names = {_norm(c.title)}
        if c.ref:
            names |= {_norm(Path(c.ref).name), _norm(Path(c.ref).stem)}
        if want & names:
            return True
    return False


def _context_of(kb: Any, earlier: Any) -> dict:
    """Ask a row's earlier questions in order, as one conversation; return the context the
    row's own question then gets (the QA skill carries the same between turns)."""
    if earlier is None:
        return {}
    if not isinstance(earlier, list) or not all(isinstance(q, str) for q in earlier):
        raise KnowledgeError('a row\'s "context" must be a list of earlier questions')
    context: dict = {}
    for q in earlier:
        context = kb.answer(q, context=context).follow_up(q, context)
    return context


def eval_qa(kb: Any, rows: list[dict]) -> dict:
    """Answer accuracy, found rate and source accuracy over QA rows.

    A row may carry ``"context": [earlier questions]``: they are asked first in the same
    conversation, so follow-ups ("who makes it?", "and the Brio grinder?") are scored too.
    """
    details, t0 = [], time.perf_counter()
    for r in rows:
        ans = kb.answer(str(r["question"]), context=_context_of(kb, r.get("context")))
        expected = str(r["answer"])
        right = bool(ans.found and _norm(expected) and _norm(expected) in _norm(ans.text))
        src_ok = _cites(ans.citations, str(r["source"])) if r.get("source") else None
        details.append({"question": r["question"], "context": r.get("context") or [],
                        "expected": expected, "got": ans.text,
                        "kind": ans.kind, "found": ans.found, "correct": right,
                        "source_ok": src_ok, "confidence": round(ans.confidence, 4)})  # fmt: skip
    n = len(details)
    with_src = [d["source_ok"] for d in details if d["source_ok"] is not None]
    return {
        "kind": "qa",
        "n": n,
        "accuracy": sum(d["correct"] for d in details) / n,
        "found_rate": sum(d["found"] for d in details) / n,
        "source_accuracy": (sum(with_src) / len(with_src)) if with_src else None,
        "seconds": time.perf_counter() - t0,
        "details": details,
    }


def eval_retrieval(kb: Any, rows: list[dict], k: int = 5) -> dict:
    """MAP, MRR, recall@k and P@k; results are de-duplicated by document / FAQ question."""
    aps, rrs, recalls, precs, details = [], [], [], [], []
    t0 = time.perf_counter()
    for r in rows:
        relevant = {_norm(Path(str(x)).name) for x in (r["relevant"] or [])}
        if not relevant:
            raise KnowledgeError(f"query {r['query']!r}: 'relevant' is empty")
        ranked: list[str] = []
        for p in kb.search(str(r["query"]), k=max(4 * k, 20)):
            key = _norm(p.citation.title)
            if key not in ranked:
                ranked.append(key)
        hits, ap, rr = 0, 0.0, 0.0
        for i, key in enumerate(ranked, start=1):
            if key in relevant:
                hits += 1
                ap += hits / i
                rr = rr or 1.0 / i
        top = ranked[:k]
        aps.append(ap / len(relevant))
        rrs.append(rr)
        recalls.append(len(relevant & set(top)) / len(relevant))
        precs.append(sum(t in relevant for t in top) / k)
        details.append({"query": r["query"], "relevant": sorted(relevant), "top": top})
    return {
        "kind": "retrieval",
        "n": len(rows),
        "k": k,
        "MAP": float(np.mean(aps)),
        "MRR": float(np.mean(rrs)),
        f"recall@{k}": float(np.mean(recalls)),
        f"P@{k}": float(np.mean(precs)),
        "seconds": time.perf_counter() - t0,
        "details": details,
    }


def write_report(report: dict, out_dir: Path, name: str) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` into ``out_dir`` atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in report.items() if k != "details"}
    lines = [f"# {name}", "", f"Date: {time.strftime('%Y-%m-%d %H:%M')}", "",
             "| metric | value |", "|---|---|"]  # fmt: skip
    for key, v in summary.items():
        lines.append(f"| {key} | {v:.4f} |" if isinstance(v, float) else f"| {key} | {v} |")
    if report["kind"] == "qa":
        wrong = [d for d in report["details"] if not d["correct"]][:20]
        if wrong:
            lines += [
                "",
                "## Misses (first 20)",
                "",
                "| question | expected | got |",
                "|---|---|---|",
            ]
            lines += [f"| {_cell(' → '.join([*d.get('context', []), d['question']]))} | "
                      f"{_cell(d['expected'])} | {_cell(d['got'])} |" for d in wrong]  # fmt: skip
    paths = (out_dir / f"{name}.json", out_dir / f"{name}.md")
    atomic_write(paths[0], json.dumps(report, indent=2, ensure_ascii=False).encode("utf-8"))
    atomic_write(paths[1], ("\n".join(lines) + "\n").encode("utf-8"))
    return paths


def _cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")[:120]
