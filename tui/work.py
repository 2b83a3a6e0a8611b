"""What the long jobs do, apart from the UI: each takes the assistant and a progress callback
``on_progress(done, total, info)`` and returns a one-line summary. They run in worker threads.

Cancellation works by the callback raising :class:`JobCancelled` between steps, so each job
stops at a point where its own code keeps saved state consistent (ingest commits per file,
LM training keeps its last checkpoint).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

ProgressFn = Callable[[int, int, dict[str, Any]], None]

#: Wall-clock budget of ``/train lm`` from the chat (the CLI offers every option).
LM_TIME_BUDGET_S = 90.0


class JobCancelled(Exception):
    """Raised from a progress callback to stop a job."""


class JobError(Exception):
    """A job cannot start or failed; the message is shown as a notification."""


def ingest(bot: Any, paths: list[str], on_progress: ProgressFn) -> str:
    if getattr(bot, "knowledge", None) is None:
        raise JobError("the knowledge base is not available in this session")
    resolved = []
    for p in paths:
        path = Path(p).expanduser()
        if not path.is_absolute():
            path = bot.project.root / path if (bot.project.root / path).exists() else path.resolve()
        if not path.exists():
            raise JobError(f"no such file or folder: {p}")
        resolved.append(path)
    report = bot.ingest(resolved, show_progress=False, on_progress=on_progress)
    msg = (
        f"ingested: {len(report.added)} added, {len(report.updated)} updated, "
        f"{len(report.unchanged)} unchanged, {report.chunks} chunks in {report.seconds:.1f}s"
    )
    if report.errors:
        first_path, first_err = report.errors[0]
        msg += f"; {len(report.errors)} skipped ({Path(first_path).name}: {first_err})"
    return msg


def train_router(bot: Any, on_progress: ProgressFn) -> str:
    on_progress(0, 1, {})
    stats = bot.train_router(force=True)
    on_progress(1, 1, {})
    return (
        f"router trained on {stats.get('examples', '?')} examples, "
        f"{stats.get('intents', '?')} intents in {float(stats.get('seconds', 0.0)):.1f}s"
    )


def train_lm(bot: Any, on_progress: ProgressFn, time_budget_s: float = LM_TIME_BUDGET_S) -> str:
    """Train the project's small LM from ``lm.corpus`` / ``lm.dialogues`` (or the demo corpus)."""
    cfg = getattr(bot.config, "lm", None)
    root = bot.project.root
    corpus = [root / c for c in getattr(cfg, "corpus", [])]
    dlg = getattr(cfg, "dialogues", None)
    dialogues = root / dlg if dlg else None
    if bot.project.is_demo and not corpus:
        corpus = [root / "corpus"]
        dialogues = root / "corpus" / "dialogues.jsonl"
    corpus = [c for c in corpus if c.exists()]
    if not corpus and not (dialogues is not None and dialogues.is_file()):
        raise JobError("no training text: set lm.corpus (and lm.dialogues) in llmos.yaml")

    from lm.data import read_chat_jsonl, read_corpus
    from lm.demo import DEMO_CONFIG, render_dialogue
    from lm.train import TrainConfig
    from lm.train import train_lm as _train

    docs = read_corpus(corpus) if corpus else []
    if dialogues is not None and dialogues.is_file():
        docs += [render_dialogue(c) for c in read_chat_jsonl(dialogues)]
    if not docs:
        raise JobError("no training text: set lm.corpus (and lm.dialogues) in llmos.yaml")
    out = bot.project.model_dir("lm")
    result = _train(
        [],
        out,
        TrainConfig(time_budget_s=time_budget_s, **DEMO_CONFIG),
        documents=docs,
        on_progress=on_progress,
        show_progress=False,
    )
    loader = getattr(bot, "load_language_model", None)
    loaded = bool(loader()) if callable(loader) else False
    return (
        f"language model trained: {result.step} steps, val loss {result.best_val_loss:.3f}, "
        f"saved to {out}" + ("; now in use" if loaded else "")
    )


def train_translator(bot: Any, args: list[str], on_progress: ProgressFn) -> str:
    """``/train translator PAIRS SRC TGT``: a 20-minute translator run on the user's pairs."""
    if len(args) != 3:
        raise JobError(
            "usage: /train translator PAIRS.tsv SRC TGT (for example: pairs.tsv en de); "
            "longer runs: llmos train translator --pairs PAIRS --src en --tgt de --time 60m"
        )
    pairs, src, tgt = args
    trainer = getattr(bot, "train_translator", None)
    if trainer is None:
        raise JobError("translator training is not available in this assistant")
    out = trainer([pairs], src, tgt, on_progress=on_progress)
    return f"translator {src}->{tgt} trained, saved to {out}; now in use"


def model_lines(bot: Any) -> list[str]:
    """The sidebar's model summary: router size and eval, LM manifest figures."""
    lines = []
    router = getattr(bot, "router", None)
    if router is not None and getattr(router, "trained_at", None):
        n_ex = len(getattr(router, "example_intents", []) or [])
        n_int = len(set(getattr(router, "example_intents", []) or []))
        lines.append(f"router  {n_ex} ex, {n_int} intents")
        report = _read_json(bot.project.state / "reports" / "router_eval.json")
        acc = (report.get("intent") or {}).get("accuracy") if report else None
        if isinstance(acc, int | float):
            lines.append(f"        eval acc {acc:.2f}")
    else:
        lines.append("router  not trained")
    lm_dir = bot.project.model_dir("lm")
    manifest = _read_json(lm_dir / "best" / "llmos.json") or _read_json(lm_dir / "llmos.json")
    if manifest:
        lines.append(f"lm      {manifest.get('preset', '')} step {manifest.get('step', '?')}")
        loss, ppl = manifest.get("eval_loss"), manifest.get("perplexity")
        if isinstance(loss, int | float):
            ppl_text = f", ppl {ppl:.1f}" if isinstance(ppl, int | float) else ""
            lines.append(f"        eval loss {loss:.3f}{ppl_text}")
        params = manifest.get("parameters")
        if isinstance(params, int):
            lines.append(f"        {params / 1e6:.1f}M params")
    else:
        lines.append("lm      none (/train lm)")
    generator = getattr(getattr(bot, "services", None), "generator", None)
    if manifest and generator is None:
        lines.append("        (not loaded)")
    return lines


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
