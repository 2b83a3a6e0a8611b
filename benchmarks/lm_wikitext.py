"""WikiText-2 test perplexity of ``small`` trained on tinyshakespeare: out of domain, honestly.

    .venv/bin/python benchmarks/lm_wikitext.py [--quick] [--budget 1200] [--threads 2]

The model never sees Wikipedia: it trains for a fixed wall-clock budget on tinyshakespeare
(early-modern English verse) and is scored on ``wiki.test.tokens``, so its perplexity is far
above in-domain WikiText-2 figures and must not be compared with them. Side by side in the
same run: an add-one unigram model over the same tokenizer and training text, the floor any
language model should beat. Word-level perplexity (total nats / WikiText words) makes the
figure independent of our tokenizer. Results: ``benchmarks/results/lm_wikitext.json``.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.lm_quality import DATA, SHAKESPEARE, full_val_loss, table, write_result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="60 s of training, first 100k test chars")
    ap.add_argument("--budget", type=float, default=1200.0)
    ap.add_argument("--threads", type=int, default=2)
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
    out = Path(tempfile.mkdtemp())
    cfg = TrainConfig(
        preset="small",
        time_budget_s=budget,
        eval_interval=200,
        eval_iters=4,
        warmup_steps=10 if a.quick else None,
    )
    r = train_lm([SHAKESPEARE], out, cfg, show_progress=False)
    g = Generator.from_dir(out)
    tok = g.tokenizer
    ids = tok(test, add_special_tokens=False)["input_ids"]
    block = int(g.model.config.max_position_embeddings)
    per_tok, _ = full_val_loss(lambda x: g.model(input_ids=x).logits, ids, block, len(test))
    n_words = len(test.split())
    # Unigram floor over the same tokenizer and training text (add-one smoothing).
    train_ids = tok(SHAKESPEARE.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
    counts = np.bincount(np.asarray(train_ids), minlength=len(tok)).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    scored = np.asarray(ids[1 : 1 + (len(ids) - 1) // block * block])
    uni_tok = float(-logp[scored].mean())
    rows = []
    results = {}
    for name, loss in (("unigram (add-one)", uni_tok), ("ours small", per_tok)):
        word_ppl = math.exp(min(loss * (len(scored) / n_words), 700))
        results[name] = {
            "loss_per_token": loss,
            "token_perplexity": math.exp(loss),
            "word_perplexity": word_ppl,
        }
        rows.append([name, f"{loss:.4f}", f"{math.exp(loss):,.1f}", f"{word_ppl:,.1f}"])
    print(
        f"trained {r.parameters:,} parameters for {r.step} steps ({budget:.0f}s) on tinyshakespeare; "
        f"tinyshakespeare val loss {r.best_val_loss:.4f}\n"
    )
    print(table(rows, ["model", "test loss/token", "token ppl", "word ppl"]))
    print(
        "\nOUT OF DOMAIN: trained on Shakespeare, tested on Wikipedia. Not comparable with "
        "models trained on WikiText-2."
    )
    path = write_result(
        "lm_wikitext",
        {
            "budget_s": budget,
            "steps": r.step,
            "parameters": r.parameters,
            "test_chars": len(test),
            "test_words": n_words,
            "shakespeare_val_loss": r.best_val_loss,
            "results": results,
            "out_of_domain": True,
        },
    )
    print(f"-> {path}\nnote: 2-core CPU shared with other agents; timings are noisy.")


if __name__ == "__main__":
    main()
