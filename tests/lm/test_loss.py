"""The chunked linear cross-entropy equals the plain logits path, values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lm.loss import (
    IGNORE_INDEX,
    _block,
    _block_fused,
    compiled_block,
    fused_loss_parts,
    linear_cross_entropy,
)
from lm.model import build_config, build_model, get_preset


@pytest.mark.parametrize("chunk", [7, 64, None])
def test_matches_cross_entropy_with_ignored_rows(chunk):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 50, 16, generator=g, requires_grad=True)
    w = torch.randn(30, 16, generator=g, requires_grad=True)
    t = torch.randint(0, 30, (2, 50), generator=g)
    t[0, ::5] = IGNORE_INDEX
    ref = F.cross_entropy((h @ w.t()).flatten(0, 1), t.flatten(), ignore_index=IGNORE_INDEX)
    (ref * 2.5).backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    got = linear_cross_entropy(h, w, t, chunk=chunk)
    (got * 2.5).backward()  # the upstream gradient scales both input gradients
    assert torch.allclose(got.detach(), ref.detach(), atol=1e-5)
    assert torch.allclose(h.grad, gh, atol=1e-6)
    assert torch.allclose(w.grad, gw, atol=1e-6)


@pytest.mark.parametrize("block", ["eager", "compiled"])
def test_bf16_matmuls_stay_close_to_fp32_and_hand_back_fp32(block):
    """bf16 autocast runs: the matmuls in bf16, the softmax, loss and gradients in fp32."""
    g = torch.Generator().manual_seed(2)
    h = torch.randn(300, 32, generator=g, requires_grad=True)
    w = (torch.randn(70, 32, generator=g) * 0.2).requires_grad_()
    t = torch.randint(0, 70, (300,), generator=g)
    t[::6] = IGNORE_INDEX
    ref = F.cross_entropy(h @ w.t(), t, ignore_index=IGNORE_INDEX)
    ref.backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    fn = compiled_block() if block == "compiled" else None
    with torch.autocast("cpu", dtype=torch.bfloat16):  # switched off inside, dtypes explicit
        got = linear_cross_entropy(h, w, t, chunk=128, block=fn, compute_dtype=torch.bfloat16)
    got.backward()
    assert got.dtype == h.grad.dtype == w.grad.dtype == torch.float32
    assert abs(float(got.detach()) - float(ref.detach())) < 1e-2
    # bf16 keeps 8 bits of mantissa: errors of a few tenths of a percent of the largest entry
    assert float((h.grad - gh).abs().max()) < 1e-2 * float(gh.abs().max())
    assert float((w.grad - gw).abs().max()) < 1e-2 * float(gw.abs().max())
    assert not torch.equal(h.grad, gh)  # the bf16 path was taken


@pytest.mark.parametrize("block", ["fused", "compiled"])
def test_the_fused_block_matches_the_eager_one(block):
    """``--compile`` runs swap the per-chunk softmax for ``compiled_block()``."""
    g = torch.Generator().manual_seed(1)
    fn = compiled_block() if block == "compiled" else _block_fused
    logits = torch.randn(24, 50, generator=g) * 4
    t = torch.randint(0, 50, (24,), generator=g)
    (n1, p1), (n2, p2) = _block(logits.clone(), t), fn(logits, t)
    assert torch.allclose(n1, n2, atol=1e-5) and torch.allclose(p1, p2, atol=1e-6)
    h = torch.randn(24, 8, generator=g, requires_grad=True)
    w = torch.randn(50, 8, generator=g, requires_grad=True)
    t[::4] = IGNORE_INDEX
    ref = F.cross_entropy(h @ w.t(), t, ignore_index=IGNORE_INDEX)
    ref.backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    got = linear_cross_entropy(h, w, t, chunk=10, block=fn)
    got.backward()
    assert torch.allclose(got.detach(), ref.detach(), atol=1e-5)
    assert torch.allclose(h.grad, gh, atol=1e-6) and torch.allclose(w.grad, gw, atol=1e-6)


def test_no_grad_and_all_ignored():
    h, w = torch.randn(4, 8), torch.randn(5, 8)
    with torch.no_grad():
        ref = F.cross_entropy(h @ w.t(), torch.tensor([0, 1, 2, 3]))
        assert torch.allclose(linear_cross_entropy(h, w, torch.tensor([0, 1, 2, 3])), ref)
    assert float(linear_cross_entropy(h, w, torch.full((4,), IGNORE_INDEX))) == 0.0


def test_tied_model_gets_the_same_gradients_as_its_logits_path():
    torch.manual_seed(0)
    model = build_model(build_config(get_preset("tiny"), 40, eos_token_id=0, pad_token_id=0))
    parts = fused_loss_parts(model)
    assert parts is not None
    body, head = parts
    x = torch.randint(0, 40, (2, 9))
    y = torch.randint(0, 40, (2, 9))
    F.cross_entropy(model(input_ids=x).logits.flatten(0, 1), y.flatten()).backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    linear_cross_entropy(body(input_ids=x).last_hidden_state, head.weight, y).backward()
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, ref[n], atol=1e-5), n


def test_plain_path_for_models_it_does_not_know():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=30))
    assert fused_loss_parts(gpt2) is None


def test_training_with_the_chunked_loss_follows_the_plain_loss_curve(tmp_path, corpus_file):
    from lm.train import train_lm
    from tests.lm.conftest import tiny_config

    curves = {}
    for fused in (True, False):
        cfg = tiny_config(steps=6, eval_interval=3)
        cfg.fused_loss = fused
        r = train_lm([corpus_file], tmp_path / str(fused), cfg, show_progress=False)
        curves[fused] = [loss for _, loss in r.history["train"]]
    assert len(curves[True]) == 6
    assert curves[True] == pytest.approx(curves[False], abs=2e-3)
    assert curves[True][-1] < curves[True][0]
