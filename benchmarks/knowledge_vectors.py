"""Vector search at scale: llmos's FAISS index (flat and HNSW) vs numpy brute force.

    .venv/bin/python benchmarks/knowledge_vectors.py [--quick] [--million] [--n N]

Data: synthetic *clustered* 384-d unit vectors (Gaussian blobs around random centres, like
sentence embeddings of a topical corpus); queries are fresh points from the same blobs.
Measures build time, queries/s single and batched, recall@10 against exact search, and
index memory, for: numpy brute force (the baseline), llmos flat (IndexFlatIP) and llmos
HNSW (M=32, efConstruction=80, efSearch=96). ``--million`` adds the 1M-vector case
(about 1.5 GB of vectors plus the HNSW graph; HNSW build takes many minutes on 2 cores).
Results: ``benchmarks/results/knowledge_vectors.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DIM, K = 384, 10


def clustered(n: int, n_centres: int, seed: int, spread: float = 0.6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345).standard_normal((n_centres, DIM)).astype(np.float32)
    out = np.empty((n, DIM), np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        idx = rng.integers(0, n_centres, m)
        x = centres[idx] + spread * rng.standard_normal((m, DIM)).astype(np.float32)
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def brute_topk(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((len(q), k), np.int64)
    for s in range(0, len(q), 64):
        sims = q[s : s + 64] @ x.T
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1)
        out[s : s + 64] = np.take_along_axis(part, order, axis=1)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def run_case(n: int, n_queries: int, single: int, hnsw: dict[str, Any]) -> list[dict]:
    import faiss

    from knowledge.index import VectorIndex

    print(f"\n== {n:,} vectors, {n_queries} queries ==", flush=True)
    t0 = time.perf_counter()
    x = clustered(n, max(50, n // 500), seed=1)
    q = clustered(n_queries, max(50, n // 500), seed=2)
    print(f"data generated in {time.perf_counter() - t0:.1f}s", flush=True)
    ids = np.arange(n, dtype=np.int64)
    rows = []

    t0 = time.perf_counter()
    truth = brute_topk(x, q, K)
    batch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(single):
        brute_topk(x, q[i : i + 1], K)
    single_s = (time.perf_counter() - t0) / single
    rows.append({"n": n, "method": "numpy brute force", "build_s": 0.0, "qps_single": 1 / single_s,
                 "qps_batch": n_queries / batch_s, "recall@10": 1.0, "memory_mb": x.nbytes / 2**20})  # fmt: skip
    print(rows[-1], flush=True)

    for kind in ("flat", "hnsw"):
        t0 = time.perf_counter()
        opts = {"hnsw_m": hnsw["hnsw_m"], "ef_construction": hnsw["ef_construction"]}
        idx = VectorIndex(DIM, kind, **(opts if kind == "hnsw" else {}))
        for s in range(0, n, 50_000):
            idx.add(ids[s : s + 50_000], x[s : s + 50_000])
        build = time.perf_counter() - t0
        mem = faiss.serialize_index(idx._index).nbytes / 2**20
        # One HNSW build, searched at each efSearch (the recall / speed trade-off, set at query
        # time): ann-benchmarks style.
        for ef in hnsw["ef_search"] if kind == "hnsw" else [0]:
            if kind == "hnsw":
                faiss.downcast_index(idx._index.index).hnsw.efSearch = ef
            t0 = time.perf_counter()
            _, found = idx.search(q, K)
            batch_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for i in range(single):
                idx.search(q[i : i + 1], K)
            single_s = (time.perf_counter() - t0) / single
            label = f"llmos {kind}" + (
                f" (M={hnsw['hnsw_m']}, efC={hnsw['ef_construction']}, efS={ef})"
                if kind == "hnsw"
                else ""
            )
            rows.append({"n": n, "method": label, "build_s": build, "qps_single": 1 / single_s,
                         "qps_batch": n_queries / batch_s, "recall@10": recall(found, truth),
                         "memory_mb": mem})  # fmt: skip
            print(rows[-1], flush=True)
        del idx
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="20k vectors only")
    ap.add_argument("--million", action="store_true", help="also run 1M vectors (slow)")
    ap.add_argument("--n", type=int, action="append", help="custom sizes (repeatable)")
    ap.add_argument("--hnsw-m", type=int, default=32, help="HNSW graph degree")
    ap.add_argument("--ef-construction", type=int, default=80, help="HNSW build beam")
    ap.add_argument(
        "--ef-search", default="96", help="HNSW search beam(s), comma-separated: one build, each"
    )
    ap.add_argument("--skip-small", action="store_true", help="with --million: only the 1M case")
    ap.add_argument("--out", type=Path, default=None, help="results file (default by size)")
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(2)
    sizes = args.n or ([20_000] if args.quick else [100_000])
    if args.million and args.skip_small:
        sizes = []
    if args.million:
        sizes.append(1_000_000)
    rows = []
    for n in sizes:
        hnsw = {"hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction,
                "ef_search": [int(e) for e in args.ef_search.split(",")]}  # fmt: skip
        rows += run_case(n, 200 if args.quick else 1000, 50 if args.quick else 200, hnsw)
    print("\n| vectors | method | build s | q/s single | q/s batched | recall@10 | memory MB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']:,} | {r['method']} | {r['build_s']:.1f} | {r['qps_single']:.0f} |"
              f" {r['qps_batch']:.0f} | {r['recall@10']:.4f} | {r['memory_mb']:.0f} |")  # fmt: skip
    name = (
        "knowledge_vectors_1m.json"
        if args.million and args.skip_small
        else "knowledge_vectors.json"
    )
    out = args.out or REPO / "benchmarks" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "quick": args.quick,
                               "data": "synthetic clustered unit vectors, 384-d",
                               "note": "2-core shared CPU; timings noisy", "rows": rows}, indent=2))  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
