"""A tiny model trained once per session on a slice of real text, shared by the lm tests."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHAKESPEARE = (REPO / ".." / "shared" / "data" / "tinyshakespeare" / "input.txt").resolve()
DEMO_CORPUS = REPO / "assistant" / "demo" / "corpus"


def tiny_config(**kw):
    from lm.train import TrainConfig

    base = dict(
        preset="tiny",
        steps=12,
        eval_interval=6,
        eval_iters=2,
        vocab_size=320,
        batch_size=8,
        block_size=64,
        warmup_steps=2,
        learning_rate=5e-3,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    """~40 KB of real text: enough for many 64-token windows, fast to tokenize."""
    d = tmp_path_factory.mktemp("corpus")
    text = SHAKESPEARE.read_text(encoding="utf-8")[:40_000]
    p = d / "shakespeare.txt"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, corpus_file):
    """A trained tiny run directory (best/, last/) and its TrainResult."""
    import torch

    torch.set_num_threads(1)
    from lm.train import train_lm

    out = tmp_path_factory.mktemp("tiny_run")
    result = train_lm(
        [corpus_file], out, tiny_config(steps=24, eval_interval=8), show_progress=False
    )
    return out, result


@pytest.fixture(scope="session")
def tiny_generator(tiny_run):
    from lm.generate import Generator

    return Generator.from_dir(tiny_run[0])


@pytest.fixture(scope="session")
def chat_file(tmp_path_factory) -> Path:
    import json

    d = tmp_path_factory.mktemp("chat")
    p = d / "chat.jsonl"
    lines = []
    for i in range(12):
        lines.append(
            json.dumps(
                {
                    "messages": [
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": f"Where is order {i}?"},
                        {"role": "assistant", "content": f"Order {i} ships tomorrow."},
                    ]
                }
            )
        )
    p.write_text("\n".join(lines) + "\n")
    return p
