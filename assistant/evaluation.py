"""Router evaluation: accuracy, macro-F1, a per-intent table and a confusion matrix.

Reports are written as Markdown + JSON (+ a PNG of the confusion matrix) so a person can
read them and a CI job can compare them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from assistant.config import load_intents
from assistant.errors import ConfigError


def classification_metrics(gold: list[str], pred: list[str]) -> dict[str, Any]:
    labels = sorted(set(gold) | set(pred))
    idx = {lab: i for i, lab in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=int)
    for g, p in zip(gold, pred, strict=True):
        cm[idx[g], idx[p]] += 1
    per: dict[str, dict[str, float]] = {}
    f1s = []
    for lab in sorted(set(gold)):
        i = idx[lab]
        tp = cm[i, i]
        prec = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        rec = tp / cm[i, :].sum() if cm[i, :].sum() else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per[lab] = {
            "precision": round(float(prec), 4),
            "recall": round(float(rec), 4),
            "f1": round(float(f1), 4),
            "support": int(cm[i, :].sum()),
        }
        f1s.append(f1)
    acc = float(np.trace(cm) / max(1, cm.sum()))
    return {
        "accuracy": round(acc, 4),
        "macro_f1": round(float(np.mean(f1s)) if f1s else 0.0, 4),
        "per_intent": per,
        "labels": labels,
        "confusion": cm.tolist(),
    }


def load_eval_file(path: Path) -> list[tuple[str, str]]:
    """(text, intent) pairs from an intents.yaml-style file, or a CSV/TSV of text,intent."""
    if not path.is_file():
        raise ConfigError(f"evaluation file not found: {path}")
    if path.suffix in {".yaml", ".yml"}:
        intents = load_intents(path)
        pairs = [(t, name) for name, spec in intents.items() for t in spec.examples]
    else:
        import csv

        delim = "\t" if path.suffix == ".tsv" else ","
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh, delimiter=delim))
        if rows and [c.lower() for c in rows[0][:2]] in (["text", "intent"], ["text", "label"]):
            rows = rows[1:]
        pairs = []
        for n, row in enumerate(rows, start=2):
            if len(row) < 2 or not row[0].strip():
                raise ConfigError(f"{path.name} line {n}: expected text,intent")
            pairs.append((row[0], row[1]))
    if not pairs:
        raise ConfigError(f"{path.name}: no examples to evaluate")
    return pairs


def evaluate_router(bot: Any, data: Path, out_dir: Path) -> dict[str, Any]:
    pairs = load_eval_file(data)
    known = set(bot.router.head.classes)
    gold, pred, skills_gold, skills_pred, times = [], [], [], [], []
    for text, intent in pairs:
        t0 = time.perf_counter()
        ranked, _ = bot.router.classify(text)
        times.append(time.perf_counter() - t0)
        gold.append(intent)
        pred.append(ranked[0][0])
        skills_gold.append(bot.router.intent_skill.get(intent, intent))
        skills_pred.append(bot.router.intent_skill.get(ranked[0][0], ranked[0][0]))
    metrics = classification_metrics(gold, pred)
    skill_metrics = classification_metrics(skills_gold, skills_pred)
    report = {
        "data": str(data),
        "examples": len(pairs),
        "unknown_intents": sorted(set(gold) - known),
        "intent": metrics,
        "skill_accuracy": skill_metrics["accuracy"],
        "latency_ms_p50": round(float(np.percentile(times, 50) * 1000), 2),
        "latency_ms_p95": round(float(np.percentile(times, 95) * 1000), 2),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "router_eval.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    png = out_dir / "router_confusion.png"
    _plot_confusion(metrics["labels"], np.array(metrics["confusion"]), png)
    (out_dir / "router_eval.md").write_text(_markdown(report, png.name), encoding="utf-8")
    return report


def _markdown(r: dict[str, Any], png: str) -> str:
    m = r["intent"]
    lines = [
        "# Router evaluation",
        "",
        f"Data: `{r['data']}` ({r['examples']} examples), {r['created']}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| intent accuracy | {m['accuracy']:.4f} |",
        f"| intent macro-F1 | {m['macro_f1']:.4f} |",
        f"| skill accuracy | {r['skill_accuracy']:.4f} |",
        f"| latency p50 / p95 (ms) | {r['latency_ms_p50']} / {r['latency_ms_p95']} |",
        "",
        "| intent | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for lab, v in m["per_intent"].items():
        lines.append(
            f"| {lab} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
        )
    if r["unknown_intents"]:
        lines += [
            "",
            f"Intents in the data that the router does not know: {', '.join(r['unknown_intents'])}",
        ]
    lines += ["", f"![confusion matrix]({png})", ""]
    return "\n".join(lines)


def _plot_confusion(labels: list[str], cm: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(5.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if cm[i, j] > cm.max() / 2 else "black",
                )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
