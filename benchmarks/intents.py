"""Banking77 intent classification: llmos IntentHead vs logistic regression vs SetFit.

    .venv/bin/python benchmarks/intents.py [--quick] [--setfit] [--setfit-full]

Splits: (a) the published 10-shot split (jianguoz ``train_10``, 770 examples) and (b) the full
train split (10,003); both scored on the official test set (3,080). MiniLM embeddings of every
text are cached under ``benchmarks/results/cache/`` (.npy + .json, no pickle) so reruns skip
the ~2 minute encode. Baselines, in the same run: (1) scikit-learn logistic regression on the
same frozen embeddings, (2) SetFit (contrastive fine-tuning of the same MiniLM body, then a
logistic-regression head); SetFit is slow on CPU, so it runs only with ``--setfit`` (10-shot)
and ``--setfit-full``. ``--quick`` scores the 10-shot split only and times fewer utterances.
Results go to ``benchmarks/results/intents.json``. Timings on a shared 2-core CPU are noisy.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / ".." / "shared" / "data" / "banking77"
RESULTS = ROOT / "benchmarks" / "results"
CACHE = RESULTS / "cache"


def _csv(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def load_banking77() -> dict[str, tuple[list[str], list[str]]]:
    few = DATA / "fewshot_jianguoz" / "train_10"
    few_texts = (few / "seq.in").read_text(encoding="utf-8").splitlines()
    few_labels = [s.lower() for s in (few / "label").read_text(encoding="utf-8").splitlines()]
    return {
        "10-shot": (few_texts, few_labels),
        "full": _csv(DATA / "train.csv"),
        "test": _csv(DATA / "test.csv"),
    }


def cached_embeddings(texts: list[str], name: str) -> np.ndarray:
    """MiniLM vectors of ``texts``, from ``cache/<name>.npy`` when its text list matches."""
    from knowledge.embed import shared_embedder

    CACHE.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256("\n\x00".join(texts).encode("utf-8")).hexdigest()
    npy, meta = CACHE / f"{name}.npy", CACHE / f"{name}.json"
    if npy.exists() and meta.exists() and json.loads(meta.read_text()).get("sha256") == digest:
        X = np.load(npy, allow_pickle=False)
        if X.shape == (len(texts), 384):
            return X
    from tqdm import tqdm

    bar = tqdm(total=len(texts), desc=f"embed {name}", unit="text")
    X = shared_embedder().encode(texts, progress=bar.update)
    bar.close()
    tmp = npy.with_suffix(".tmp.npy")
    np.save(tmp, X, allow_pickle=False)
    os.replace(tmp, npy)
    meta.write_text(json.dumps({"sha256": digest, "n": len(texts), "model": "all-MiniLM-L6-v2"}))
    return X


def _scores(pred: list[str], proba: np.ndarray | None, gold: list[str]) -> dict[str, float]:
    from sklearn.metrics import f1_score

    correct = np.array(pred) == np.array(gold)
    out = {
        "accuracy": round(100 * float(correct.mean()), 2),
        "macro_f1": round(100 * float(f1_score(gold, pred, average="macro")), 2),
    }
    if proba is not None:
        conf = proba.max(axis=1)
        bins = np.minimum((conf * 15).astype(int), 14)
        ece = sum(
            abs(correct[bins == b].mean() - conf[bins == b].mean()) * (bins == b).mean()
            for b in range(15)
            if (bins == b).any()
        )
        out["ece"] = round(float(ece), 4)
        out["mean_confidence"] = round(100 * float(conf.mean()), 2)
    return out


def _latency(fn, texts: list[str]) -> dict[str, float]:
    times = []
    for t in texts:
        t0 = time.perf_counter()
        fn(t)
        times.append(1000 * (time.perf_counter() - t0))
    return {
        "p50_ms": round(float(np.percentile(times, 50)), 2),
        "p95_ms": round(float(np.percentile(times, 95)), 2),
    }


def run_head(X, y, texts, Xt, tt, yt) -> dict:
    from assistant.router_head import IntentHead

    t0 = time.perf_counter()
    head = IntentHead(seed=0).fit(X, y, texts)
    train_s = time.perf_counter() - t0
    proba = head.predict_proba(Xt, tt)
    pred = [head.classes[i] for i in proba.argmax(axis=1)]
    res = {"train_s": round(train_s, 1), "temperature": round(head.temperature, 3)}
    res.update(_scores(pred, proba, yt))
    return res | {"_model": head}


def run_lr(X, y, Xt, yt, C: float) -> dict:
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    lr = LogisticRegression(C=C, max_iter=3000).fit(X, y)
    train_s = time.perf_counter() - t0
    proba = lr.predict_proba(Xt)
    pred = list(lr.classes_[proba.argmax(axis=1)])
    return {"train_s": round(train_s, 1)} | _scores(pred, proba, yt) | {"_model": lr}


def run_setfit(texts, y, tt, yt, iterations: int, max_steps: int) -> dict:
    import tempfile

    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    from knowledge.embed import model_path

    model = SetFitModel.from_pretrained(model_path(), device="cpu")
    tmp = tempfile.mkdtemp(prefix="llmos_setfit_")  # its checkpoints stay out of the repo
    args = TrainingArguments(
        output_dir=tmp,
        save_strategy="no",
        batch_size=16,
        num_epochs=1,
        num_iterations=iterations,
        max_steps=max_steps,
        seed=0,
        report_to="none",
        show_progress_bar=True,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=Dataset.from_dict({"text": texts, "label": y})
    )
    t0 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t0
    shutil.rmtree(tmp, ignore_errors=True)
    pred = [str(p) for p in model.predict(tt, batch_size=64, show_progress_bar=False)]
    res = {"train_s": round(train_s, 1), "iterations": iterations, "max_steps": max_steps}
    return res | _scores(pred, None, yt) | {"_model": model}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10-shot only, fewer latency samples")
    ap.add_argument("--setfit", action="store_true", help="run SetFit on the 10-shot split")
    ap.add_argument("--setfit-full", action="store_true", help="also SetFit on the full split")
    ap.add_argument("--setfit-iterations", type=int, default=20)
    ap.add_argument("--setfit-max-steps", type=int, default=-1, help="cap SetFit's pair steps")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is faster on a busy box)"
    )
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    data = load_banking77()
    tt, yt = data["test"]
    Xt = cached_embeddings(tt, "b77_test")
    splits = ["10-shot"] if args.quick else ["10-shot", "full"]
    results: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/intents.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()} {os.cpu_count()} cores (shared with other jobs: noisy)",
        "splits": {},
    }
    for split in splits:
        texts, y = data[split]
        X = cached_embeddings(texts, "b77_" + split.replace("-", ""))
        print(f"== {split}: {len(texts)} train, {len(tt)} test", flush=True)
        rows = {
            "llmos IntentHead": run_head(X, y, texts, Xt, tt, yt),
            "LogReg C=1 (sklearn default)": run_lr(X, y, Xt, yt, 1.0),
            "LogReg C=10": run_lr(X, y, Xt, yt, 10.0),
        }
        if (split == "10-shot" and args.setfit) or (split == "full" and args.setfit_full):
            rows["SetFit MiniLM"] = run_setfit(
                texts, y, tt, yt, args.setfit_iterations, args.setfit_max_steps
            )
        results["splits"][split] = {
            k: {a: b for a, b in v.items() if a != "_model"} for k, v in rows.items()
        }
        results["splits"][split]["_models"] = rows  # dropped before writing
    results["latency"], results["train_1000"] = _timings(data, results, args.quick)
    for split in results["splits"].values():
        split.pop("_models")
    _print(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "intents.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, out)
    print(f"wrote {out.relative_to(ROOT)}")


def _timings(data, results, quick: bool) -> tuple[dict, dict]:
    """Routing latency (uncached embed + model, one utterance at a time) and 1k-example training."""
    from assistant.router_head import IntentHead
    from knowledge.embed import Embedder, shared_embedder

    fresh = Embedder(memory_items=0)  # no cache: every utterance pays for its forward pass
    fresh._model = shared_embedder().load()  # same weights, skip a second load
    tt = data["test"][0][: 40 if quick else 200]
    models = results["splits"]["10-shot"]["_models"]
    head = models["llmos IntentHead"]["_model"]
    lr = models["LogReg C=10"]["_model"]
    fresh.encode(tt[:5])  # warm-up
    latency = {
        "llmos IntentHead": _latency(lambda t: head.predict_proba(fresh.encode([t]), [t]), tt),
        "LogReg C=10": _latency(lambda t: lr.predict_proba(fresh.encode([t])), tt),
        "embedding only": _latency(lambda t: fresh.encode([t]), tt),
    }
    pre = {t: v for t, v in zip(tt, fresh.encode(tt), strict=True)}
    latency["IntentHead alone (no embed)"] = _latency(
        lambda t: head.predict_proba(pre[t][None, :], [t]), tt
    )
    if "SetFit MiniLM" in models:
        sf = models["SetFit MiniLM"]["_model"]
        latency["SetFit MiniLM"] = _latency(lambda t: sf.predict_proba([t]), tt)
    # Training on 1,000 examples from scratch: uncached embedding + head fit.
    texts, y = data["full"]
    rng = np.random.default_rng(0)
    idx = rng.choice(len(texts), size=1000, replace=False)
    sub_t, sub_y = [texts[i] for i in idx], [y[i] for i in idx]
    t0 = time.perf_counter()
    Xs = fresh.encode(sub_t)
    embed_s = time.perf_counter() - t0
    IntentHead(seed=0).fit(Xs, sub_y, sub_t)
    total_s = time.perf_counter() - t0
    return latency, {"embed_s": round(embed_s, 1), "total_s": round(total_s, 1)}


def _print(results: dict) -> None:
    for split, rows in results["splits"].items():
        print(f"\nBanking77 {split} -> official test (3,080)")
        print(f"{'method':32} {'acc':>6} {'macroF1':>8} {'ECE':>7} {'train s':>8}")
        for name, r in rows.items():
            ece = f"{r['ece']:.3f}" if "ece" in r else "-"
            print(
                f"{name:32} {r['accuracy']:6.2f} {r['macro_f1']:8.2f} {ece:>7} {r['train_s']:8.1f}"
            )
    print("\nrouting latency per utterance (embed + classify, one at a time)")
    for name, r in results["latency"].items():
        print(f"{name:32} p50 {r['p50_ms']:7.2f} ms   p95 {r['p95_ms']:7.2f} ms")
    t = results["train_1000"]
    print(f"\n1,000 examples from scratch: embed {t['embed_s']} s, embed + head {t['total_s']} s")
    print("(shared 2-core CPU with other jobs running: timings are noisy)")


if __name__ == "__main__":
    main()
