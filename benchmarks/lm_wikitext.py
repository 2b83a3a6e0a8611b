"""WikiText-2 test perplexity of ``small`` trained on our other corpora: out of domain, honestly.

    .venv/bin/python benchmarks/lm_wikitext.py [--quick] [--budget 1200 | --steps 1000]
                                               [--threads 2] [--corpus mixed|shakespeare]
                                               [--heads 2,4]

The model never sees Wikipedia: it trains for a fixed budget (wall-clock, or a number of
steps, which gives the same model however busy the machine is) on the English text of the
other data sets in ``../shared/data`` and is scored on ``wiki.test.tokens``, so its perplexity
is far above in-domain WikiText-2 figures and must not be compared with them. ``mixed``
(default) is tinyshakespeare, the Multi30k English training captions, Banking77 training
queries, the StackFAQ questions and answers, and the SAMSum validation and DialogSum dev
dialogues with their summaries (no test split of any of them; WikiText's own train and valid
files are never read). ``shakespeare`` is tinyshakespeare alone. Side by side in the same
run: an add-one unigram model over the same tokenizer and training text, the floor any
language model should beat. ``--heads 2,4`` trains one model per head count (same seed, data
and budget) and scores each, an A/B of the preset's attention shape. Word-level perplexity
(total nats / WikiText words) makes the figure independent of our tokenizer. Results:
``benchmarks/results/lm_wikitext.json``.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.lm_quality import DATA, SHAKESPEARE, full_val_loss, table, write_result


def mixed_corpus(out: Path) -> list[Path]:
    """Write the English side of our non-Wikipedia data sets as plain-text files under ``out``."""
    import csv
    import gzip
    import html
    import json
    import xml.etree.ElementTree as ET

    texts: dict[str, str] = {}
    with gzip.open(DATA / "multi30k" / "train.en.gz", "rt", encoding="utf-8") as g:
        texts["multi30k"] = g.read()
    with (DATA / "banking77" / "train.csv").open(encoding="utf-8", newline="") as f:
        texts["banking77"] = "\n".join(r["text"] for r in csv.DictReader(f)) + "\n"
    root = ET.parse(DATA / "stackfaq" / "stackExchange-FAQ.xml").getroot()  # trusted local file
    faq = []
    for pair in root.iter("qapair"):
        faq.append(html.unescape(pair.findtext("question") or ""))
        faq += [html.unescape(a.text or "") for a in pair.findall("answer")]
    texts["stackfaq"] = "\n\n".join(t.strip() for t in faq if t.strip()) + "\n"
    with (DATA / "samsum" / "val.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    texts["samsum"] = "\n\n".join(f"{r['dialogue']}\n{r['summary']}" for r in rows) + "\n"
    with (DATA / "dialogsum" / "dialogsum.dev.jsonl").open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    texts["dialogsum"] = "\n\n".join(f"{r['dialogue']}\n{r['summary']}" for r in rows) + "\n"
    paths = [SHAKESPEARE]
    for name, text in texts.items():
        p = out / f"{name}.txt"
        p.write_text(text, encoding="utf-8")
        paths.append(p)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="60 s of training, first 100k test chars")
    ap.add_argument("--budget", type=float, default=1200.0, help="seconds of training")
    ap.add_argument(
        "--steps",
        type=int,
        default=None,
        help="a fixed number of optimizer steps instead of --budget (the same model whatever "
        "else runs on the machine; small: 4,096 tokens a step)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--corpus", choices=["mixed", "shakespeare"], default="mixed")
    ap.add_argument(
        "--heads",
        default=None,
        help="comma-separated attention head counts to train and compare (default: the preset's)",
    )
    a = ap.parse_args()
    import numpy as np
    import torch

    from lm.generate import Generator
    from lm.train import TrainConfig, train_lm

    torch.set_num_threads(a.threads)
    budget = 60.0 if a.quick else a.budget
    test = (DATA / "wikitext2" / "wiki.test.tokens").read_text(encoding="utf-8")
    if a.quick:
        test = test[:100_000]
    corpus_dir = Path(tempfile.mkdtemp())
    corpus = mixed_corpus(corpus_dir) if a.corpus == "mixed" else [SHAKESPEARE]
    corpus_chars = sum(len(p.read_text(encoding="utf-8")) for p in corpus)
    heads = [int(h) for h in a.heads.split(",")] if a.heads else [None]
    runs = []  # (label, train result, per-token test loss)
    for n_head in heads:
        overrides = {"num_attention_heads": n_head, "num_key_value_heads": n_head} if n_head else {}
        cfg = TrainConfig(
            preset="small",
            time_budget_s=None if a.steps else budget,
            steps=a.steps,
            eval_interval=200,
            eval_iters=4,
            warmup_steps=10 if a.quick else None,
            model_overrides=overrides,
        )
        out = Path(tempfile.mkdtemp())
        r = train_lm(list(corpus), out, cfg, show_progress=False)
        g = Generator.from_dir(out)
        tok = g.tokenizer
        ids = tok(test, add_special_tokens=False)["input_ids"]
        block = int(g.model.config.max_position_embeddings)
        per_tok, _ = full_val_loss(
            lambda x, m=g.model: m(input_ids=x).logits, ids, block, len(test)
        )
        h = int(g.model.config.num_attention_heads)
        label = "ours small" if n_head is None else f"ours small, {h} heads"
        runs.append((label, r, per_tok))
        print(
            f"{label}: trained {r.parameters:,} parameters for {r.step} steps "
            f"({r.elapsed_s:.0f}s, {r.tokens_per_s:,.0f} tokens/s); held-out val loss "
            f"{r.best_val_loss:.4f}; WikiText-2 test loss/token {per_tok:.4f}",
            flush=True,
        )
    n_words = len(test.split())
    # Unigram floor over the same tokenizer and training text (add-one smoothing); every run
    # trains the same tokenizer on the same text, so one floor serves them all.
    train_text = "\n".join(p.read_text(encoding="utf-8") for p in corpus)
    train_ids = tok(train_text, add_special_tokens=False)["input_ids"]
    counts = np.bincount(np.asarray(train_ids), minlength=len(tok)).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    scored = np.asarray(ids[1 : 1 + (len(ids) - 1) // block * block])
    uni_tok = float(-logp[scored].mean())
    rows = []
    results = {}
    scored_rows = [("unigram (add-one)", uni_tok)] + [(label, loss) for label, _, loss in runs]
    for name, loss in scored_rows:
        word_ppl = math.exp(min(loss * (len(scored) / n_words), 700))
        results[name] = {
            "loss_per_token": loss,
            "token_perplexity": math.exp(loss),
            "word_perplexity": word_ppl,
        }
        rows.append([name, f"{loss:.4f}", f"{math.exp(loss):,.1f}", f"{word_ppl:,.1f}"])
    print(f"\ncorpus: {a.corpus} ({len(corpus)} files, {corpus_chars:,} chars)\n")
    print(table(rows, ["model", "test loss/token", "token ppl", "word ppl"]))
    print(
        "\nOUT OF DOMAIN: trained on non-Wikipedia text, tested on Wikipedia. Not comparable with "
        "models trained on WikiText-2."
    )
    path = write_result(
        "lm_wikitext",
        {
            "budget_s": None if a.steps else budget,
            "fixed_steps": a.steps,
            "parameters": runs[0][1].parameters,
            "runs": {
                label: {
                    "heads": heads[i],
                    "train_s": rr.elapsed_s,
                    "steps": rr.step,
                    "tokens_per_s": rr.tokens_per_s,
                    "val_loss": rr.best_val_loss,
                    "test_loss_per_token": loss,
                }
                for i, (label, rr, loss) in enumerate(runs)
            },
            "test_chars": len(test),
            "test_words": n_words,
            "corpus": a.corpus,
            "corpus_files": [p.name for p in corpus],
            "corpus_chars": corpus_chars,
            "threads": a.threads,
            "load_avg_end": [round(x, 2) for x in __import__("os").getloadavg()],
            "results": results,
            "out_of_domain": True,
        },
    )
    print(f"-> {path}\nnote: 2-core CPU shared with other agents; timings are noisy.")


if __name__ == "__main__":
    main()
