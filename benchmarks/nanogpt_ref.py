"""A plain-PyTorch GPT in the style of nanoGPT, written for llmos as the reference baseline.

GPT-2 block (LayerNorm, learned positions, causal self-attention via SDPA, GELU MLP with a 4x
hidden layer), tied embeddings, and the simplest training loop: random windows, AdamW, warmup
+ cosine schedule, gradient clipping, a wall-clock budget. ``benchmarks/lm_quality.py`` trains
it side by side with our Llama-style model at the same parameter count and the same budget.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 192
    dropout: float = 0.0


class SelfAttention(nn.Module):
    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.n_head = c.n_head
        self.qkv = nn.Linear(c.n_embd, 3 * c.n_embd, bias=False)
        self.proj = nn.Linear(c.n_embd, c.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs) so every head attends independently
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(c.n_embd, bias=False)
        self.attn = SelfAttention(c)
        self.ln2 = nn.LayerNorm(c.n_embd, bias=False)
        self.fc = nn.Linear(c.n_embd, 4 * c.n_embd, bias=False)
        self.out = nn.Linear(4 * c.n_embd, c.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.config = c
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.block_size, c.n_embd)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd, bias=False)
        self.head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.head.weight = self.wte.weight  # tied, as GPT-2
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith(("proj.weight", "out.weight")):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights counted once


def batch(
    data: np.ndarray, block: int, bs: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    ix = torch.randint(0, len(data) - block - 1, (bs,), generator=gen).tolist()
    w = torch.from_numpy(np.stack([data[i : i + block + 1] for i in ix]).astype(np.int64))
    return w[:, :-1], w[:, 1:]


def train_ref(
    model: GPT,
    train: np.ndarray,
    budget_s: float,
    *,
    batch_size: int,
    lr: float,
    warmup: int = 50,
    min_ratio: float = 0.1,
    seed: int = 1337,
) -> dict:
    """Train for ``budget_s`` seconds of wall-clock; return steps and tokens/s."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
    )
    block = model.config.block_size
    # Untimed warm-up forward/backward (kernel set-up), as lm.train does before its clock starts.
    wx, wy = batch(train, block, batch_size, torch.Generator().manual_seed(0))
    F.cross_entropy(model(wx).flatten(0, 1), wy.flatten()).backward()
    opt.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    step = 0
    model.train()
    while (elapsed := time.perf_counter() - t0) < budget_s:
        frac = elapsed / budget_s
        cur = (
            lr * (step + 1) / warmup
            if step < warmup
            else lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))
        )
        for g in opt.param_groups:
            g["lr"] = cur
        x, y = batch(train, block, batch_size, gen)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
    elapsed = time.perf_counter() - t0
    return {
        "steps": step,
        "elapsed_s": elapsed,
        "tokens_per_s": step * batch_size * block / elapsed,
    }
