"""Next-token loss without materialising the full ``[tokens, vocab]`` logits.

On these CPUs element-wise work is bound by memory bandwidth: with a 4,096-token vocabulary
and 4,096 tokens per batch the logits, their log-softmax, its gradient and the zero-filled
buffer ``nll_loss`` scatters into are four 67 MB passes, about a fifth of a training step of
the ``small`` preset. Here the output projection, the loss and both gradients are computed
chunk by chunk, so each ``[chunk, vocab]`` block is produced and consumed while it is still in
cache; the matmul FLOPs are the same as the plain path (logits, grad wrt hidden, grad wrt
weight). The idea is the "fused linear cross-entropy" of Liger-Kernel, written here in torch.
"""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100


def _linear_ce_function() -> Any:
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        """Mean cross-entropy of ``hidden @ weight.T`` against ``targets``; the gradients are
        computed in the forward pass (one chunk at a time) and scaled in the backward."""

        @staticmethod
        def forward(
            ctx: Any, hidden: Any, weight: Any, targets: Any, chunk: int, block: Any, dtype: Any
        ) -> Any:  # type: ignore[override]
            keep = targets != IGNORE_INDEX
            n = int(keep.sum())
            need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
            total = hidden.new_zeros((), dtype=torch.float32)
            grad_h = torch.empty_like(hidden) if need_grad else None
            grad_w = torch.zeros_like(weight) if need_grad else None
            low = dtype is not None and dtype != weight.dtype
            w = weight.to(dtype) if low else weight  # bf16 matmuls; softmax and sums stay fp32
            for s in range(0, hidden.shape[0], chunk):
                h = hidden[s : s + chunk]
                t = targets[s : s + chunk]
                k = keep[s : s + chunk]
                if low:
                    h = h.to(dtype)
                nll, probs = block((h @ w.t()).float(), torch.where(k, t, 0))
                total += (nll * k).sum()
                if need_grad:
                    # d(mean CE)/d(logits) = (softmax - one_hot) / n, zero on ignored rows;
                    # the row scale is applied to the [chunk, d] operands, not the block.
                    probs = probs.to(w.dtype)
                    scale = (k.to(hidden.dtype) / max(n, 1))[:, None]
                    g = grad_h[s : s + chunk]  # type: ignore[index]
                    if low:  # bf16 products, summed into the fp32 gradients
                        torch.mul(probs @ w, scale, out=g)
                        grad_w.add_(probs.t() @ (h * scale.to(dtype)))  # type: ignore[union-attr]
                    else:
                        torch.mm(probs, w, out=g)
                        g.mul_(scale)
                        grad_w.addmm_(probs.t(), h * scale)  # type: ignore[union-attr]
            if need_grad:
                ctx.save_for_backward(grad_h, grad_w)
            return total / max(n, 1)

        @staticmethod
        def backward(ctx: Any, grad_out: Any) -> Any:  # type: ignore[override]
            grad_h, grad_w = ctx.saved_tensors
            return grad_h * grad_out, grad_w * grad_out, None, None, None, None

    return LinearCrossEntropy


def _block(logits: Any, targets: Any) -> tuple[Any, Any]:
    """Per-row loss and ``softmax - one_hot`` of a ``[chunk, vocab]`` block, in eager torch:
    one log-softmax and one in-place exp, two passes over the block."""
    import torch

    logp = torch.log_softmax(logits, dim=-1)
    nll = -logp.gather(1, targets[:, None]).squeeze(1)
    probs = logp.exp_()
    probs[torch.arange(len(targets), device=targets.device), targets] -= 1.0
    return nll, probs


def _block_fused(logits: Any, targets: Any) -> Any:
    """``_block`` written for ``torch.compile``, which turns it into two loops over the block
    (row log-sum-exp, then loss, softmax and one-hot together)."""
    import torch

    lse = torch.logsumexp(logits, dim=-1)
    nll = lse - logits.gather(1, targets[:, None]).squeeze(1)
    cols = torch.arange(logits.shape[1], device=logits.device)
    hot = (cols[None, :] == targets[:, None]).to(logits.dtype)
    return nll, torch.exp(logits - lse[:, None]) - hot


_FN: Any = None
_COMPILED_BLOCK: Any = None


def compiled_block() -> Any:
    """The per-block softmax as one ``torch.compile``d function, for ``--compile`` runs.

    Session 13, quiet machine, retained heap (``lm/heap.py``): a [1,024, 4,096] block plus its
    matmul took 16.9-17.8 ms against 19.1-19.5 ms eager, about 1% of a ``small`` step. (Session
    7's A/B, on a loaded machine and before the heap change, had found no gain.)"""
    global _COMPILED_BLOCK
    if _COMPILED_BLOCK is None:
        import torch

        _COMPILED_BLOCK = torch.compile(_block_fused, dynamic=False)
    return _COMPILED_BLOCK


CHUNK_ELEMENTS = 1 << 22  # logits per chunk (16 MB in fp32): 1,024 rows of a 4,096 vocabulary


def linear_cross_entropy(
    hidden: Any,
    weight: Any,
    targets: Any,
    chunk: int | None = None,
    block: Any = None,
    compute_dtype: Any = None,
) -> Any:
    """Mean cross-entropy of ``hidden @ weight.T`` (``[..., d]`` by ``[vocab, d]``) against
    ``targets`` (``IGNORE_INDEX`` rows skipped), equal to ``F.cross_entropy`` on the logits.

    ``chunk`` rows at a time; by default as many as keep a chunk's logits near
    ``CHUNK_ELEMENTS`` (a small vocabulary, e.g. characters, is done in one chunk). ``block``
    computes each chunk's loss and ``softmax - one_hot``: ``_block`` (eager) by default,
    ``compiled_block()`` in ``--compile`` runs. ``compute_dtype`` (e.g. ``torch.bfloat16``
    under bf16 autocast) is the matmuls' dtype; the softmax, the loss and the gradients
    handed back stay in the inputs' dtype. Autocast is off inside: the dtypes are explicit."""
    import torch

    global _FN
    if _FN is None:
        _FN = _linear_ce_function()
    d = hidden.shape[-1]
    if chunk is None:
        chunk = max(256, CHUNK_ELEMENTS // max(int(weight.shape[0]), 1))
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        return _FN.apply(
            hidden.reshape(-1, d),
            weight,
            targets.reshape(-1),
            chunk,
            block or _block,
            compute_dtype,
        )


def fused_loss_parts(model: Any) -> tuple[Any, Any] | None:
    """``(body, head)`` of a transformers causal LM whose logits are just ``head(body(x))``
    (no bias, scaling or soft-capping), or ``None`` when the plain path must be used."""
    body = getattr(model, "model", None)
    head = getattr(model, "lm_head", None)
    cfg = getattr(model, "config", None)
    if body is None or head is None or getattr(head, "bias", None) is not None:
        return None
    if getattr(cfg, "model_type", None) not in ("llama", "mistral", "qwen2"):
        return None
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return None
    return body, head
