"""A lean Llama forward pass for decoding, with a preallocated KV cache.

``transformers``' generic forward spends most of a small model's decode step in Python
(mask building, cache bookkeeping, output dataclasses). This module re-expresses the same
computation for Llama-family checkpoints with fused projections (q/k/v in one matmul, gate/up in
one matmul), rotary positions as one complex multiplication, residual adds inside the matmuls,
weights used directly rather than through module calls, a static per-call cache, and nothing
else, so batch-1 decoding runs much closer to the speed of the matmuls. Its logits match
``LlamaForCausalLM`` (tested with ``allclose``); models it does not cover fall back to the
transformers forward in ``lm.generate``.

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


def _interleave(w: torch.Tensor, n_head: int, head_dim: int) -> torch.Tensor:
    """Rows of a q or k projection reordered so each head's rotary pairs are adjacent.

    Llama rotates coordinate i of a head together with coordinate i + D/2. Reordering both the
    query and the key rows the same way leaves every q·k unchanged, and puts each pair at
    (2i, 2i + 1), where the rotation is one complex multiplication instead of six tensor ops.
    """
    half = head_dim // 2
    order = torch.arange(head_dim).view(2, half).t().reshape(-1)  # 0, D/2, 1, D/2 + 1, ...
    return w.view(n_head, head_dim, -1)[:, order].reshape(n_head * head_dim, -1)


def _input_major(weight: torch.Tensor) -> nn.Linear:
    """A bias-free ``Linear`` holding a copy of ``weight`` laid out input-major.

    The weight keeps its [out, in] shape but is stored as [in, out] in memory. For one row,
    ``x @ W.T`` then streams the weight contiguously while it accumulates the output row, which
    on these CPUs runs the small preset's 17 matrix-vector products of a decode step 1.6-2.4x
    faster than the dot products the usual out-major layout gives (BENCHMARKS.md, "Generation
    speed"); for many rows it is no slower, and int8 quantization packs it the same.
    """
    w = weight.detach().t().contiguous().t()
    lin = nn.Linear(w.shape[1], w.shape[0], bias=False, device="meta")
    lin.weight = nn.Parameter(w, requires_grad=False)
    return lin


class _Layer(nn.Module):
    def __init__(self, layer: Any, n_head: int, n_kv: int, head_dim: int) -> None:
        super().__init__()
        att, mlp = layer.self_attn, layer.mlp
        self.ln1 = nn.Parameter(layer.input_layernorm.weight.detach().clone(), requires_grad=False)
        self.ln2 = nn.Parameter(
            layer.post_attention_layernorm.weight.detach().clone(), requires_grad=False
        )
        w_qkv = torch.cat(
            [
                _interleave(att.q_proj.weight.detach(), n_head, head_dim),
                _interleave(att.k_proj.weight.detach(), n_kv, head_dim),
                att.v_proj.weight.detach(),
            ]
        )
        self.qkv = _input_major(w_qkv)
        self.o = _input_major(att.o_proj.weight)
        w_gu = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).detach()
        self.gate_up = _input_major(w_gu)
        self.down = _input_major(mlp.down_proj.weight)


class FastLlama(nn.Module):
    """Decode-only twin of a ``LlamaForCausalLM``.

    It holds its own copy of the matmul weights, laid out for decoding (see ``_input_major``), so
    a loaded model takes about twice its size in memory; the embedding table is shared.
    """

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
        self.layers = nn.ModuleList(
            _Layer(layer, self.n_head, self.n_kv, self.head_dim) for layer in inner.layers
        )
        self.norm = nn.Parameter(inner.norm.weight.detach().clone(), requires_grad=False)
        self.lm_head = _input_major(model.lm_head.weight)
        rot = inner.rotary_emb
        self.register_buffer("inv_freq", rot.inv_freq.detach().float().clone(), persistent=False)
        self.scaling = float(getattr(rot, "attention_scaling", 1.0))
        self._table: torch.Tensor | None = None

    def _rotary(self, pos: torch.Tensor | None, start: int, end: int) -> torch.Tensor:
        """Unit complex rotations, (B or 1, T, 1, D/2), for positions ``pos`` (B, T), all below
        ``end``, or for ``start..end-1`` when ``pos`` is None (a slice, no lookup).

        The table grows on demand; ``end`` bounds the positions without reading the tensor.
        """
        table = self._table
        if table is None or table.shape[0] < end:
            n = max(end, self.max_pos)
            freqs = torch.arange(n, dtype=torch.float32)[:, None] * self.inv_freq  # (n, D/2)
            table = torch.polar(torch.full_like(freqs, self.scaling), freqs)
            self._table = table
        if pos is None:
            return table[start:end][None, :, None]
        return table[pos].unsqueeze(2)

    def new_cache(
        self, batch: int, length: int, dtype: torch.dtype = torch.float32
    ) -> list[torch.Tensor]:
        """One (2, B, Hkv, S, D) tensor per layer, filled as decoding goes."""
        shape = (2, batch, self.n_kv, length, self.head_dim)
        return [torch.zeros(shape, dtype=dtype) for _ in self.layers]

    def forward(
        self,
        ids: torch.Tensor,  # (B, T)
        pos: torch.Tensor | None,  # (B, T) rotary positions below start + T; None: the slots
        cache: list[torch.Tensor],
        start: int,  # cache slots [start, start+T) receive this call's keys/values
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits of the last position, shape (B, vocab).

        ``key_mask`` (B, S) is True where a cached key is a real token (not left padding).
        """
        B, T = ids.shape
        end = start + T
        x = self.embed(ids).view(B * T, -1)
        C = x.shape[-1]
        rot = self._rotary(pos, start, end)
        if key_mask is None and T == 1:
            mask, causal = None, False
        elif key_mask is None and start == 0:
            mask, causal = None, True
        elif key_mask is not None and T == 1:  # every real key before it, and itself (below)
            allowed = key_mask[:, :end].clone()
            allowed[:, start] = True
            mask, causal = allowed[:, None, None], False
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
        # Plain weights are used directly (no module call per matmul) and the residual add
        # goes into the matmul (addmm); int8 dynamic quantization swaps the linear modules,
        # which are then called as modules.
        plain = type(self.lm_head) is nn.Linear
        layers = cast("list[_Layer]", self.layers)
        for layer, kv in zip(layers, cache, strict=True):
            h = F.rms_norm(x, (C,), layer.ln1, self.eps)
            qkv = F.linear(h, layer.qkv.weight) if plain else layer.qkv(h)
            qkv = qkv.view(B, T, nh + 2 * nkv, hd)
            # Rotate queries and keys together, as complex numbers (see _interleave).
            qk = torch.view_as_complex(qkv[:, :, : nh + nkv].unflatten(-1, (hd // 2, 2)))
            qk = torch.view_as_real(qk * rot).flatten(-2)  # (B, T, H + Hkv, D)
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
            y = y.transpose(1, 2).reshape(B * T, nh * hd)
            x = torch.addmm(x, y, layer.o.weight.t()) if plain else x + layer.o(y)
            h = F.rms_norm(x, (C,), layer.ln2, self.eps)
            gu = F.linear(h, layer.gate_up.weight) if plain else layer.gate_up(h)
            g, u = gu.chunk(2, dim=-1)
            a = F.silu(g).mul_(u)
            x = torch.addmm(x, a, layer.down.weight.t()) if plain else x + layer.down(a)
        x = F.rms_norm(x.view(B, T, C)[:, -1], (C,), self.norm, self.eps)
        logits = F.linear(x, self.lm_head.weight) if plain else self.lm_head(x)
        return logits.float()
