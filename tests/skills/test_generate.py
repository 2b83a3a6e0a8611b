from skills.base import Reply, Services, SessionView, SkillRequest
from skills.generate import GenerateSkill


class FakeGenerator:
    """Streams queued deltas and records the prompt it was given."""

    name = "fake-lm"

    def __init__(self, deltas):
        self.deltas = deltas
        self.calls = []

    def stream(self, prompt, **options):
        self.calls.append((prompt, options))
        yield from self.deltas


def _run(services, text="write a poem about autumn", **kw):
    return list(GenerateSkill().handle(SkillRequest(text=text, confidence=0.9, **kw), services))


def test_streams_chunks_then_reply():
    gen = FakeGenerator(["Leaves ", "fall ", "softly."])
    out = _run(Services(generator=gen))
    assert out[:3] == ["Leaves ", "fall ", "softly."]
    reply = out[-1]
    assert isinstance(reply, Reply) and reply.skill == "generate"
    assert reply.text == "Leaves fall softly."
    assert reply.data == {"model": "fake-lm"} and 0 < reply.confidence <= 0.8
    prompt, options = gen.calls[0]
    assert prompt[-1] == {"role": "user", "content": "write a poem about autumn"}
    assert prompt[0]["role"] == "system" and options["max_new_tokens"] > 0


def test_history_and_referent_reach_the_prompt():
    gen = FakeGenerator(["ok"])
    session = SessionView(
        session_id="s", history=[("user", "my parcel is late"), ("assistant", "Sorry!")]
    )
    _run(
        Services(generator=gen),
        text="make that an apology note",
        referent="Sorry!",
        session=session,
    )
    prompt = gen.calls[0][0]
    assert {"role": "user", "content": "my parcel is late"} in prompt
    assert prompt[-1]["content"].startswith("make that an apology note")


def test_no_model_says_how_to_train_one():
    out = _run(Services())
    reply = out[-1]
    assert isinstance(reply, Reply) and reply.skill == "generate"
    assert "llmos train lm" in reply.text and reply.data["model"] is None
    assert out[0] == reply.text


def test_empty_generation_is_reported():
    reply = _run(Services(generator=FakeGenerator([])))[-1]
    assert reply.confidence < 0.5 and "rephrase" in reply.text


def test_with_a_real_tiny_model(tmp_path):
    import torch

    torch.set_num_threads(1)
    from pathlib import Path

    from lm.generate import Generator
    from lm.train import TrainConfig, train_lm

    corpus = Path(__file__).resolve().parents[2] / "assistant" / "demo" / "corpus"
    cfg = TrainConfig(
        preset="tiny",
        steps=6,
        eval_interval=6,
        eval_iters=1,
        vocab_size=300,
        block_size=64,
        batch_size=4,
    )
    train_lm([corpus], tmp_path, cfg, show_progress=False)
    gen = Generator.from_dir(tmp_path)
    out = _run(Services(generator=gen), text="draft a thank-you note")
    reply = out[-1]
    assert isinstance(reply, Reply) and reply.skill == "generate"
    assert reply.data["model"] == gen.name
    streamed = "".join(c for c in out[:-1] if isinstance(c, str))
    assert reply.text == streamed.strip() or reply.confidence < 0.5
