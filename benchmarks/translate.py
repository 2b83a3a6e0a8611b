"""Multi30k English->German: our translator trained from scratch on this machine vs. the papers.

    .venv/bin/python benchmarks/translate.py [--quick] [--time-budget 2700] [--data DIR] [--model DIR]

Trains the ``small`` preset (Marian-architecture Transformer, 3+3 layers, d_model 256, shared
8k byte-level BPE, label smoothing 0.1) on Multi30k ``train`` for a wall-clock budget, keeps the
checkpoint with the lowest ``val`` loss, picks the beam length penalty on ``val`` BLEU, and
scores ``test_2016_flickr`` (test2016) greedy vs. beam 5:

* BLEU and chrF from sacrebleu on detokenized, cased text (the honest figure);
* lower-cased BLEU with sacrebleu's 13a tokenizer, the closest like-for-like to the published
  lower-cased, tokenized figures (Wu et al. 2021, fairseq Transformer-tiny: 41.02).

``--quick`` trains ~2 minutes on a 6k-pair subset and scores 200 test sentences (a smoke run,
not a result). Results: ``benchmarks/results/translate.json`` (``translate_quick.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lm.checkpoint import write_json_atomic
from lm.seq2seq import Seq2Seq, Seq2SeqTrainConfig, train_seq2seq
from lm.seq2seq_data import filter_pairs, read_pairs
from lm.translator import _bleu_chrf

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "multi30k"
PUBLISHED = [
    ("Transformer-tiny, fairseq (Wu et al. 2021)", "lower-cased tokenized", 41.02, "beam 5"),
]
TARGET_BLEU = 35.0


def _decode(model: Seq2Seq, sources: list[str], beam: int, lp: float) -> tuple[list[str], float]:
    t0 = time.perf_counter()
    out = model.generate(sources, beam_size=beam, length_penalty=lp, batch_size=64)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--time-budget", type=float, default=2700.0, help="training seconds")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--model", type=Path, help="score this trained run dir instead of training")
    ap.add_argument("--out-dir", type=Path, help="run directory (default: a temp dir)")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--beam", type=int, default=5)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    d = a.data
    t_all = time.perf_counter()
    train = read_pairs([d / "train"], "en", "de")
    val = read_pairs([d / "val"], "en", "de")
    test = read_pairs([d / "test_2016_flickr"], "en", "de")
    train, stats = filter_pairs(train)
    budget = 120.0 if a.quick else a.time_budget
    if a.quick:
        train, val, test = train[:6000], val[:200], test[:200]
    train_info: dict = {}
    if a.model is None:
        out = a.out_dir or Path(tempfile.mkdtemp(prefix="translate-bench-"))
        cfg = Seq2SeqTrainConfig(
            src="en",
            tgt="de",
            preset=a.preset,
            time_budget_s=budget,
            warmup_steps=100 if a.quick else None,
            eval_interval=100 if a.quick else None,
            vocab_size=4000 if a.quick else None,
        )
        r = train_seq2seq(train, out, cfg, val_pairs=val, show_progress=True)
        train_info = {
            "train_seconds": round(r.elapsed_s, 1),
            "steps": r.step,
            "epochs": round(r.epochs, 2),
            "parameters": r.parameters,
            "train_pairs": r.pairs,
            "best_val_loss": round(r.best_val_loss, 4),
            "train_tokens_per_s": round(r.tokens_per_s, 1),
            "val_curve": r.history["val"],
        }
        model_dir = out
    else:
        model_dir = a.model
    model = Seq2Seq.from_dir(model_dir / "best" if (model_dir / "best").is_dir() else model_dir)
    # Length penalty chosen on val BLEU (beam search), never on test.
    lps = [1.0] if a.quick else [0.6, 1.0]
    val_bleu = {}
    for lp in lps:
        hyps, _ = _decode(model, [s for s, _ in val], a.beam, lp)
        val_bleu[lp] = _bleu_chrf(hyps, [t for _, t in val])["bleu"]
    best_lp = max(val_bleu, key=lambda k: val_bleu[k])
    sources, refs = [s for s, _ in test], [t for _, t in test]
    rows = {}
    for label, beam, lp in (("greedy", 1, 1.0), (f"beam {a.beam}", a.beam, best_lp)):
        hyps, secs = _decode(model, sources, beam, lp)
        rows[label] = {
            **_bleu_chrf(hyps, refs),
            "beam": beam,
            "length_penalty": lp,
            "sentences_per_s": round(len(sources) / secs, 2),
            "samples": [
                {"src": s, "ref": t, "hyp": h} for s, t, h in zip(sources, refs, hyps, strict=True)
            ][:3],
        }
    print()
    print(f"Multi30k en->de test2016 ({len(test)} sentences), model {model_dir}")
    print(f"{'system':<46} {'BLEU':>6} {'chrF':>6} {'BLEU lc13a':>10} {'sent/s':>8}")
    for label, row in rows.items():
        system = f"ours, {label} (lp {row['length_penalty']})"
        print(
            f"{system:<46} {row['bleu']:>6.2f} "
            f"{row['chrf']:>6.2f} {row['bleu_lc_13a']:>10.2f} {row['sentences_per_s']:>8.1f}"
        )
    for name, kind, score, how in PUBLISHED:
        print(f"{name + ', ' + how:<46} {'-':>6} {'-':>6} {score:>10.2f} {'-':>8}  ({kind})")
    print(f"target: test2016 BLEU >= {TARGET_BLEU} (detokenized, cased) in < 60 min on 2 cores")
    if train_info:
        print(
            f"training: {train_info['train_seconds']:.0f}s wall-clock, {train_info['steps']} steps, "
            f"{train_info['epochs']} epochs, {train_info['parameters']:,} parameters"
        )
    result = {
        "benchmark": "multi30k en-de test2016",
        "quick": a.quick,
        "threads": a.threads,
        "preset": a.preset,
        "time_budget_s": budget if a.model is None else None,
        "data_stats": {"train": len(train), "val": len(val), "test": len(test)},
        "pair_filter": {"read": stats.read, "kept": stats.kept, "duplicates": stats.duplicates},
        **train_info,
        "val_bleu_by_length_penalty": val_bleu,
        "test2016": rows,
        "published": [
            {"system": n, "metric": k, "bleu": s, "decoding": h} for n, k, s, h in PUBLISHED
        ],
        "target_bleu_detok_cased": TARGET_BLEU,
        "total_seconds": round(time.perf_counter() - t_all, 1),
        "load_average": os.getloadavg(),
        "model_dir": str(model_dir),
    }
    name = "translate_quick.json" if a.quick else "translate.json"
    write_json_atomic(REPO / "benchmarks" / "results" / name, result)
    print(json.dumps({k: v for k, v in result.items() if k != "test2016"}, default=str)[:400])


if __name__ == "__main__":
    main()
