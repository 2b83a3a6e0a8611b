"""`llmos eval`: every evaluation that applies to a bot project, in one report.

A bot project keeps its evaluation files in ``eval/`` (the directory is set by ``eval.dir``
in ``llmos.yaml``); each file that is present, and whose model exists, adds a section:

    router.yaml       router accuracy, macro-F1 and a confusion matrix (held-out utterances)
    retrieval.jsonl   MAP / MRR / recall@5 of knowledge search
    qa.jsonl          answer accuracy and source accuracy of the knowledge base
    kgqa.jsonl        hits@1 of the graph reasoner
    translate.tsv     BLEU / chrF of the local translator for the file's language pair
    summarize.jsonl   ROUGE-1/2/L of the summarizer (and Lead-3 beside it)
    lm.txt            loss and perplexity of the local language model
    (router.yaml)     turn latency: its utterances sent through the whole dialogue manager

The report (``eval_report.md``, ``eval_report.json``, ``eval_metrics.png`` and
``eval_history.png``) puts each figure beside its value from the previous run, read from
``eval_history.jsonl`` in the same directory, so a regression shows. ``--fail-under`` /
``--fail-over`` turn it into a gate for a user's CI. A section that cannot run says why
(no model trained yet, file missing) instead of failing the whole report.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assistant.errors import InputError, LlmosError
from knowledge.atomic import atomic_write

LOG = logging.getLogger(__name__)

#: Metrics where a smaller value is better; every other metric is better when larger.
LOWER_IS_BETTER = {"lm.loss", "lm.perplexity", "latency.p50_ms", "latency.p95_ms"}

ProgressFn = Callable[[str], None]


@dataclass
class Section:
    name: str
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    seconds: float = 0.0


@dataclass
class Report:
    project: str
    created: float
    sections: list[Section]
    previous: dict[str, float]
    failures: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.sections:
            out.update({f"{s.name}.{k}": v for k, v in s.metrics.items()})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.created)),
            "metrics": self.metrics,
            "previous": self.previous,
            "failures": self.failures,
            "sections": [
                {
                    "name": s.name,
                    "metrics": s.metrics,
                    "skipped": s.skipped,
                    "seconds": round(s.seconds, 2),
                    "details": s.details,
                }
                for s in self.sections
            ],
        }


def parse_thresholds(specs: list[str], flag: str) -> dict[str, float]:
    """``["router.accuracy=0.9", ...]`` -> ``{"router.accuracy": 0.9}``, with clear errors."""
    out: dict[str, float] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            out[key.strip()] = float(value)
        except ValueError:
            raise InputError(
                f"{flag} expects METRIC=VALUE (e.g. router.accuracy=0.9), got {spec!r}"
            ) from None
    return out


# -- the sections ------------------------------------------------------------------------
def _router(bot: Any, path: Path, out_dir: Path, opts: dict[str, Any]) -> Section:
    from assistant.evaluation import evaluate_router

    r = evaluate_router(bot, path, out_dir)
    return Section(
        "router",
        {
            "accuracy": r["intent"]["accuracy"],
            "macro_f1": r["intent"]["macro_f1"],
            "skill_accuracy": r["skill_accuracy"],
        },
        {"examples": r["examples"], "confusion_png": "router_confusion.png"},
    )


def _retrieval(bot: Any, path: Path, out_dir: Path, opts: dict[str, Any]) -> Section:
    from knowledge.evaluation import eval_retrieval, load_jsonl

    if bot.knowledge is None:
        return Section("retrieval", skipped="the knowledge base is not open")
    r = eval_retrieval(bot.knowledge, load_jsonl(path, ("query", "relevant")), k=5)
    return Section(
        "retrieval",
        {"MAP": r["MAP"], "MRR": r["MRR"], "recall@5": r["recall@5"], "P@5": r["P@5"]},
        {"queries": r["n"]},
    )


def _qa(bot: Any, path: Path, out_dir: Path, opts: dict[str, Any]) -> Section:
    from knowledge.evaluation import eval_qa, load_jsonl

    if bot.knowledge is None:
        return Section("qa", skipped="the knowledge base is not open")
    r = eval_qa(bot.knowledge, load_jsonl(path, ("question", "answer")))
    metrics = {"accuracy": r["accuracy"], "found_rate": r["found_rate"]}
    if r["source_accuracy"] is not None:
        metrics["source_accuracy"] = r["source_accuracy"]
    wrong = [d for d in r["details"] if not d["correct"]][:10]
    return Section("qa", metrics, {"questions": r["n"], "wrong": wrong})


def _kgqa(bot: Any, path: Path, out_dir: Path, opts: dict[str, Any]) -> Section:
    from knowledge.graph import KnowledgeGraph
    from knowledge.kgqa_data import read_kgqa
    from knowledge.kgqa_train import evaluate_reasoner

    kg = KnowledgeGraph.load(bot.project.knowledge_store / "graph.json")
    if kg.stats()["facts"] == 0:
        return Section("kgqa", skipped="the knowledge graph is empty (no triples ingested)")
    r = evaluate_reasoner(kg, read_kgqa(path), bot.embedder, bot.project.model_dir("gnn"))
    misses = [e for e in r["examples"] if not e["hit"]][:10]
    return Section(
        "kgqa",
        {"hits@1": r["hits_at_1"]},
        {"questions": r["questions"], "reasoner": r["mode"], "misses": misses},
    )


def _translate(bot: Any, path: Path, out_dir: Path, opts: dict[str, Any]) -> Section:
    import csv

    with path.open(encoding="utf-8", newline="") as fh:
        header = next(csv.reader(fh, delimiter="\t"), [])
    if len(header) < 2:
        raise InputError(
            f"{path.name}: the first line must name the two languages (e.g. en<TAB>de)"
        )
    src, tgt = header[0].strip().lower(), header[1].strip().lower()
    translator = getattr(bot.services, "translator", None)
    if translator is None or not translator.supports(src, tgt):
        return Section(
            "translate",
            skipped=f"no {src}-{tgt} translation model; train one with "
            f"`llmos train translator --pairs PAIRS.tsv --src {src} --tgt {tgt}`",
        )
    from lm.seq2seq_data import read_pairs
    from lm.translator import evaluate_translation

    pairs = read_pairs([path], src, tgt)
    r = evaluate_translation(translator, pairs, src=src, tgt=tgt)
    return Section(
        "translate",
        {"bleu": r["bleu"], "chrf": r["chrf"]},
        {"pair": f"{src}-{tgt}", "sentences": len(pairs), "model": translator.name(src, tgt)},
    )


def _summarize(bot: Any, path: Path, out_dir: Path, opts: dict[str, Any]) -> Section:
    from skills.summarize import summarize
    from skills.summarize_eval import lead, load_pairs, run_systems

    pairs = load_pairs(path)
    for p in pairs:
        if p.document:
            found = bot.knowledge.document_text(p.document) if bot.knowledge else None
            if found is None:
                raise InputError(f"document {p.document!r} is not in the knowledge base")
            p.text = found[1]
    systems: dict[str, Callable[[str], str]] = {
        "ours": lambda t: summarize(t, bot.embedder).text,
        "lead3": lead,
    }
    summarizer = getattr(bot.services, "summarizer", None)
    if summarizer is not None:
        systems["abstractive"] = lambda t: summarizer.summarize(t)
    scores = {r.name: r.scores for r in run_systems(pairs, systems)}
    # rouge-score F1 x 100 -> a fraction, like every other figure in the report
    metrics = {k: scores["ours"][k] / 100 for k in ("rouge1", "rouge2", "rougeL")}
    if "abstractive" in scores:
        metrics.update(
            {f"abstractive_{k}": scores["abstractive"][k] / 100 for k in ("rouge1", "rougeL")}
        )
    return Section(
        "summarize",
        metrics,
        {"texts": len(pairs), "lead3": {k: round(v / 100, 4) for k, v in scores["lead3"].items()}},
    )


def _lm(bot: Any, path: Path, out_dir: Path, opts: dict[str, Any]) -> Section:
    model_dir = bot.project.model_dir("lm")
    if not (model_dir / "config.json").exists():
        return Section("lm", skipped="no language model trained yet (`llmos train lm`)")
    from lm.evaluate import evaluate_lm

    r = evaluate_lm(model_dir, path)
    return Section(
        "lm",
        {"loss": r["loss"], "perplexity": r["perplexity"]},
        {"tokens": r["tokens"]},
    )


def _latency(bot: Any, path: Path, out_dir: Path, opts: dict[str, Any]) -> Section:
    """Whole turns (routing, skill, storage) for the router file's utterances, in a scratch session."""
    from assistant.evaluation import load_eval_file

    texts = [t for t, _ in load_eval_file(path)][: int(opts.get("latency_turns", 60))]
    sid = bot.new_session(title="llmos eval (latency)")
    times = []
    try:
        for text in texts:
            t0 = time.perf_counter()
            bot.chat(text, sid)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        bot.store.delete(sid)
    return Section(
        "latency",
        {
            "p50_ms": float(np.percentile(times, 50)),
            "p95_ms": float(np.percentile(times, 95)),
        },
        {"turns": len(times)},
    )


SECTIONS: list[tuple[str, str, Callable[[Any, Path, Path, dict[str, Any]], Section]]] = [
    ("router", "router.yaml", _router),
    ("retrieval", "retrieval.jsonl", _retrieval),
    ("qa", "qa.jsonl", _qa),
    ("kgqa", "kgqa.jsonl", _kgqa),
    ("translate", "translate.tsv", _translate),
    ("summarize", "summarize.jsonl", _summarize),
    ("lm", "lm.txt", _lm),
    ("latency", "router.yaml", _latency),
]


# -- running and writing -------------------------------------------------------------------
def run_report(
    bot: Any,
    out_dir: Path,
    *,
    only: list[str] | None = None,
    fail_under: dict[str, float] | None = None,
    fail_over: dict[str, float] | None = None,
    on_progress: ProgressFn | None = None,
    latency_turns: int = 60,
) -> Report:
    """Run every section whose file exists; write the report; check the thresholds."""
    opts = {"latency_turns": latency_turns}
    names = [n for n, _, _ in SECTIONS]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise InputError(f"unknown evaluation {', '.join(unknown)} (known: {', '.join(names)})")
    eval_dir = bot.project.root / bot.config.eval.dir
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = _previous(out_dir)
    sections: list[Section] = []
    for name, filename, fn in SECTIONS:
        if only and name not in only:
            continue
        path = eval_dir / filename
        if not path.is_file():
            sections.append(Section(name, skipped=f"no {filename} in {eval_dir}"))
            continue
        if on_progress is not None:
            on_progress(name)
        t0 = time.perf_counter()
        try:
            section = fn(bot, path, out_dir, opts)
        except LlmosError as exc:
            section = Section(name, skipped=f"{path.name}: {exc}")
        except (OSError, ValueError, KeyError) as exc:
            LOG.warning("evaluation %s failed: %s", name, exc)
            section = Section(name, skipped=f"{path.name}: {type(exc).__name__}: {exc}")
        section.seconds = time.perf_counter() - t0
        section.metrics = {k: round(float(v), 4) for k, v in section.metrics.items()}
        sections.append(section)
    report = Report(str(bot.project.root), time.time(), sections, previous)
    report.failures = check_thresholds(report.metrics, fail_under or {}, fail_over or {})
    report.files = write_report(report, out_dir)
    return report


def check_thresholds(
    metrics: dict[str, float], fail_under: dict[str, float], fail_over: dict[str, float]
) -> list[str]:
    """One line per broken threshold; a threshold on a metric that did not run also fails."""
    failures = []
    for key, limit in fail_under.items():
        value = metrics.get(key)
        if value is None:
            failures.append(f"{key}: not measured (known: {', '.join(sorted(metrics)) or 'none'})")
        elif value < limit:
            failures.append(f"{key} = {value:.4g} is under {limit:.4g}")
    for key, limit in fail_over.items():
        value = metrics.get(key)
        if value is None:
            failures.append(f"{key}: not measured (known: {', '.join(sorted(metrics)) or 'none'})")
        elif value > limit:
            failures.append(f"{key} = {value:.4g} is over {limit:.4g}")
    return failures


def _previous(out_dir: Path) -> dict[str, float]:
    """The metrics of the latest earlier run, from the history file (damaged lines skipped)."""
    path = out_dir / "eval_history.jsonl"
    if not path.is_file():
        return {}
    last: dict[str, float] = {}
    for line in path.read_text("utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
            if isinstance(row.get("metrics"), dict):
                last = {k: float(v) for k, v in row["metrics"].items()}
        except (ValueError, TypeError, AttributeError):
            continue
    return last


def _history(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / "eval_history.jsonl"
    rows = []
    if path.is_file():
        for line in path.read_text("utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("metrics"), dict):
                rows.append(row)
    return rows


def write_report(report: Report, out_dir: Path) -> list[Path]:
    data = report.to_dict()
    history = [*_history(out_dir), {"created": data["created"], "metrics": report.metrics}]
    files = [
        _write(out_dir / "eval_report.json", json.dumps(data, indent=1, default=str)),
        _write(out_dir / "eval_report.md", to_markdown(report)),
        _write(
            out_dir / "eval_history.jsonl",
            "".join(json.dumps(h, default=str) + "\n" for h in history[-200:]),
        ),
    ]
    files.append(_plot_metrics(report, out_dir / "eval_metrics.png"))
    files.append(_plot_history(history, out_dir / "eval_history.png"))
    return files


def _fmt(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.4f}" if abs(v) < 10 else f"{v:,.1f}"


def _delta(key: str, now: float, before: float | None) -> str:
    if before is None:
        return "new"
    d = now - before
    if math.isclose(d, 0.0, abs_tol=1e-9):
        return "="
    better = d < 0 if key in LOWER_IS_BETTER else d > 0
    return f"{'+' if d > 0 else ''}{d:.4g} {'better' if better else 'worse'}"


def to_markdown(report: Report) -> str:
    d = report.to_dict()
    lines = [
        "# llmos evaluation report",
        "",
        f"- project: `{report.project}`",
        f"- date: {d['created']}",
        f"- result: **{'FAILED: ' + '; '.join(report.failures) if report.failures else 'ok'}**",
        "",
        "| metric | value | previous | change |",
        "|---|---:|---:|---|",
    ]
    for key, value in report.metrics.items():
        before = report.previous.get(key)
        arrow = " (lower is better)" if key in LOWER_IS_BETTER else ""
        lines.append(
            f"| {key}{arrow} | {_fmt(value)} | {_fmt(before)} | {_delta(key, value, before)} |"
        )
    skipped = [s for s in report.sections if s.skipped]
    if skipped:
        lines += ["", "## Not evaluated", ""]
        lines += [f"- **{s.name}**: {s.skipped}" for s in skipped]
    lines += ["", "## Sections", ""]
    for s in report.sections:
        if s.skipped:
            continue
        lines.append(f"### {s.name} ({s.seconds:.1f} s)")
        for k, v in s.details.items():
            if isinstance(v, list):
                if v:
                    lines.append(f"- {k}:")
                    lines += [f"  - `{json.dumps(x, default=str)[:200]}`" for x in v[:10]]
            else:
                lines.append(f"- {k}: {v}")
        if s.name == "router":
            lines += ["", "![router confusion matrix](router_confusion.png)"]
        lines.append("")
    lines += ["![metrics](eval_metrics.png)", "", "![history](eval_history.png)", ""]
    return "\n".join(lines)


def _plot_metrics(report: Report, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in report.metrics if k not in LOWER_IS_BETTER]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.35 * len(keys) + 1)), dpi=100)
    y = np.arange(len(keys))
    ax.barh(y + 0.2, [report.metrics[k] for k in keys], height=0.4, label="now")
    ax.barh(
        y - 0.2,
        [report.previous.get(k, 0.0) for k in keys],
        height=0.4,
        label="previous",
        alpha=0.5,
    )
    ax.set_yticks(y, keys)
    ax.invert_yaxis()
    ax.set_xlabel("score (higher is better)")
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _plot_history(history: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    keys = sorted({k for h in history for k in h["metrics"] if k not in LOWER_IS_BETTER})
    for key in keys:
        xs = [i for i, h in enumerate(history) if key in h["metrics"]]
        ax.plot(xs, [history[i]["metrics"][key] for i in xs], "o-", label=key, markersize=3)
    ax.set_xlabel("run")
    ax.set_ylabel("score")
    ax.set_title("evaluation history")
    ax.grid(alpha=0.3)
    if keys:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return _write(path, buf.getvalue())


def _write(path: Path, data: str | bytes) -> Path:
    atomic_write(path, data.encode("utf-8") if isinstance(data, str) else data)
    return path
