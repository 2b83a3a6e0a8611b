"""Keep transformers' per-call progress bars and length warnings out of our own output."""

from __future__ import annotations

import functools
import warnings


@functools.cache
def quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    # peft (LoRA) asks transformers for the renamed ``is_gradient_checkpointing``; the warning
    # is theirs to fix and says nothing a user of ``llmos finetune`` can act on.
    warnings.filterwarnings(
        "ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning
    )
