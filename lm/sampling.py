"""Next-token selection: greedy, temperature, top-k, top-p and repetition penalty.

All operations are batched over rows and use a per-call ``torch.Generator``, so concurrent
calls never share random state and a given ``seed`` reproduces the same text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lm.errors import LMError


@dataclass
class SamplingOptions:
    max_new_tokens: int = 128
    temperature: float = 0.8  # 0 means greedy
    top_k: int | None = 50
    top_p: float | None = 0.95
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    greedy: bool = False

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise LMError("max_new_tokens must be at least 1")
        if self.temperature < 0:
            raise LMError("temperature must be >= 0")
        if self.top_k is not None and self.top_k < 1:
            raise LMError("top_k must be >= 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise LMError("top_p must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise LMError("repetition_penalty must be > 0")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise LMError("stop strings must be non-empty strings")

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0


def apply_repetition_penalty(
    logits: torch.Tensor, seen: torch.Tensor, penalty: float
) -> torch.Tensor:
    """CTRL-style: divide positive and multiply negative logits of tokens already present."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability mass reaches ``p`` (at least one)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cum - sorted_logits.softmax(dim=-1) >= p  # mass *before* this token already >= p
    remove[..., 0] = False
    mask = remove.scatter(-1, order, remove)
    return logits.masked_fill(mask, float("-inf"))


def select(
    logits: torch.Tensor, opts: SamplingOptions, seen: torch.Tensor | None, gen: torch.Generator
) -> torch.Tensor:
    """Next token per row, shape (B,), from last-position ``logits`` (B, V)."""
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, opts.repetition_penalty)
    if opts.is_greedy:
        return logits.argmax(dim=-1)
    logits = logits / opts.temperature
    if opts.top_k:
        logits = filter_top_k(logits, opts.top_k)
    if opts.top_p is not None:
        logits = filter_top_p(logits, opts.top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)
