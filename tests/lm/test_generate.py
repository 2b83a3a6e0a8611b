import threading

import pytest
import torch

from lm.errors import LMError
from lm.sampling import (
    SamplingOptions,
    apply_repetition_penalty,
    filter_top_k,
    filter_top_p,
    select,
)

PROMPT = "ROMEO:\nWhat"


def test_fast_decode_matches_transformers_logits(tiny_generator):
    g = tiny_generator
    assert g._fast is not None
    ids = torch.tensor([[5, 40, 41, 42, 43, 44, 45]])
    with torch.inference_mode():
        ref = g.model(input_ids=ids).logits[:, -1]
        cache = g._fast.new_cache(1, 16)
        got = g._fast(ids[:, :-1], torch.arange(6)[None], cache, 0)
        ref_prev = g.model(input_ids=ids[:, :-1]).logits[:, -1]
        step = g._fast(ids[:, -1:], torch.tensor([[6]]), cache, 6)
    assert torch.allclose(got, ref_prev, atol=1e-4)
    assert torch.allclose(step, ref, atol=1e-4)
    # Every matmul weight of the decode path lies input-major (fast matrix-vector products).
    linears = [m for m in g._fast.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 4 * g.model.config.num_hidden_layers + 1
    assert all(m.weight.t().is_contiguous() for m in linears)
    # Without left padding the positions may be left out: they are the cache slots.
    with torch.inference_mode():
        cache = g._fast.new_cache(1, 16)
        assert torch.equal(g._fast(ids[:, :-1], None, cache, 0), got)
        assert torch.equal(g._fast(ids[:, -1:], None, cache, 6), step)


def test_greedy_equals_transformers_generate(tiny_generator):
    g = tiny_generator
    ids = g.encode_prompt(PROMPT)
    ours = g.generate(PROMPT, max_new_tokens=20, temperature=0)
    with torch.inference_mode():
        out = g.model.generate(
            torch.tensor([ids]),
            max_new_tokens=20,
            do_sample=False,
            eos_token_id=sorted(g.stop_ids),
            pad_token_id=g.pad_id,
        )
    theirs = g.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
    assert ours == theirs.replace("\ufffd", "")


def test_bytes_that_form_no_character_never_reach_the_text(tiny_generator):
    """A byte-level model spells "é" as two byte tokens; cut after the first, or a stray
    continuation byte, would decode to U+FFFD."""
    g = tiny_generator
    lead, cont = g.tokenizer.convert_tokens_to_ids(["Ã", "©"])  # bytes 0xC3 0xA9: "é"
    assert g.tokenizer.decode([lead]) == "\ufffd"  # what a plain decode shows
    assert g._text([lead]) == "" and g._text([cont]) == ""
    assert g._text([lead, cont]) == "é" and g._text([cont, lead, cont]) == "é"


def test_streaming_deltas_join_to_generate(tiny_generator):
    g = tiny_generator
    for opts in (
        {"temperature": 0},
        {"seed": 3, "temperature": 1.0, "top_k": 40},
        {"seed": 5, "stop": ["e"], "temperature": 1.0},
    ):
        deltas = list(g.stream(PROMPT, max_new_tokens=25, **opts))
        assert all(isinstance(d, str) and d for d in deltas)
        assert "".join(deltas) == g.generate(PROMPT, max_new_tokens=25, **opts)


def test_seed_reproducible_and_sampling_options(tiny_generator):
    g = tiny_generator
    a = g.generate(PROMPT, max_new_tokens=30, seed=7, temperature=1.2)
    assert a == g.generate(PROMPT, max_new_tokens=30, seed=7, temperature=1.2)
    samples = {g.generate(PROMPT, max_new_tokens=30, seed=s, temperature=1.5) for s in range(4)}
    assert len(samples) > 1
    greedy = g.generate(PROMPT, max_new_tokens=20, temperature=0)
    assert g.generate(PROMPT, max_new_tokens=20, greedy=True) == greedy
    assert g.generate(PROMPT, max_new_tokens=20, top_k=1, seed=1, temperature=1.0) == greedy
    assert g.generate(PROMPT, max_new_tokens=20, top_p=1e-6, seed=2, temperature=1.0) == greedy
    assert len(g.tokenizer(g.generate(PROMPT, max_new_tokens=5, seed=1))["input_ids"]) <= 5 + 2


def test_stop_strings_cut_the_text(tiny_generator):
    g = tiny_generator
    full = g.generate(PROMPT, max_new_tokens=40, seed=11, temperature=1.0)
    stop = full[5:7] if len(full) > 8 else full[-1:]
    cut = g.generate(PROMPT, max_new_tokens=40, seed=11, temperature=1.0, stop=[stop])
    assert stop not in cut
    assert full.startswith(cut) and len(cut) < len(full)


def test_repetition_penalty_and_filters_unit():
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.1]])
    seen = torch.tensor([[True, True, False, False]])
    pen = apply_repetition_penalty(logits, seen, 2.0)
    assert pen[0].tolist() == pytest.approx([1.0, -2.0, 0.5, 0.1])
    k = filter_top_k(logits, 2)
    assert torch.isinf(k).tolist() == [[False, True, False, True]]
    p = filter_top_p(torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])), 0.7)
    assert torch.isinf(p).tolist() == [[False, False, True, True]]
    gen = torch.Generator().manual_seed(0)
    opts = SamplingOptions(temperature=0)
    assert select(logits, opts, None, gen).item() == 0
    opts = SamplingOptions(temperature=1.0, repetition_penalty=10.0, top_k=None, top_p=None)
    picks = {select(logits, opts, seen, gen).item() for _ in range(50)}
    assert 0 not in picks or len(picks) > 1


def test_repetition_penalty_changes_output(tiny_generator):
    g = tiny_generator
    plain = g.generate(PROMPT, max_new_tokens=30, temperature=0)
    penal = g.generate(PROMPT, max_new_tokens=30, temperature=0, repetition_penalty=3.0)
    assert plain != penal


def test_batch_generation_matches_single(tiny_generator):
    g = tiny_generator
    prompts = [PROMPT, "First Citizen:\nBefore we proceed", "A"]
    batch = g.generate_batch(prompts, max_new_tokens=15, temperature=0)
    assert batch == [g.generate(p, max_new_tokens=15, temperature=0) for p in prompts]
    assert g.generate_batch([], max_new_tokens=3) == []


def test_chat_messages_prompt(tiny_generator):
    g = tiny_generator
    msgs = [{"role": "user", "content": "hello"}]
    ids = g.encode_prompt(msgs)
    assert g.tokenizer.decode(ids).endswith("<|assistant|>\n")
    assert isinstance(g.generate(msgs, max_new_tokens=5, temperature=0), str)


def test_int8_path(tiny_run):
    from lm.generate import Generator

    q = Generator.from_dir(tiny_run[0], quantize=True)
    assert q.quantized
    assert any(
        "Quantized" in type(m).__name__ or "quantized" in type(m).__module__
        for m in q._fast.modules()
    )
    text = q.generate(PROMPT, max_new_tokens=10, temperature=0)
    assert isinstance(text, str)


def test_transformers_fallback_path_agrees(tiny_run, tiny_generator):
    from lm.generate import Generator

    slow = Generator.from_dir(tiny_run[0], fast=False)
    assert slow._fast is None
    prompts = [PROMPT, "First Citizen:"]
    assert slow.generate(PROMPT, max_new_tokens=12, temperature=0) == tiny_generator.generate(
        PROMPT, max_new_tokens=12, temperature=0
    )
    assert slow.generate_batch(
        prompts, max_new_tokens=8, temperature=0
    ) == tiny_generator.generate_batch(prompts, max_new_tokens=8, temperature=0)


def test_concurrent_calls_do_not_interfere(tiny_generator):
    g = tiny_generator
    expected = {s: g.generate(PROMPT, max_new_tokens=15, seed=s, temperature=1.0) for s in range(3)}
    results: dict[int, str] = {}

    def work(s):
        results[s] = g.generate(PROMPT, max_new_tokens=15, seed=s, temperature=1.0)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected


def test_bad_generation_options(tiny_generator):
    g = tiny_generator
    with pytest.raises(LMError):
        g.generate(PROMPT, max_new_tokens=0)
    with pytest.raises(LMError):
        g.generate(PROMPT, top_p=1.5)
    with pytest.raises(LMError):
        g.generate(PROMPT, beams=3)
    with pytest.raises(LMError):
        g.generate("x" * 300_000)
    with pytest.raises(LMError):
        g.generate([{"role": "user"}])
