"""Local language models: tokenizer, presets, pretraining, fine-tuning and generation.

Heavy modules (torch, transformers) load only when one of the lazy names below is used, so
importing ``lm`` stays cheap on the CLI start-up path.
"""

from __future__ import annotations

from typing import Any

from lm.errors import CheckpointError, DataError, LMError, UnsafeCheckpointError

_LAZY = {
    "Generator": "lm.generate",
    "TrainConfig": "lm.train",
    "train_lm": "lm.train",
    "FinetuneConfig": "lm.finetune",
    "finetune": "lm.finetune",
    "ensure_demo_model": "lm.demo",
    "evaluate_lm": "lm.evaluate",
    "list_models": "lm.inventory",
    "load_causal_lm": "lm.loading",
}

__all__ = [  # noqa: RUF022 - errors first, then the lazy names
    "CheckpointError",
    "DataError",
    "LMError",
    "UnsafeCheckpointError",
    "FinetuneConfig",
    "Generator",
    "TrainConfig",
    "ensure_demo_model",
    "evaluate_lm",
    "finetune",
    "list_models",
    "load_causal_lm",
    "train_lm",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lm' has no attribute {name!r}")
