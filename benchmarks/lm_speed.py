"""Training throughput and model FLOP utilisation: our ``small`` vs a plain transformers GPT-2.

    .venv/bin/python benchmarks/lm_speed.py [--quick] [--threads 2]

Peak: the best of several large fp32 matmuls (2048^3) in this same run, same thread count.
Model FLOPs per token: 6N (forward + backward over every weight used in a matmul, the tied
output head included) + 12 * n_layer * n_embd * T for attention scores (PaLM appendix B).
Utilisation = tokens/s x FLOPs/token / peak. Our run goes through ``lm.train.train_lm``
(the real loop: data sampling, clipping, schedule, eval excluded), eager, eager with the
plain logits loss instead of the chunked one (``lm/loss.py``), and with ``--compile`` (its
one-off compile step left out of the rate); the baseline is a minimal
loop around ``GPT2LMHeadModel`` (~7M parameters). Results: ``benchmarks/results/lm_speed.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.lm_quality import SHAKESPEARE, table, write_result


def matmul_peak(threads: int, n: int = 2048, repeats: int = 6) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def flops_per_token(params: int, n_layer: int, n_embd: int, T: int) -> float:
    return 6 * params + 12 * n_layer * n_embd * T


def run_ours(steps: int, out: Path, compile: bool = False, fused_loss: bool = True) -> dict:
    from lm.model import get_preset
    from lm.train import TrainConfig, train_lm

    p = get_preset("small")
    cfg = TrainConfig(
        preset="small",
        steps=steps,
        eval_interval=10**9,
        eval_iters=1,
        warmup_steps=5,
        compile=compile,
        fused_loss=fused_loss,
    )
    r = train_lm([SHAKESPEARE], out, cfg, show_progress=False)
    # The final eval is inside elapsed_s; per-step times exclude it: use the loop's token rate.
    return {
        "parameters": r.parameters,
        "tokens_per_s": r.tokens_per_s,  # the compile step is left out of the rate
        "compile_s": r.compile_s,
        "n_layer": p.n_layer,
        "n_embd": p.n_embd,
        "T": p.block_size,
        "batch": p.batch_size,
        "steps": r.step,
    }


def run_gpt2(steps: int) -> dict:
    import torch
    import torch.nn.functional as F
    from transformers import GPT2Config, GPT2LMHeadModel

    T, B = 256, 16
    cfg = GPT2Config(
        vocab_size=4096,
        n_positions=T,
        n_embd=256,
        n_layer=8,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 4096, (B, T + 1))

    def step():
        logits = model(input_ids=x[:, :-1]).logits
        loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    el = time.perf_counter() - t
    params = sum(p.numel() for p in model.parameters())  # tied head counted once
    # Positional embeddings are a lookup, not a matmul: leave them out of 6N.
    params -= model.transformer.wpe.weight.numel()
    return {
        "parameters": params,
        "tokens_per_s": steps * B * T / el,
        "n_layer": 8,
        "n_embd": 256,
        "T": T,
        "batch": B,
        "steps": steps,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile run")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    steps = 15 if a.quick else 60
    peak_before = matmul_peak(a.threads)
    ours = run_ours(steps, Path(tempfile.mkdtemp()))
    runs = [("ours small (Llama)", ours)]
    # The same loop with the plain logits loss: what the chunked loss (lm/loss.py) buys.
    runs.append(
        ("ours small, logits loss", run_ours(steps, Path(tempfile.mkdtemp()), fused_loss=False))
    )
    if not a.no_compile:
        runs.append(("ours small, --compile", run_ours(steps, Path(tempfile.mkdtemp()), True)))
    gpt2 = run_gpt2(steps)
    runs.append(("transformers GPT-2", gpt2))
    peak_after = matmul_peak(a.threads)
    peak = max(peak_before, peak_after)
    rows = []
    for name, r in runs:
        f = flops_per_token(r["parameters"], r["n_layer"], r["n_embd"], r["T"])
        r["flops_per_token"] = f
        r["model_flops_per_s"] = r["tokens_per_s"] * f
        r["mfu"] = r["model_flops_per_s"] / peak
        rows.append(
            [
                name,
                f"{r['parameters']:,}",
                r["tokens_per_s"],
                r["model_flops_per_s"] / 1e9,
                f"{100 * r['mfu']:.1f}%",
            ]
        )
    print(
        f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s ({a.threads} threads; before {peak_before / 1e9:.1f},"
        f" after {peak_after / 1e9:.1f})\n"
    )
    print(table(rows, ["model", "params", "train tokens/s", "model GFLOP/s", "of peak"]))
    path = write_result(
        "lm_speed",
        {"peak_flops": peak, "threads": a.threads, "steps": steps, "runs": dict(runs)},
    )
    print(f"-> {path}\nnote: 2-core CPU shared with other agents; timings are noisy.")


if __name__ == "__main__":
    main()
