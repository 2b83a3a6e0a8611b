"""Pretrain a causal LM on a plain-text corpus: ``llmos train lm`` and ``python -m lm.train``.

One process by default (CPU or one GPU). The same script scales out with accelerate::

    accelerate launch --num_processes 8 -m lm.train --corpus data/ --preset base --steps 50000

Under ``accelerate launch`` or ``torchrun`` (``WORLD_SIZE > 1``) the model and optimizer go
through ``Accelerator.prepare`` (DDP; gloo on CPUs), each rank samples its own batches (seed +
rank), gradients are averaged by DDP once per optimizer step, all ranks stop at the same step
(a time budget is read as the slowest rank's clock), and only rank 0 writes checkpoints, logs
and the loss curve. Multi-node works the same way (``--num_machines``/``--machine_rank``).
Tested with two CPU processes (``torchrun --standalone --nproc_per_node 2 -m lm.train ...``,
``tests/lm/test_ddp.py``); multi-GPU and multi-node are not tested here.

The loop follows nanoGPT: random windows of the token stream, the last 10% held out, warmup +
cosine learning rate, gradient accumulation and clipping, periodic evaluation on fixed held-out
batches, ``best/`` (lowest validation loss) and ``last/`` (resumable, with optimizer and RNG
state) checkpoints, and ``loss_curve.png``. ``--resume`` continues from ``last/`` on the same
data order, so the loss curve carries on exactly where it stopped.

Precision: ``--dtype auto`` trains under bf16 autocast where bf16 matmuls are native (GPUs with
bf16, CPUs with AVX512-BF16 or AMX: ``resolve_dtype``) and in fp32 elsewhere; the weights and
optimizer state are fp32 either way, so checkpoints do not depend on it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lm.checkpoint import (
    is_complete,
    load_training_state,
    save_training_state,
    write_checkpoint_dir,
)
from lm.data import encode_documents, get_batch, read_corpus, split_tokens
from lm.errors import CheckpointError, LMError
from lm.heap import in_retained_heap
from lm.loss import compiled_block, fused_loss_parts, linear_cross_entropy
from lm.model import build_config, build_model, count_parameters, get_preset
from lm.optim import OPTIMIZERS, lr_at, make_optimizer, restore_optimizer, set_lr

ProgressFn = Callable[[int, int, dict[str, Any]], None]


@dataclass
class TrainConfig:
    """Options of one pretraining run; ``None`` means "the preset's default"."""

    preset: str = "small"
    steps: int | None = None  # stop after this many optimizer steps
    time_budget_s: float | None = None  # or after this much wall-clock time
    batch_size: int | None = None
    block_size: int | None = None
    learning_rate: float | None = None
    min_lr_ratio: float = 0.1
    warmup_steps: int | None = None
    weight_decay: float = 0.1
    optimizer: str = "adamw"
    grad_clip: float = 1.0
    grad_accum: int = 1
    micro_batch: int | None = None  # rows per forward/backward pass; None: see _micro_rows
    eval_interval: int = 100
    eval_iters: int = 20
    seed: int = 1337
    dtype: str = "auto"  # auto: bf16 autocast where bf16 matmuls are native (resolve_dtype)
    compile: bool = False
    fused_loss: bool = True  # chunked output layer + loss (lm/loss.py) where the model allows
    tokenizer: str = "bpe"  # or "char"
    vocab_size: int | None = None
    val_fraction: float = 0.1
    device: str = "auto"
    model_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {"num_hidden_layers": 6}

    def validate(self) -> None:
        if self.optimizer.lower() not in OPTIMIZERS:
            raise LMError(
                f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"
            )
        if self.tokenizer not in ("bpe", "char"):
            raise LMError("tokenizer must be 'bpe' or 'char'")
        if self.steps is not None and self.steps <= 0:
            raise LMError("--steps must be positive")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise LMError("--warmup must be 0 or more steps")
        if self.grad_accum < 1 or self.eval_interval < 1 or self.eval_iters < 1:
            raise LMError("grad_accum, eval_interval and eval_iters must be at least 1")
        if self.micro_batch is not None and self.micro_batch < 1:
            raise LMError("--micro-batch must be at least 1 row")
        check_dtype(self.dtype)
        get_preset(self.preset)


@dataclass
class TrainResult:
    out_dir: Path
    best_dir: Path
    last_dir: Path
    step: int
    best_val_loss: float
    val_loss: float
    tokens_per_s: float
    elapsed_s: float
    parameters: int
    history: dict[str, list[Any]]
    compile_s: float = 0.0  # torch.compile's first step, counted in elapsed_s (not in tokens/s)
    dtype: str = "fp32"  # what "auto" resolved to: "bf16" (autocast) or "fp32"


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def native_bf16_in(cpuinfo: str) -> bool:
    """Whether a ``/proc/cpuinfo`` text lists AVX512-BF16 or AMX-BF16 (bf16 multiplies in
    hardware) among its CPU flags."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return bool(set(line.split(":", 1)[-1].split()) & {"avx512_bf16", "amx_bf16"})
    return False


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (Linux; elsewhere assumed not).

    Only then is bf16 autocast faster on a CPU: a 2048^3 bf16 matmul runs at about 2.5x the
    fp32 rate on a Zen 4 core with AVX512-BF16 (364-396 against 145-154 GFLOP/s, 2 threads),
    while a CPU with AVX2 alone emulates it (issue 4 puts that at about 1/80 of fp32). Read from the CPU's flags,
    not timed, so the choice (and with it the run's numerics) is the same on every run."""
    try:
        return native_bf16_in(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        return False


DTYPES = ("auto", "fp32", "bf16")


def check_dtype(name: str) -> None:
    if name not in DTYPES:
        raise LMError(f"dtype must be {', '.join(DTYPES[:-1])} or {DTYPES[-1]}")


def resolve_dtype(name: str, device: Any) -> str:
    """``auto`` becomes ``bf16`` where bf16 matmuls are native (GPUs with bf16, CPUs with
    ``cpu_has_native_bf16``) and ``fp32`` elsewhere; ``fp32`` and ``bf16`` are kept."""
    import torch

    check_dtype(name)
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    return name


def autocast_for(dtype: str, device: Any) -> Any:
    """bf16 autocast (weights, optimizer state and the loss stay fp32), or no context."""
    import torch

    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


MICRO_TOKENS = 2048  # tokens per forward/backward pass on a CPU (see _micro_rows)


def _micro_rows(cfg: TrainConfig, batch: int, block: int, device: Any) -> int:
    """Rows per forward/backward pass: the batch is split into micro-batches whose gradients
    add up to the whole batch's (each pass's mean loss weighted by its share of the rows).

    Same batches, same update, less memory; on a CPU also faster, most likely because each
    pass's activations stay in cache for the element-wise work between the matmuls (not
    measured with cache counters). ``small`` on 2 cores, 16 x 256 tokens per step (session 15,
    12 interleaved rounds): 8-row passes took 828 against 849 ms a step (minimum) with
    ``--compile`` and 894 against 969 ms eager; 4-row passes gained 1-3% on the minimum with
    mixed medians, so 2,048 tokens stays. GPUs want the whole batch at once.
    """
    if cfg.micro_batch is not None:
        return min(cfg.micro_batch, batch)
    if device.type != "cpu":
        return batch
    return max(1, min(batch, MICRO_TOKENS // max(block, 1)))


def _budget_progress(cfg: TrainConfig, run: _Run) -> float:
    """Share of the budget spent: the larger of steps and time when both are given."""
    fracs = [0.0]
    if cfg.steps:
        fracs.append(run.step / cfg.steps)
    if cfg.time_budget_s:
        fracs.append(run.elapsed_s / cfg.time_budget_s)
    return max(fracs)


def _corpus_hash(docs: list[str]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(hashlib.sha256(d.encode("utf-8", "surrogatepass")).digest())
    return h.hexdigest()[:16]


@dataclass
class _Run:
    """Everything that changes during training and is saved in ``last/``."""

    step: int = 0
    elapsed_s: float = 0.0
    tokens: int = 0
    best_val_loss: float = math.inf
    train_curve: list[list[float]] = field(default_factory=list)  # [step, loss]
    val_curve: list[list[float]] = field(default_factory=list)


def estimate_loss(
    model: Any, data: Any, block: int, batch: int, iters: int, device: Any, ctx: Any
) -> float:
    """Mean loss on ``iters`` fixed batches (same seed every call, so evaluations compare)."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    model.eval()
    losses = []
    with torch.inference_mode():
        for _ in range(iters):
            x, y = get_batch(data, block, batch, gen)
            with ctx:
                logits = model(input_ids=x.to(device), use_cache=False).logits
            losses.append(
                F.cross_entropy(logits.float().flatten(0, 1), y.to(device).flatten()).item()
            )
    model.train()
    return float(sum(losses) / len(losses))


@in_retained_heap  # freed activations reused, not page-faulted back (lm/heap.py)
def train_lm(
    corpus: list[str | Path],
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    on_progress: ProgressFn | None = None,
    show_progress: bool = True,
    documents: list[str] | None = None,
) -> TrainResult:
    """Train (or resume training) a causal LM on ``corpus``; checkpoints go to ``out_dir``.

    Args:
        corpus: text files and/or directories of text files.
        out_dir: run directory; receives ``best/``, ``last/`` and ``loss_curve.png``.
        config: run options (preset, budget, optimizer ...).
        resume: continue from ``out_dir/last`` (same data order, same loss curve).
        on_progress: called as ``on_progress(done, total, info)`` after every step.
        documents: extra in-memory documents trained on with the files (e.g. rendered chats).
    """
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from lm._quiet import quiet_transformers
    from lm.tokenizer import build_char_tokenizer, train_bpe_tokenizer

    quiet_transformers()

    cfg = config or TrainConfig()
    out = Path(out_dir).expanduser()
    last_dir, best_dir = out / "last", out / "best"
    docs = read_corpus(list(corpus)) if corpus else []
    docs += [d for d in documents or [] if d.strip()]
    if not docs:
        raise LMError("the corpus is empty")
    corpus_id = _corpus_hash(docs)
    run = _Run()
    opt_state = rng = None
    if resume:
        if not is_complete(last_dir):
            raise CheckpointError(f"nothing to resume: {last_dir} holds no complete checkpoint")
        from lm.loading import load_causal_lm

        loaded = load_causal_lm(last_dir)
        model, tokenizer = loaded.model, loaded.tokenizer
        state, opt_state, rng = load_training_state(last_dir)
        saved_cfg = dict(state["config"])
        # The budget may be extended on resume; the shape of the run may not change.
        for key in ("steps", "time_budget_s"):
            if getattr(cfg, key) is not None:
                saved_cfg[key] = getattr(cfg, key)
        cfg = TrainConfig(**saved_cfg)
        if state.get("corpus") != corpus_id:
            raise LMError(
                "the corpus changed since this run started; resume needs the same --corpus"
            )
        run = _Run(**state["run"])
        # The budget counts the whole run, not this invocation: say so rather than "train"
        # zero steps and report the old figures as if they were new.
        if _budget_progress(cfg, run) >= 1.0:
            given = [f"--steps {cfg.steps}"] if cfg.steps else []
            if cfg.time_budget_s:
                given.append(f"--time {cfg.time_budget_s:.0f}s")
            raise LMError(
                f"this run already trained {run.step} steps in {run.elapsed_s:.0f}s, its whole "
                f"budget ({' '.join(given)}); the budget counts the whole run, so give a larger "
                "--steps or --time to train further"
            )
    cfg.validate()
    preset = get_preset(cfg.preset)
    block = cfg.block_size or preset.block_size
    batch = cfg.batch_size or preset.batch_size
    base_lr = cfg.learning_rate or preset.learning_rate
    warmup = preset.warmup_steps if cfg.warmup_steps is None else cfg.warmup_steps
    if cfg.steps is None and cfg.time_budget_s is None:
        raise LMError("give a budget: --steps N or --time 20m")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    accelerator = None
    if world > 1:  # launched by `accelerate launch` / torchrun
        from accelerate import Accelerator

        # Accumulation is done (and the loss divided) below; telling accelerate as well would
        # divide the loss a second time in ``accelerator.backward``. Without a GPU, accelerate
        # only forms a process group when told to run on CPUs: otherwise every process would
        # train alone and all of them would write the same checkpoints.
        accelerator = Accelerator(cpu=_device(cfg.device).type == "cpu")
    rank = accelerator.process_index if accelerator else 0
    main = rank == 0
    torch.manual_seed(cfg.seed + rank)

    if not resume:
        text_iter = (line for d in docs for line in d.splitlines(keepends=True))
        if cfg.tokenizer == "char":
            tokenizer = build_char_tokenizer("".join(docs), model_max_length=block)
        else:
            vocab = cfg.vocab_size or preset.vocab_size
            tokenizer = train_bpe_tokenizer(text_iter, vocab_size=vocab, model_max_length=block)
        overrides = {"max_position_embeddings": block, **cfg.model_overrides}
        overrides.setdefault("pad_token_id", tokenizer.pad_token_id)
        overrides.setdefault("eos_token_id", tokenizer.eos_token_id)
        overrides.setdefault("bos_token_id", tokenizer.bos_token_id)
        model = build_model(build_config(preset, len(tokenizer), **overrides))
    tokens = encode_documents(tokenizer, docs)
    split = split_tokens(tokens, block, cfg.val_fraction)
    device = accelerator.device if accelerator else _device(cfg.device)
    model.to(device)
    model.train()
    optimizer = make_optimizer(list(model.parameters()), cfg.optimizer, base_lr, cfg.weight_decay)
    restore_optimizer(optimizer, opt_state, last_dir)
    gen = torch.Generator().manual_seed(cfg.seed + rank)
    if rng:
        gen.set_state(rng["batch"])
        torch.set_rng_state(rng["torch"])
    fwd = model
    if accelerator:
        fwd, optimizer = accelerator.prepare(model, optimizer)
    dtype = resolve_dtype(cfg.dtype, device)
    ctx = autocast_for(dtype, device)
    # The chunked loss (lm/loss.py) needs the bare model: under accelerate's wrapper the plain
    # logits path is used. Under bf16 autocast its matmuls run in bf16 too (compute_dtype).
    parts = None
    if cfg.fused_loss and accelerator is None:
        parts = fused_loss_parts(model)
    body, head = parts if parts else (None, None)
    compute_dtype = torch.bfloat16 if dtype == "bf16" else None
    loss_block = None  # the loss's per-chunk softmax (lm/loss.py): eager unless compiling
    if cfg.compile:  # compiled graphs: the training forward and loss (evaluation runs eager)
        if body is not None:
            body = torch.compile(body)
            loss_block = compiled_block()
        else:
            fwd = torch.compile(fwd)

    micro = _micro_rows(cfg, batch, block, device)

    def backward(x: Any, y: Any, scale: float, sync: bool = True) -> float:
        """Backward of ``scale`` x the mean loss of batch ``(x, y)``, ``micro`` rows at a
        time; returns the scaled loss. Under DDP the gradients are all-reduced once, in the
        last pass of a step (``sync``), not after every micro-batch and accumulation pass."""
        total = 0.0
        for s in range(0, len(x), micro):
            xs, ys = x[s : s + micro], y[s : s + micro]
            loss = batch_loss(xs, ys) * (scale * len(xs) / len(x))
            if accelerator:
                last = sync and s + micro >= len(x)
                with contextlib.nullcontext() if last else accelerator.no_sync(fwd):
                    accelerator.backward(loss)
            else:
                loss.backward()
            total += loss.item()
        return total

    def progress() -> float:
        """``_budget_progress`` agreed by every process: the slowest clock's view under DDP,
        so all processes stop at the same step and use the same learning rate (a time budget
        read per process would let one leave the loop while another waits in an all-reduce)."""
        p = _budget_progress(cfg, run)
        if accelerator is None:
            return p
        import torch.distributed as dist

        t = torch.tensor([p], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    # use_cache=False: training needs no KV cache, and a compiled forward would return the
    # cache's tensors as extra outputs whose (zero) gradients its backward then adds.
    def batch_loss(x: Any, y: Any) -> Any:
        if body is not None and head is not None:
            with ctx:
                hidden = body(input_ids=x, use_cache=False).last_hidden_state
            return linear_cross_entropy(
                hidden, head.weight, y, block=loss_block, compute_dtype=compute_dtype
            )
        with ctx:
            logits = fwd(input_ids=x, use_cache=False).logits
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())

    n_params = count_parameters(model)
    manifest_base = {
        "kind": "lm",
        "preset": cfg.preset,
        "tokenizer": cfg.tokenizer,
        "parameters": n_params,
        "block_size": block,
    }

    def save(dst: Path, with_state: bool, val_loss: float) -> None:
        def fill(tmp: Path) -> None:
            model.save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
            if with_state:
                state = {"config": asdict(cfg), "run": asdict(run), "corpus": corpus_id}
                rngs = {"batch": gen.get_state(), "torch": torch.get_rng_state()}
                save_training_state(tmp, optimizer, state, rngs)

        manifest = {
            **manifest_base,
            "step": run.step,
            "eval_loss": val_loss,
            "perplexity": math.exp(min(val_loss, 50.0)),
            "tokens_seen": run.tokens,
        }
        write_checkpoint_dir(dst, fill, manifest)

    total = cfg.steps if cfg.steps else round(cfg.time_budget_s or 0)
    bar = tqdm(
        total=total,
        initial=min(total, run.step if cfg.steps else int(run.elapsed_s)),
        unit="step" if cfg.steps else "s",
        disable=not (show_progress and main),
        desc="train lm",
        dynamic_ncols=True,
    )
    val_loss = run.val_curve[-1][1] if run.val_curve else math.inf
    # One untimed forward/backward on a throwaway batch: the first call pays lazy imports and
    # kernel set-up (seconds), which would otherwise eat into a wall-clock budget. No optimizer
    # step and a separate generator, so the run's weights and data order are unchanged.
    # With --compile this call also compiles the forward and backward graphs (tens of seconds
    # on a CPU): that time is the user's, so it counts against a wall-clock budget.
    t_warm = time.perf_counter()
    wx, wy = get_batch(split.train, block, batch, torch.Generator().manual_seed(0))
    backward(wx.to(device), wy.to(device), 1.0)
    optimizer.zero_grad(set_to_none=True)
    del wx, wy
    compile_s = time.perf_counter() - t_warm if cfg.compile else 0.0
    run.elapsed_s += compile_s
    if compile_s and progress() >= 1.0 and run.step == 0:
        bar.close()
        raise LMError(
            f"compiling the model took {compile_s:.0f}s, the whole budget; "
            "give more --time or leave out --compile"
        )
    tok_per_step = batch * block * cfg.grad_accum * world
    rate_t, rate_tokens = time.perf_counter(), 0
    tps = 0.0
    try:
        prog = progress()
        while prog < 1.0:
            t0 = time.perf_counter()
            lr = lr_at(prog, run.step, base_lr, warmup, cfg.min_lr_ratio)
            set_lr(optimizer, lr)
            loss_sum = 0.0
            for i in range(cfg.grad_accum):
                x, y = get_batch(split.train, block, batch, gen)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                loss_sum += backward(x, y, 1.0 / cfg.grad_accum, sync=i == cfg.grad_accum - 1)
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if not math.isfinite(loss_sum):
                raise LMError(f"training diverged at step {run.step} (loss {loss_sum}); lower --lr")
            run.step += 1
            run.tokens += tok_per_step
            run.train_curve.append([run.step, round(loss_sum, 5)])
            run.elapsed_s += time.perf_counter() - t0
            rate_tokens += tok_per_step
            now = time.perf_counter()
            if now - rate_t > 2.0 or tps == 0.0:
                tps = rate_tokens / max(now - rate_t, 1e-9)
                rate_t, rate_tokens = now, 0
            prog = progress()
            done = prog >= 1.0
            if run.step % cfg.eval_interval == 0 or done:
                t_eval = time.perf_counter()
                val_loss = estimate_loss(fwd, split.val, block, batch, cfg.eval_iters, device, ctx)
                run.val_curve.append([run.step, round(val_loss, 5)])
                if main:
                    if val_loss < run.best_val_loss:
                        run.best_val_loss = val_loss
                        save(best_dir, False, val_loss)
                    save(last_dir, True, val_loss)
                run.elapsed_s += time.perf_counter() - t_eval
            info = {
                "step": run.step,
                "loss": loss_sum,
                "val_loss": val_loss,
                "lr": lr,
                "tokens_per_s": tps,
                "elapsed_s": run.elapsed_s,
            }
            bar.n = min(total, run.step if cfg.steps else int(run.elapsed_s))
            bar.set_postfix(
                loss=f"{loss_sum:.3f}", val=f"{val_loss:.3f}", tok_s=f"{tps:,.0f}", refresh=False
            )
            bar.refresh()
            if on_progress:
                on_progress(bar.n, total, info)
    except KeyboardInterrupt:
        if main and run.step > 0:
            save(last_dir, True, val_loss)
        raise LMError(f"training interrupted at step {run.step}; continue with --resume") from None
    finally:
        bar.close()
        if main and run.train_curve:
            _write_curve(out, run)
    return TrainResult(
        out_dir=out,
        best_dir=best_dir,
        last_dir=last_dir,
        step=run.step,
        best_val_loss=run.best_val_loss,
        val_loss=val_loss,
        tokens_per_s=run.tokens / max(run.elapsed_s - compile_s, 1e-9),
        elapsed_s=run.elapsed_s,
        parameters=n_params,
        history={"train": run.train_curve, "val": run.val_curve},
        compile_s=compile_s,
        dtype=dtype,
    )


def _write_curve(out: Path, run: _Run) -> None:
    from lm.plot import plot_loss_curve

    # Smooth the noisy per-step train loss with a running mean for the plot.
    k = max(1, len(run.train_curve) // 200)
    smooth = [
        (
            int(run.train_curve[i][0]),
            sum(v for _, v in run.train_curve[max(0, i - k + 1) : i + 1]) / min(k, i + 1),
        )
        for i in range(len(run.train_curve))
    ]
    plot_loss_curve(out / "loss_curve.png", smooth, [(int(s), v) for s, v in run.val_curve])


def main(argv: list[str] | None = None) -> None:
    """``python -m lm.train`` (also under ``accelerate launch``)."""
    import argparse

    from lm.optim import parse_duration

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="small")
    p.add_argument("--steps", type=int)
    p.add_argument("--time")
    p.add_argument("--optimizer", default="adamw")
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup", type=int)
    p.add_argument("--eval-interval", type=int, default=100)
    p.add_argument("--block-size", type=int)
    p.add_argument("--vocab-size", type=int)
    p.add_argument("--micro-batch", type=int, help="rows per forward/backward pass")
    p.add_argument("--dtype", default="auto", choices=DTYPES)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--resume", action="store_true")
    a = p.parse_args(argv)
    cfg = TrainConfig(
        preset=a.preset,
        steps=a.steps,
        optimizer=a.optimizer,
        learning_rate=a.lr,
        warmup_steps=a.warmup,
        eval_interval=a.eval_interval,
        block_size=a.block_size,
        vocab_size=a.vocab_size,
        micro_batch=a.micro_batch,
        dtype=a.dtype,
        compile=a.compile,
        time_budget_s=parse_duration(a.time) if a.time else None,
    )
    r = train_lm(a.corpus, a.out, cfg, resume=a.resume)
    if int(os.environ.get("RANK", "0")) == 0:  # one line, not one per process
        print(
            f"step {r.step}  val loss {r.val_loss:.4f}  best {r.best_val_loss:.4f}  "
            f"({r.dtype})  -> {r.best_dir}"
        )


if __name__ == "__main__":
    main()
