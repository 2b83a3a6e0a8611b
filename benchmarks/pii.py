"""PII recognisers: llmos ``assistant.pii`` vs naive regexes, precision/recall per kind.

    .venv/bin/python benchmarks/pii.py [--quick] [--data FILE]

The labelled sets are ``assistant/demo/eval/pii.tsv`` (used while tuning) and
``pii_heldout.tsv`` (written afterwards, scored once): customer-service messages written for
llmos with gold spans marked ``{{kind:value}}`` and hard negatives (order numbers, dates, prices,
tracking codes, Luhn-invalid cards, bad IBANs) mixed in. A prediction counts as a true positive
when kind and character span both match exactly. The baseline, in the same run, is what people
write first: an email regex, "13–19 digits" for cards (no Luhn), "2 letters + 2 digits + 11–30
alphanumerics" for IBANs (no mod-97) and ``\\+?\\d[\\d ().-]{6,}\\d`` for phones. Also times
``redact`` per message. Results: ``benchmarks/results/pii.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assistant.pii import KINDS, find_pii, redact  # noqa: E402

EVAL = ROOT / "assistant" / "demo" / "eval"
# pii.tsv was used while writing the recognisers; pii_heldout.tsv was written afterwards and
# scored once without changing the code (the honest figure).
DATA = [EVAL / "pii.tsv", EVAL / "pii_heldout.tsv"]
RESULTS = ROOT / "benchmarks" / "results"
_GOLD = re.compile(r"\{\{(\w+):(.*?)\}\}")

Span = tuple[str, int, int]


def load(path: Path) -> list[tuple[str, list[Span]]]:
    """(plain text, gold spans) per line; ``#`` lines are comments."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        text, spans, pos = [], [], 0
        last = 0
        for m in _GOLD.finditer(line):
            text.append(line[last : m.start()])
            pos += m.start() - last
            spans.append((m.group(1), pos, pos + len(m.group(2))))
            text.append(m.group(2))
            pos += len(m.group(2))
            last = m.end()
        text.append(line[last:])
        out.append(("".join(text), spans))
    return out


_NAIVE = [
    ("email", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")),
    ("card", re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")),
    ("iban", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")),
    ("phone", re.compile(r"\+?\d[\d ().-]{6,}\d")),
]


def naive(text: str) -> list[Span]:
    spans: list[Span] = []
    for kind, rx in _NAIVE:
        for m in rx.finditer(text):
            if not any(m.start() < e and s < m.end() for _, s, e in spans):
                spans.append((kind, m.start(), m.end()))
    return spans


def ours(text: str) -> list[Span]:
    return [(m.kind, m.start, m.end) for m in find_pii(text)]


def score(data: list[tuple[str, list[Span]]], predict) -> dict[str, dict[str, float]]:
    counts = {k: {"tp": 0, "fp": 0, "fn": 0} for k in KINDS}
    for text, gold in data:
        pred = set(predict(text))
        g = set(gold)
        for kind, _, _ in pred & g:
            counts[kind]["tp"] += 1
        for kind, _, _ in pred - g:
            counts[kind]["fp"] += 1
        for kind, _, _ in g - pred:
            counts[kind]["fn"] += 1
    total = {"tp": 0, "fp": 0, "fn": 0}
    for c in counts.values():
        for key in total:
            total[key] += c[key]
    out = {}
    for kind, c in [*counts.items(), ("all", total)]:
        p = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 1.0
        r = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 1.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        out[kind] = {**c, "precision": round(p, 3), "recall": round(r, 3), "f1": round(f, 3)}
    return out


def run_file(path: Path, reps: int) -> dict:
    data = load(path)
    res = {"llmos": score(data, ours), "naive regex": score(data, naive)}
    texts = [t for t, _ in data]
    t0 = time.perf_counter()
    for _ in range(reps):
        for t in texts:
            redact(t)
    us = (time.perf_counter() - t0) / (reps * len(texts)) * 1e6
    errors = []
    for text, gold in data:
        pred = set(ours(text))
        errors += [f"missed {k}: {text[s:e]!r}" for k, s, e in sorted(set(gold) - pred)]
        errors += [f"extra {k}: {text[s:e]!r}" for k, s, e in sorted(pred - set(gold))]
    print(
        f"\nPII recognisers on {path.name}: {len(data)} messages, "
        f"{sum(len(g) for _, g in data)} gold spans (exact kind + span)"
    )
    print(f"{'kind':<7}" + "".join(f"{name:>28}" for name in res))
    print(f"{'':<7}" + "".join(f"{'P':>10}{'R':>9}{'F1':>9}" for _ in res))
    for kind in [*KINDS, "all"]:
        row = "".join(
            f"{r[kind]['precision']:>10.3f}{r[kind]['recall']:>9.3f}{r[kind]['f1']:>9.3f}"
            for r in res.values()
        )
        print(f"{kind:<7}{row}")
    print(f"redact(): {us:.0f} µs per message (mean of {reps}x{len(texts)})")
    print("llmos errors:\n  " + "\n  ".join(errors or ["none"]))
    return {
        "messages": len(data),
        "results": res,
        "redact_us_per_message": round(us, 1),
        "llmos_errors": errors,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer timing repeats")
    ap.add_argument(
        "--data", type=Path, nargs="+", default=DATA, help="labelled TSVs ({{kind:value}} spans)"
    )
    args = ap.parse_args()
    reps = 5 if args.quick else 50
    files = {}
    for path in args.data:
        name = (
            str(path.resolve().relative_to(ROOT))
            if path.resolve().is_relative_to(ROOT)
            else str(path)
        )
        files[name] = run_file(path, reps)
    out = {
        "benchmark": "pii",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "files": files,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pii.json").write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
