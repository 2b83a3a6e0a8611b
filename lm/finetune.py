"""Supervised chat fine-tuning (full or LoRA): ``llmos finetune --base DIR --data chat.jsonl``.

The base is one of our checkpoints or any local Hugging Face causal-LM directory with
safetensors weights. Each JSONL line is ``{"messages": [{"role", "content"}, ...]}``; the loss
covers only the assistant replies (prompts are masked to -100), found by rendering the
conversation with the tokenizer's chat template up to each reply.

With ``--lora`` only low-rank adapters on every linear layer train (``peft``); checkpoints hold
``adapter_model.safetensors`` plus a manifest naming the base and its fingerprint, so an
adapter is never applied to a different base. ``--merge`` folds the best adapter into the base
and writes a plain checkpoint to ``<out>/merged``. ``--resume`` continues from ``<out>/last``
(LoRA or full) with its optimizer and RNG state.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lm.checkpoint import (
    is_complete,
    load_training_state,
    read_manifest,
    resolve_model_dir,
    save_training_state,
    validate_dir,
    write_checkpoint_dir,
)
from lm.data import encode_chat, read_chat_jsonl
from lm.errors import CheckpointError, DataError, LMError
from lm.heap import in_retained_heap
from lm.model import count_parameters
from lm.optim import lr_at, make_optimizer, restore_optimizer, set_lr
from lm.train import ProgressFn, autocast_for, resolve_dtype


@dataclass
class FinetuneConfig:
    steps: int | None = None
    epochs: float = 3.0  # used when steps is None
    batch_size: int = 8
    learning_rate: float | None = None  # default 5e-5 full, 1e-3 LoRA
    warmup_steps: int = 10
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    grad_accum: int = 1
    max_len: int = 512
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    eval_interval: int = 50
    val_fraction: float = 0.1
    seed: int = 1337
    dtype: str = "auto"  # auto: bf16 autocast where bf16 matmuls are native (lm.train)


@dataclass
class FinetuneResult:
    out_dir: Path
    best_dir: Path
    last_dir: Path
    merged_dir: Path | None
    step: int
    best_val_loss: float
    val_loss: float
    trainable_parameters: int
    history: dict[str, list[Any]]
    dtype: str = "fp32"  # what "auto" resolved to


def _batch(examples: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[Any, Any, Any]:
    import torch

    T = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), T), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), T), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return ids, labels, mask


def _eval_loss(
    model: Any, examples: list[tuple[list[int], list[int]]], pad_id: int, bs: int
) -> float:
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(examples), bs):
            chunk = examples[i : i + bs]
            ids, labels, mask = _batch(chunk, pad_id)
            n = int((labels[:, 1:] != -100).sum())
            if n == 0:
                continue
            loss = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
            total += float(loss) * n
            count += n
    model.train()
    return total / max(count, 1)


@in_retained_heap  # freed activations reused, not page-faulted back (lm/heap.py)
def finetune(
    base: str | Path | None,
    data: str | Path,
    out_dir: str | Path,
    config: FinetuneConfig | None = None,
    *,
    lora: bool = False,
    merge: bool = False,
    resume: bool = False,
    on_progress: ProgressFn | None = None,
    show_progress: bool = True,
) -> FinetuneResult:
    """Fine-tune ``base`` on chat JSONL ``data``; write ``best/``, ``last/`` (and ``merged/``)."""
    import torch
    from tqdm import tqdm

    from lm._quiet import quiet_transformers
    from lm.loading import _load_base, attach_lora, base_fingerprint
    from lm.tokenizer import load_tokenizer

    quiet_transformers()
    cfg = config or FinetuneConfig()
    dtype = resolve_dtype(cfg.dtype, torch.device("cpu"))
    ctx = autocast_for(dtype, torch.device("cpu"))
    out = Path(out_dir).expanduser()
    last_dir, best_dir = out / "last", out / "best"
    if merge and not lora and not (resume and (last_dir / "adapter_config.json").exists()):
        raise LMError("--merge applies to LoRA fine-tuning; add --lora")
    convs = read_chat_jsonl(data)
    step, best, train_curve, val_curve = 0, math.inf, [], []
    opt_state = rng = None
    if resume:
        if not is_complete(last_dir):
            raise CheckpointError(f"nothing to resume: {last_dir} holds no complete checkpoint")
        manifest = read_manifest(last_dir)
        state, opt_state, rng = load_training_state(last_dir)
        cfg = FinetuneConfig(**{**state["config"], **({"steps": cfg.steps} if cfg.steps else {})})
        step, best = state["step"], state["best_val_loss"]
        train_curve, val_curve = state["train_curve"], state["val_curve"]
        base_dir = Path(manifest["base_dir"])
        lora = manifest.get("kind") == "lm-lora"
        if lora:
            loaded = attach_lora(base_dir, last_dir, manifest, dtype=torch.float32, trainable=True)
            model, tokenizer = loaded.model, loaded.tokenizer
        else:
            validate_dir(last_dir)
            model, tokenizer = _load_base(last_dir, torch.float32), load_tokenizer(last_dir)
    else:
        if base is None:
            raise LMError("give the model to fine-tune: --base DIR")
        base_dir = resolve_model_dir(base)
        validate_dir(base_dir)
        model, tokenizer = _load_base(base_dir, torch.float32), load_tokenizer(base_dir)
        if lora:
            from peft import LoraConfig, get_peft_model

            lcfg = LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, lcfg)
    base_dir = base_dir.resolve()
    fingerprint = base_fingerprint(base_dir)
    max_len = min(cfg.max_len, int(getattr(model.config, "max_position_embeddings", cfg.max_len)))
    examples = [encode_chat(tokenizer, c, max_len) for c in convs]
    examples = [e for e in examples if any(t != -100 for t in e[1][1:])]
    if not examples:
        raise DataError(
            f"{data}: no assistant tokens left to learn from after truncation to {max_len}"
        )
    n_val = int(len(examples) * cfg.val_fraction) if len(examples) >= 10 else 0
    train_ex = examples[: len(examples) - n_val]
    val_ex = examples[len(examples) - n_val :] or train_ex[: min(len(train_ex), 16)]
    total = cfg.steps or max(1, math.ceil(cfg.epochs * len(train_ex) / cfg.batch_size))
    if resume and step >= total and not (merge and lora):
        raise LMError(
            f"this fine-tuning run already trained its {step} steps; give a larger --steps "
            "to train further"
        )
    lr = cfg.learning_rate or (1e-3 if lora else 5e-5)
    model.train()
    optimizer = make_optimizer(list(model.parameters()), cfg.optimizer, lr, cfg.weight_decay)
    restore_optimizer(optimizer, opt_state, last_dir)
    gen = torch.Generator().manual_seed(cfg.seed)
    if rng:
        gen.set_state(rng["batch"])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    kind = "lm-lora" if lora else "lm-sft"
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def save(dst: Path, with_state: bool, val_loss: float) -> None:
        def fill(tmp: Path) -> None:
            model.save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
            if with_state:
                st = {
                    "config": asdict(cfg),
                    "step": step,
                    "best_val_loss": best,
                    "train_curve": train_curve,
                    "val_curve": val_curve,
                }
                save_training_state(tmp, optimizer, st, {"batch": gen.get_state()})

        write_checkpoint_dir(
            dst,
            fill,
            {
                "kind": kind,
                "base_dir": str(base_dir),
                "base_fingerprint": fingerprint,
                "step": step,
                "eval_loss": val_loss,
                "parameters": count_parameters(model),
            },
        )

    bar = tqdm(
        total=total,
        initial=min(step, total),
        unit="step",
        desc=f"finetune ({'lora' if lora else 'full'})",
        disable=not show_progress,
        dynamic_ncols=True,
    )
    val_loss = val_curve[-1][1] if val_curve else math.inf
    try:
        while step < total:
            t0 = time.perf_counter()
            set_lr(optimizer, lr_at(step / total, step, lr, cfg.warmup_steps))
            loss_sum = 0.0
            for _ in range(cfg.grad_accum):
                idx = torch.randint(
                    0, len(train_ex), (min(cfg.batch_size, len(train_ex)),), generator=gen
                )
                ids, labels, mask = _batch([train_ex[i] for i in idx.tolist()], pad)
                with ctx:  # the loss is computed on fp32 logits (transformers upcasts them)
                    res = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
                loss = res.loss / cfg.grad_accum
                loss.backward()
                loss_sum += float(loss.detach())
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(
                    [p for p in model.parameters() if p.requires_grad], cfg.grad_clip
                )
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            train_curve.append([step, round(loss_sum, 5)])
            if step % cfg.eval_interval == 0 or step == total:
                val_loss = _eval_loss(model, val_ex, pad, cfg.batch_size)
                val_curve.append([step, round(val_loss, 5)])
                if val_loss < best:
                    best = val_loss
                    save(best_dir, False, val_loss)
                save(last_dir, True, val_loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum:.3f}", val=f"{val_loss:.3f}", refresh=False)
            if on_progress:
                on_progress(
                    step,
                    total,
                    {
                        "step": step,
                        "loss": loss_sum,
                        "val_loss": val_loss,
                        "step_s": time.perf_counter() - t0,
                    },
                )
    except KeyboardInterrupt:
        save(last_dir, True, val_loss)
        raise LMError(f"fine-tuning interrupted at step {step}; continue with --resume") from None
    finally:
        bar.close()
    from lm.plot import plot_loss_curve

    plot_loss_curve(
        out / "loss_curve.png",
        [(int(s), v) for s, v in train_curve],
        [(int(s), v) for s, v in val_curve],
        title="fine-tuning loss",
    )
    merged = merge_lora(best_dir, out / "merged") if merge and lora else None
    return FinetuneResult(
        out_dir=out,
        best_dir=best_dir,
        last_dir=last_dir,
        merged_dir=merged,
        step=step,
        best_val_loss=best,
        val_loss=val_loss,
        trainable_parameters=n_train,
        history={"train": train_curve, "val": val_curve},
        dtype=dtype,
    )


def merge_lora(adapter_dir: Path, out_dir: Path) -> Path:
    """Fold a LoRA adapter into its base and write a plain checkpoint to ``out_dir``."""
    import torch

    from lm.loading import attach_lora

    manifest = read_manifest(adapter_dir)
    if manifest.get("kind") != "lm-lora":
        raise CheckpointError(f"{adapter_dir} is not a LoRA checkpoint")
    loaded = attach_lora(
        Path(manifest["base_dir"]), adapter_dir, manifest, dtype=torch.float32, trainable=False
    )
    model = loaded.model.merge_and_unload()

    def fill(tmp: Path) -> None:
        model.save_pretrained(str(tmp), safe_serialization=True)
        loaded.tokenizer.save_pretrained(str(tmp))

    return write_checkpoint_dir(
        out_dir,
        fill,
        {
            "kind": "lm",
            "merged_from": str(adapter_dir),
            "base_dir": manifest["base_dir"],
            "step": manifest.get("step"),
            "eval_loss": manifest.get("eval_loss"),
            "parameters": count_parameters(model),
        },
    )
