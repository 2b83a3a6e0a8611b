"""CLI for summaries: ``llmos eval summarize --data FILE``.

Scores the bot's summarizer with ROUGE-1/2/L (rouge-score, stemming on) against the
references in FILE, beside the Lead-3 baseline and plain TextRank, and writes a Markdown and a
JSON report. FILE is JSONL (``text``/``dialogue``/``document`` + ``summary``/``reference``/
``references``/``summary1..3``) or a SAMSum-style CSV; a ``document`` names a file in the
project's knowledge base, read from there. Heavy imports happen inside the command.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from assistant.errors import InputError, LlmosError

PROJECT_HELP = "Bot project directory (default: current dir or the demo)."


def register(app: typer.Typer, train_app: typer.Typer, eval_app: typer.Typer) -> None:
    @eval_app.command("summarize")
    def eval_summarize_cmd(
        data: Path = typer.Option(
            ..., "--data", help="JSONL or CSV of texts (or document names) and reference summaries."
        ),
        project: str | None = typer.Option(None, "--project", "-p", help=PROJECT_HELP),
        length: str | None = typer.Option(
            None, "--length", help="sentences:N, words:N or ratio:F (default: adapts to the input)."
        ),
        model: Path | None = typer.Option(
            None,
            "--model",
            help="Abstractive summarizer dir to score too (default: <project>/models/summarizer if trained).",
        ),
        limit: int | None = typer.Option(
            None, "--limit", min=1, help="Score only the first N pairs."
        ),
        out: Path | None = typer.Option(
            None, "--out", help="Report directory (default: <project>/reports)."
        ),
    ) -> None:
        """ROUGE of the summarizer on reference summaries, with Lead-3 and TextRank beside it."""
        from assistant.project import resolve_project

        _check_length(length)
        proj = resolve_project(project)
        report = evaluate(proj, data, length=length, model_dir=model, limit=limit)
        md, js = write_report(report, out or proj.state / "reports")
        for row in report["systems"]:
            s = row["scores"]
            typer.echo(
                f"{row['name']:<28} ROUGE-1 {s['rouge1']:6.2f}  ROUGE-2 {s['rouge2']:6.2f}  "
                f"ROUGE-L {s['rougeL']:6.2f}  ({row['words']:.0f} words)"
            )
        typer.echo(f"{report['n']} pairs in {report['seconds']:.1f}s; report: {md} and {js}")


def _check_length(spec: str | None) -> None:
    if spec is None:
        return
    kind, _, value = spec.partition(":")
    try:
        ok = (kind in ("sentences", "words") and int(value) > 0) or (
            kind == "ratio" and 0 < float(value) <= 1
        )
    except ValueError:
        ok = False
    if not ok:
        raise InputError(f"--length {spec!r}: use sentences:N, words:N or ratio:F (0 < F <= 1)")


def _texts_from_documents(proj: Any, pairs: list[Any], embedder: Any) -> None:
    """Fill in the text of pairs that name a knowledge-base document instead of giving text."""
    if not any(p.document for p in pairs):
        return
    from assistant.commands.knowledge_cmds import _ingest_sources
    from assistant.config import load_config
    from knowledge.base import KnowledgeBase
    from knowledge.errors import KnowledgeError

    cfg = load_config(proj.config_file)
    try:
        # the index settings the chat opens it with, or opening would rebuild the index
        kb = KnowledgeBase.open(proj.knowledge_store, embedder, **cfg.knowledge.index_options())
    except KnowledgeError as exc:
        raise LlmosError(str(exc)) from None
    try:
        _ingest_sources(proj, kb, cfg)  # the documents as the chat sees them
        for p in pairs:
            if p.document:
                found = kb.document_text(p.document)
                if found is None:
                    raise InputError(
                        f"document {p.document!r} is not in the knowledge base of {proj.root}"
                    )
                p.text = found[1]
    except KnowledgeError as exc:
        raise LlmosError(str(exc)) from None
    finally:
        kb.close()


def evaluate(
    proj: Any,
    data: Path,
    *,
    length: str | None = None,
    model_dir: Path | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Outputs and ROUGE of every system on ``data``; the report :func:`write_report` writes."""
    from tqdm import tqdm

    from knowledge.embed import Embedder
    from skills.summarize import summarize
    from skills.summarize_eval import (
        SummaryDataError,
        lead,
        load_pairs,
        plain_textrank,
        run_systems,
    )

    try:
        pairs = load_pairs(data, limit=limit)
    except SummaryDataError as exc:
        raise InputError(str(exc)) from None
    embedder = Embedder(cache_path=proj.knowledge_store / "embed_cache.db")
    try:
        _texts_from_documents(proj, pairs, embedder)
    except BaseException:
        embedder.close()
        raise
    systems: dict[str, Any] = {
        "llmos extractive": lambda t: summarize(t, embedder, length).text,
        "Lead-3": lead,
        "TextRank (plain)": lambda t: plain_textrank(t, embedder),
    }
    abstractive = _load_abstractive(proj, model_dir)
    if abstractive is not None:
        name = f"llmos abstractive ({abstractive.name})"
        systems[name] = lambda t: abstractive.summarize(t)
    bar = tqdm(total=len(pairs) * len(systems), unit="summary", disable=None, leave=False)
    t0 = time.perf_counter()
    try:
        results = run_systems(pairs, systems, progress=lambda *_: bar.update(1))
    except SummaryDataError as exc:
        raise InputError(str(exc)) from None
    finally:
        bar.close()
        embedder.close()
    return {
        "kind": "summarize",
        "data": str(data),
        "n": len(pairs),
        "length": length or "auto",
        "metric": "ROUGE F1 x 100 (rouge-score, Porter stemmer, rougeL), mean over references",
        "seconds": round(time.perf_counter() - t0, 2),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "systems": [
            {
                "name": r.name,
                "scores": {k: round(v, 2) for k, v in r.scores.items()},
                "words": round(r.words, 1),
            }
            for r in results
        ],
        "examples": [
            {
                "id": p.id or p.document or str(i),
                "reference": p.references[0],
                **{r.name: r.outputs[i] for r in results},
            }
            for i, p in enumerate(pairs[:10])
        ],
    }


def _load_abstractive(proj: Any, model_dir: Path | None) -> Any:
    path = model_dir or proj.model_dir("summarizer")
    if model_dir is None and not path.exists():
        return None
    if not path.exists():
        raise InputError(f"no summarizer model at {path}")
    from lm.errors import LMError
    from lm.seq2seq import load_summarizer

    try:
        return load_summarizer(path)
    except LMError as exc:
        raise LlmosError(str(exc)) from None


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """``summarize_eval.md`` and ``summarize_eval.json`` in ``out_dir``, written atomically."""
    from knowledge.atomic import atomic_write
    from skills.summarize_eval import SystemScores, markdown_table

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [SystemScores(r["name"], r["scores"], r["words"]) for r in report["systems"]]
    lines = [
        "# Summarization eval",
        "",
        f"Data: `{report['data']}` ({report['n']} pairs), length {report['length']}, "
        f"{report['date']}. {report['metric']}.",
        "",
        markdown_table(rows),
        "",
        "## Examples",
        "",
    ]
    for ex in report["examples"][:5]:
        lines.append(f"**{ex['id']}**: reference: {ex['reference']}")
        lines.append("")
        for r in rows:
            lines.append(f"- {r.name}: {ex[r.name]}")
        lines.append("")
    md, js = out_dir / "summarize_eval.md", out_dir / "summarize_eval.json"
    atomic_write(js, json.dumps(report, indent=2, ensure_ascii=False).encode("utf-8"))
    atomic_write(md, ("\n".join(lines) + "\n").encode("utf-8"))
    return md, js
