"""Dialogue summarization: the llmos extractive summarizer vs Lead-3 and TextRank, ROUGE-1/2/L.

    .venv/bin/python benchmarks/summarize.py [--quick] [--data-root ../shared/data] [--no-cache]

Test sets: SAMSum test (819 dialogues, one reference) and DialogSum test (500 dialogues, three
references; ROUGE is the mean over the three). ROUGE F1 x 100 from rouge-score with the Porter
stemmer, ``rougeL`` (not ``rougeLsum``). Systems, all in the same run on the same inputs:

  * llmos: TextRank over MiniLM sentence embeddings + position and length priors + MMR, with
    fillers dropped and turns in third person; length from the dialogue's length (tuned on
    SAMSum val / DialogSum dev only).
  * llmos, no rewriting: the same ranker, turns printed as written (ablation).
  * Lead-3: the first three turns as written (the published SAMSum baseline).
  * Lead-3, cleaned: Lead-3 with our filler clean-up (ablation).
  * Longest-3: the three longest turns (Gliwa et al. 2019 baseline).
  * TextRank: plain PageRank over sentence similarity, top 3 sentences, no priors.

Also times a 100-page document (~50k words of WikiText-2 validation) end to end.
MiniLM vectors are cached in ``benchmarks/results/cache/summarize_embed.db`` (``--no-cache``
for a cold run). Results go to ``benchmarks/results/summarize.json`` (``summarize_quick.json``
with ``--quick``, ~100 dialogues per set).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
CACHE = RESULTS / "cache"
PUBLISHED_SAMSUM = {
    "Lead-3": (31.47, 8.83, 30.41),
    "TextRank": (27.59, 6.93, 27.06),
    "Longest-3": (32.5, 10.3, 29.9),
}


def longest(text: str, n: int = 3) -> str:
    """The n longest turns (by words), in dialogue order."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    top = sorted(range(len(lines)), key=lambda i: -len(lines[i].split()))[:n]
    return " ".join(lines[i] for i in sorted(top))


def long_document(data_root: Path, words: int = 50_000) -> str:
    """About ``words`` words of WikiText-2 (validation), headings and paragraphs kept."""
    src = data_root / "wikitext2" / "wiki.valid.tokens"
    out: list[str] = []
    count = 0
    for line in src.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("="):
            out.append("\n# " + line.strip("= ").strip() + "\n")
            continue
        line = line.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
        out.append(line + "\n")
        count += len(line.split())
        if count >= words:
            break
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="~100 dialogues per test set")
    ap.add_argument("--data-root", "--data", default=str(ROOT / ".." / "shared" / "data"))
    ap.add_argument("--limit", type=int, default=None, help="dialogues per set (default: all)")
    ap.add_argument("--no-cache", action="store_true", help="embed everything afresh")
    args = ap.parse_args()

    import torch
    from tqdm import tqdm

    from knowledge.embed import Embedder
    from skills.summarize import Params, summarize
    from skills.summarize_eval import (
        clean_lead,
        lead,
        load_pairs,
        markdown_table,
        plain_textrank,
        run_systems,
    )

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    root = Path(args.data_root)
    limit = args.limit or (100 if args.quick else None)
    sets = {
        "SAMSum test": root / "samsum" / "test.csv",
        "DialogSum test": root / "dialogsum" / "dialogsum.test.jsonl",
    }
    cache = None if args.no_cache else CACHE / "summarize_embed.db"
    embedder = Embedder(cache_path=cache)
    t_load = time.perf_counter()
    embedder.load()
    load_s = time.perf_counter() - t_load
    no_rewrite = Params(rewrite=False)
    systems = {
        "llmos": lambda t: summarize(t, embedder).text,
        "llmos, no rewriting": lambda t: summarize(t, embedder, params=no_rewrite).text,
        "Lead-3": lead,
        "Lead-3, cleaned": clean_lead,
        "Longest-3": longest,
        "TextRank (plain)": lambda t: plain_textrank(t, embedder),
    }
    report: dict = {
        "benchmark": "summarize",
        "quick": args.quick,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch threads {torch.get_num_threads()}",
        "load_average_start": list(os.getloadavg()),
        "metric": "ROUGE F1 x 100, rouge-score with Porter stemmer, rougeL; DialogSum: mean over 3 references",
        "embedding_cache": bool(cache),
        "model_load_s": round(load_s, 2),
        "sets": {},
        "published_samsum": PUBLISHED_SAMSUM,
    }
    for set_name, path in sets.items():
        pairs = load_pairs(path, limit=limit)
        bar = tqdm(total=len(pairs) * len(systems), desc=set_name, unit="summary", leave=False)
        times: dict[str, float] = {}
        last = {"name": "", "t": time.perf_counter()}

        def tick(name: str, i: int, n: int, bar=bar, times=times, last=last) -> None:
            now = time.perf_counter()
            times[name] = times.get(name, 0.0) + now - last["t"]
            last["t"] = now
            bar.update(1)

        last["t"] = time.perf_counter()
        results = run_systems(pairs, systems, progress=tick)
        bar.close()
        print(markdown_table(results, f"{set_name} ({len(pairs)} dialogues)"))
        ours = next(r for r in results if r.name == "llmos")
        lead3 = next(r for r in results if r.name == "Lead-3")
        gap = ours.scores["rouge1"] - lead3.scores["rouge1"]
        print(f"llmos - Lead-3: {gap:+.2f} ROUGE-1 (target +2.00)\n")
        report["sets"][set_name] = {
            "n": len(pairs),
            "file": str(path),
            "systems": {
                r.name: {
                    **{k: round(v, 2) for k, v in r.scores.items()},
                    "words": round(r.words, 1),
                    "seconds": round(times.get(r.name, 0.0), 2),
                }
                for r in results
            },
            "llmos_minus_lead3_rouge1": round(gap, 2),
            "example": {
                "id": pairs[0].id,
                "reference": pairs[0].references[0],
                **{r.name: r.outputs[0] for r in results},
            },
        }

    # a 100-page document, end to end (split, pre-select, embed, rank)
    doc = long_document(root)
    bar = tqdm(desc="100-page document: embedding", unit="sentence", leave=False)

    def doc_progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    t0 = time.perf_counter()
    s = summarize(doc, embedder, progress=doc_progress)
    elapsed = time.perf_counter() - t0
    bar.close()
    report["long_document"] = {
        "words": len(doc.split()),
        "sentences": s.total_units,
        "summary_sentences": len(s.units),
        "seconds": round(elapsed, 2),
        "cached_embeddings": bool(cache),
    }
    print(
        f"100-page document: {len(doc.split()):,} words, {s.total_units:,} sentences -> "
        f"{len(s.units)} sentences in {elapsed:.1f}s"
    )
    report["load_average_end"] = list(os.getloadavg())
    embedder.close()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("summarize_quick.json" if args.quick else "summarize.json")
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
