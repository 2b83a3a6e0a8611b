"""Training speed of the ``small`` preset: tokens/s and model FLOP/s as a share of the matmul peak.

    .venv/bin/python benchmarks/lm_speed.py [--quick] [--threads 2] [--no-compile]

Peak: large fp32 matmuls (2048^3) in this same run, same thread count, sampled for about a
second before the first training step and after every ``PROBE_EVERY`` steps of every model.
The headline share divides a model's FLOP/s by the *sustained* matmul rate of the samples taken
during its own run (all their FLOPs over all their time), so both rates are averages over the
same stretch of time on this shared VM, whose speed drifts by tens of percent within seconds
(8 s each of back-to-back 1024^3, 2048^3 and 4096^3 matmuls: best single matmul 148-170,
mean 108-135 GFLOP/s). The share of the best single matmul seen anywhere in the run ("burst
peak") is printed beside it: it compares an average with the luckiest tenth of a second, so it
understates every model alike.
Model FLOPs per token: 6N (forward + backward over every weight used in a matmul, the tied
output head included) + 12 * n_layer * n_embd * T for attention scores (PaLM appendix B).
Our run goes through ``lm.train.train_lm`` (the real loop: data sampling, clipping, schedule;
the first step and the final evaluation are left out of the rate): eager with glibc's default
heap (``LLMOS_RETAIN_HEAP=0``, see ``lm/heap.py``), eager, eager with the plain logits loss
instead of the chunked one (``lm/loss.py``), and with ``--compile`` (its one-off compile step
left out); the baseline is a minimal loop around ``GPT2LMHeadModel`` (~7M parameters), run
with the same heap setting as ours. These rows are fp32.
On a CPU with native bf16 (AVX512-BF16 or AMX; ``lm.train.cpu_has_native_bf16``), where
``--dtype auto`` trains with bf16 autocast, three more rows run: ours eager and compiled and
GPT-2, all under bf16 autocast. Their FLOP/s are divided by the same fp32 peak (the target's
yardstick) and also by a bf16 2048^3 matmul peak sampled at the same points.
Results: ``benchmarks/results/lm_speed.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.lm_quality import SHAKESPEARE, table, write_result
from lm.heap import OFF_VAR, retained_heap
from lm.train import cpu_has_native_bf16

PROBE_EVERY = 3  # training steps between two peak samples
PROBE_S = 1.0  # seconds of back-to-back matmuls per sample


class PeakProbe:
    """Matmul throughput (fp32 unless told) sampled between training steps: sustained and best.

    ``also``: a second probe (the bf16 one) sampled at the same points, for bf16 runs."""

    def __init__(self, n: int = 2048, dtype: Any = None) -> None:
        import torch

        self.n = n
        self.a = torch.randn(n, n, dtype=dtype or torch.float32)
        self.b = torch.randn(n, n, dtype=dtype or torch.float32)
        self.also: PeakProbe | None = None
        self.a @ self.b
        self.best = 0.0
        self.reset()

    def reset(self) -> None:
        self.flops, self.seconds, self.samples = 0.0, 0.0, 0
        if self.also is not None:
            self.also.reset()

    def sample(self, seconds: float = PROBE_S) -> None:
        f = 2.0 * self.n**3
        start = time.perf_counter()
        while True:
            t = time.perf_counter()
            self.a @ self.b
            dt = time.perf_counter() - t
            self.flops += f
            self.seconds += dt
            self.best = max(self.best, f / dt)
            if time.perf_counter() - start >= seconds:
                break
        self.samples += 1
        if self.also is not None:
            self.also.sample(seconds)

    @property
    def sustained(self) -> float:
        return self.flops / max(self.seconds, 1e-12)


class StepClock:
    """Per-step times from ``train_lm``'s progress callback, sampling the peak between steps.

    ``elapsed_s`` only advances inside a step (and its evaluation), so the probe's matmuls
    never count as training time. Step 1 (optimizer state allocation) and the last step (it
    also evaluates and writes checkpoints) are left out of the rate."""

    def __init__(self, probe: PeakProbe, steps: int) -> None:
        self.probe, self.steps = probe, steps
        self.prev: float | None = None
        self.times: list[float] = []

    def __call__(self, done: int, total: int, info: dict[str, Any]) -> None:
        step, elapsed = info["step"], info["elapsed_s"]
        if self.prev is not None and step < self.steps:
            self.times.append(elapsed - self.prev)
        self.prev = elapsed
        if step % PROBE_EVERY == 0 and step < self.steps:
            self.probe.sample()


def flops_per_token(params: int, n_layer: int, n_embd: int, T: int) -> float:
    return 6 * params + 12 * n_layer * n_embd * T


def run_ours(
    steps: int,
    out: Path,
    probe: PeakProbe,
    compile: bool = False,
    fused_loss: bool = True,
    dtype: str = "fp32",
) -> dict:
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
        dtype=dtype,
    )
    probe.reset()
    probe.sample()
    clock = StepClock(probe, steps)
    r = train_lm([SHAKESPEARE], out, cfg, show_progress=False, on_progress=clock)
    tokens = p.batch_size * p.block_size * len(clock.times)
    return {
        "parameters": r.parameters,
        "tokens_per_s": tokens / sum(clock.times),
        "compile_s": r.compile_s,
        "n_layer": p.n_layer,
        "n_embd": p.n_embd,
        "T": p.block_size,
        "batch": p.batch_size,
        "steps": r.step,
        "timed_steps": len(clock.times),
        "sustained_peak": probe.sustained,
        "peak_samples": probe.samples,
        "dtype": r.dtype,
        **_bf16_peak(probe),
    }


def _bf16_peak(probe: PeakProbe) -> dict:
    return {"sustained_bf16_peak": probe.also.sustained} if probe.also is not None else {}


def run_gpt2(steps: int, probe: PeakProbe, bf16: bool = False) -> dict:
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

    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step():
        with ctx:
            logits = model(input_ids=x[:, :-1]).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    probe.reset()
    probe.sample()
    el = 0.0
    for i in range(1, steps + 1):
        t = time.perf_counter()
        step()
        el += time.perf_counter() - t
        if i % PROBE_EVERY == 0 and i < steps:
            probe.sample()
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
        "timed_steps": steps,
        "sustained_peak": probe.sustained,
        "peak_samples": probe.samples,
        "dtype": "bf16" if bf16 else "fp32",
        **_bf16_peak(probe),
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
    probe = PeakProbe()
    # First, while glibc's malloc still has its start-up settings: the same loop with
    # lm/heap.py switched off, i.e. freed activations handed back to the kernel every step.
    # (glibc cannot switch its dynamic thresholds back on, so this row has to come first.)
    os.environ[OFF_VAR] = "0"
    try:
        runs = [
            ("ours small, glibc default heap", run_ours(steps, Path(tempfile.mkdtemp()), probe))
        ]
    finally:
        del os.environ[OFF_VAR]
    runs.append(("ours small (Llama)", run_ours(steps, Path(tempfile.mkdtemp()), probe)))
    # The same loop with the plain logits loss: what the chunked loss (lm/loss.py) buys.
    runs.append(
        (
            "ours small, logits loss",
            run_ours(steps, Path(tempfile.mkdtemp()), probe, fused_loss=False),
        )
    )
    if not a.no_compile:
        runs.append(
            ("ours small, --compile", run_ours(steps, Path(tempfile.mkdtemp()), probe, True))
        )
    with retained_heap():  # the baseline gets the same heap setting as our loop
        runs.append(("transformers GPT-2", run_gpt2(steps, probe)))
    if cpu_has_native_bf16():  # what --dtype auto trains with here; emulated bf16 is ~80x slower
        probe.also = PeakProbe(dtype=torch.bfloat16)
        runs.append(
            (
                "ours small, bf16 autocast",
                run_ours(steps, Path(tempfile.mkdtemp()), probe, dtype="bf16"),
            )
        )
        if not a.no_compile:
            runs.append(
                (
                    "ours small, bf16, --compile",
                    run_ours(steps, Path(tempfile.mkdtemp()), probe, True, dtype="bf16"),
                )
            )
        with retained_heap():
            runs.append(("transformers GPT-2, bf16 autocast", run_gpt2(steps, probe, bf16=True)))
        probe.also = None
    else:
        print("this CPU has no native bf16 (AVX512-BF16/AMX): bf16 rows skipped\n")
    burst = probe.best
    rows = []
    for name, r in runs:
        f = flops_per_token(r["parameters"], r["n_layer"], r["n_embd"], r["T"])
        r["flops_per_token"] = f
        r["model_flops_per_s"] = r["tokens_per_s"] * f
        r["mfu"] = r["model_flops_per_s"] / r["sustained_peak"]
        r["mfu_of_burst_peak"] = r["model_flops_per_s"] / burst
        if "sustained_bf16_peak" in r:
            r["mfu_of_bf16_peak"] = r["model_flops_per_s"] / r["sustained_bf16_peak"]
        bf = r.get("mfu_of_bf16_peak")
        rows.append(
            [
                name,
                f"{r['parameters']:,}",
                r["tokens_per_s"],
                r["model_flops_per_s"] / 1e9,
                r["sustained_peak"] / 1e9,
                f"{100 * r['mfu']:.1f}%",
                f"{100 * r['mfu_of_burst_peak']:.1f}%",
                f"{100 * bf:.1f}% of {r['sustained_bf16_peak'] / 1e9:.0f}" if bf else "-",
            ]
        )
    print(
        f"fp32 matmul ({a.threads} threads, 2048^3): burst peak {burst / 1e9:.1f} GFLOP/s (best"
        f" single matmul); sustained rate sampled every {PROBE_EVERY} steps of each run below\n"
    )
    print(
        table(
            rows,
            [
                "model",
                "params",
                "train tokens/s",
                "model GFLOP/s",
                "sustained peak",
                "of sustained",
                "of burst",
                "of bf16 sustained",
            ],
        )
    )
    path = write_result(
        "lm_speed",
        {"burst_peak_flops": burst, "threads": a.threads, "steps": steps, "runs": dict(runs)},
    )
    print(f"-> {path}\nnote: 2-core CPU shared with other agents; timings are noisy.")


if __name__ == "__main__":
    main()
