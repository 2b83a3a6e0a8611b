"""The demo bot's language model, trained on first use in about a minute and a half.

The demo corpus is small (support e-mails and ~150 support dialogues), so a small model
trained for 60-120 s on 2 CPU cores learns its vocabulary and the chat format well enough to
write readable, on-topic replies. Dialogues are rendered in the chat template and mixed
into the pretraining text, so no separate fine-tuning pass is needed.
"""

from __future__ import annotations

from pathlib import Path

from lm.checkpoint import is_complete
from lm.data import read_chat_jsonl, read_corpus
from lm.train import ProgressFn, TrainConfig, train_lm

#: Small enough to see the demo corpus many times in 90 s, big enough to write sentences.
DEMO_CONFIG: dict = dict(
    preset="small",
    block_size=128,
    batch_size=16,
    vocab_size=1024,
    learning_rate=3e-3,
    warmup_steps=20,
    eval_interval=50,
    eval_iters=5,
    val_fraction=0.05,
    model_overrides={"hidden_size": 128, "intermediate_size": 352},
    # fp32 even where bf16 is native: at width 128 bf16 autocast ran only 7-14% more steps in
    # 90 s and ended worse (best validation 3.099 / 3.069 against 3.063 / 3.046 in fp32, two
    # runs each, session 17).
    dtype="fp32",
)


def render_dialogue(messages: list[dict[str, str]]) -> str:
    """The chat template's text for one conversation (what the tokenizer's template renders)."""
    return "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in messages)


def ensure_demo_model(
    corpus_dir: Path,
    dialogues: Path | None,
    out_dir: Path,
    *,
    time_budget_s: float = 90,
    on_progress: ProgressFn | None = None,
) -> Path:
    """Train the demo LM into ``out_dir`` unless it already holds a complete checkpoint.

    Args:
        corpus_dir: directory of ``*.txt`` files (the demo's support e-mails).
        dialogues: chat JSONL (``{"messages": [...]}`` per line) mixed in as chat transcripts.
        out_dir: run directory; ``Generator.from_dir(out_dir)`` loads the result.
        time_budget_s: wall-clock training budget.
        on_progress: ``on_progress(done, total, info)`` for a UI.
    """
    out_dir = Path(out_dir)
    if is_complete(out_dir / "best"):
        return out_dir
    docs = read_corpus([corpus_dir])
    if dialogues is not None and Path(dialogues).is_file():
        docs += [render_dialogue(c) for c in read_chat_jsonl(dialogues)]
    cfg = TrainConfig(time_budget_s=time_budget_s, **DEMO_CONFIG)
    train_lm(
        [], out_dir, cfg, documents=docs, on_progress=on_progress, show_progress=on_progress is None
    )
    return out_dir
