"""Keep transformers' per-call progress bars and length warnings out of our own output."""

from __future__ import annotations

import functools


@functools.cache
def quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
