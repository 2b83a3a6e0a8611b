"""A lean Llama forward pass for decoding, with a preallocated KV cache.

``transformers``' generic forward spends most of a small model's decode step in Python
(mask building, cache bookkeeping, output dataclasses). This module re-expresses the same
computation for Llama-family checkpoints with fused projections (q/k/v in one matmul, gate/up in
one matmul), a static per-call cache, and nothing else, so batch-1 decoding runs much closer
to the speed of the matmuls. Its logits match ``LlamaForCausalLM`` (tested with ``allclose``);
models it does not cover fall back to the transformers forward in ``lm.generate``.

Shapes: B batch, T new tokens, S cache length, H heads, Hkv key/value heads, D head size.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn


def supports(model: Any) -> bool:
    """True for plain Llama-style configs this forward reproduces exactly."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", "") not in {"llama", "mistral", "qwen2"}:
        return False
    rope = getattr(cfg, "rope_parameters", None) or {}
    return (
        rope.get("rope_type", "default") == "default"
        and not getattr(cfg, "attention_bias", False)
        and not getattr(cfg, "mlp_bias", False)
        and getattr(cfg, "hidden_act", "silu") == "silu"
        and getattr(cfg, "sliding_window", None) is None
        and getattr(cfg, "model_type", "") != "qwen2"  # qwen2 has q/k/v biases
    )


class _Layer(nn.Module):
    def __init__(self, layer: Any) -> None:
        super().__init__()
        att, mlp = layer.self_attn, layer.mlp
        self.ln1 = nn.Parameter(layer.input_layernorm.weight.detach().clone(), requires_grad=False)
        self.ln2 = nn.Parameter(
            layer.post_attention_layernorm.weight.detach().clone(), requires_grad=False
        )
        w_qkv = torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]).detach()
        self.qkv = nn.Linear(w_qkv.shape[1], w_qkv.shape[0], bias=False)
        self.qkv.weight = nn.Parameter(w_qkv.clone(), requires_grad=False)
        self.o = att.o_proj
        w_gu = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).detach()
        self.gate_up = nn.Linear(w_gu.shape[1], w_gu.shape[0], bias=False)
        self.gate_up.weight = nn.Parameter(w_gu.clone(), requires_grad=False)
        self.down = mlp.down_proj


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class FastLlama(nn.Module):
    """Decode-only twin of a ``LlamaForCausalLM`` (shares o/down/lm_head modules with it)."""

    inv_freq: torch.Tensor  # registered buffer

    def __init__(self, model: Any) -> None:
        super().__init__()
        cfg = model.config
        self.n_head = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_head
        self.eps = cfg.rms_norm_eps
        self.max_pos = cfg.max_position_embeddings
        inner = model.model
        self.embed = inner.embed_tokens
        self.layers = nn.ModuleList(_Layer(layer) for layer in inner.layers)
        self.norm = nn.Parameter(inner.norm.weight.detach().clone(), requires_grad=False)
        self.lm_head = model.lm_head
        rot = inner.rotary_emb
        self.register_buffer("inv_freq", rot.inv_freq.detach().float().clone(), persistent=False)
        self.scaling = float(getattr(rot, "attention_scaling", 1.0))
        self._table: tuple[torch.Tensor, torch.Tensor] | None = None

    def _rotary(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for positions ``pos`` (B, T), looked up in a table grown on demand."""
        need = int(pos.max()) + 1
        table = self._table
        if table is None or table[0].shape[0] < need:
            n = max(need, self.max_pos)
            freqs = torch.arange(n, dtype=torch.float32)[:, None] * self.inv_freq  # (n, D/2)
            emb = torch.cat((freqs, freqs), dim=-1)
            table = (emb.cos() * self.scaling, emb.sin() * self.scaling)
            self._table = table
        return table[0][pos].unsqueeze(2), table[1][pos].unsqueeze(2)

    def new_cache(
        self, batch: int, length: int, dtype: torch.dtype = torch.float32
    ) -> list[torch.Tensor]:
        """One (2, B, Hkv, S, D) tensor per layer, filled as decoding goes."""
        shape = (2, batch, self.n_kv, length, self.head_dim)
        return [torch.zeros(shape, dtype=dtype) for _ in self.layers]

    def forward(
        self,
        ids: torch.Tensor,  # (B, T)
        pos: torch.Tensor,  # (B, T) rotary positions
        cache: list[torch.Tensor],
        start: int,  # cache slots [start, start+T) receive this call's keys/values
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits of the last position, shape (B, vocab).

        ``key_mask`` (B, S) is True where a cached key is a real token (not left padding).
        """
        B, T = ids.shape
        end = start + T
        x = self.embed(ids)
        cos, sin = self._rotary(pos)  # (B, T, 1, D): broadcast over heads
        if key_mask is None and T == 1:
            mask, causal = None, False
        elif key_mask is None and start == 0:
            mask, causal = None, True
        else:
            q_pos = torch.arange(start, end)[:, None]
            allowed = torch.arange(end)[None, :] <= q_pos  # (T, end) causal
            if key_mask is not None:
                # A padding query may see no real key at all; letting every query see itself
                # keeps its row finite (an all-masked row would be NaN and leak through V).
                diag = torch.arange(end)[None, :] == q_pos
                allowed = (allowed[None] & key_mask[:, None, :end]) | diag[None]  # (B, T, end)
                allowed = allowed[:, None]
            mask, causal = allowed, False
        nh, nkv, hd = self.n_head, self.n_kv, self.head_dim
        layers = cast("list[_Layer]", self.layers)
        for layer, kv in zip(layers, cache, strict=True):
            h = F.rms_norm(x, (x.shape[-1],), layer.ln1, self.eps)
            qkv = layer.qkv(h).view(B, T, nh + 2 * nkv, hd)
            # Rotate queries and keys together: one set of element-wise ops per layer.
            qk = qkv[:, :, : nh + nkv]
            qk = qk * cos + _rotate_half(qk) * sin
            q = qk[:, :, :nh].transpose(1, 2)  # (B, H, T, D)
            kv[0, :, :, start:end] = qk[:, :, nh:].transpose(1, 2)
            kv[1, :, :, start:end] = qkv[:, :, nh + nkv :].transpose(1, 2)
            y = F.scaled_dot_product_attention(
                q,
                kv[0, :, :, :end],
                kv[1, :, :, :end],
                attn_mask=mask,
                is_causal=causal,
                enable_gqa=nkv != nh,
            )
            x = x + layer.o(y.transpose(1, 2).reshape(B, T, nh * hd))
            h = F.rms_norm(x, (x.shape[-1],), layer.ln2, self.eps)
            g, u = layer.gate_up(h).chunk(2, dim=-1)
            x = x + layer.down(F.silu(g) * u)
        x = F.rms_norm(x[:, -1], (x.shape[-1],), self.norm, self.eps)
        return self.lm_head(x).float()
