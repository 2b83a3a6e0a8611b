"""Keep freed training buffers in the process heap instead of handing them back to the kernel.

glibc serves an allocation above its mmap threshold (128 KiB at start, raised dynamically up
to 32 MiB) with a fresh ``mmap`` and returns the heap's top to the kernel once more than the
trim threshold is free. A training step allocates and frees megabytes of activations and
logits blocks, so under those defaults every step gives them back and page-faults them in again,
zero-filled by the kernel: one forward and backward pass of the ``small`` preset's loss
(``lm/loss.py``) took about 25,600 minor page faults (about 100 MB zeroed), and
its softmax block ran 3x slower than on warm memory. With both thresholds fixed high the same
call takes about 2,500 and the whole training step runs a few percent faster (BENCHMARKS.md,
"Training speed"). jemalloc and tcmalloc, which PyTorch's CPU performance tuning guide
recommends preloading, keep freed memory for reuse in the same way; this needs no preload.

The cost: memory the run frees stays mapped until training ends. That is never more than
the run itself had in use at its peak; the trim threshold (1 GiB) only caps how much of it is
kept. When the outermost ``retained_heap`` block ends, what is free goes back to the kernel
(``malloc_trim``) and the trim threshold drops to twice the mmap threshold, the state glibc's
own dynamic rule reaches once it has seen a 32 MiB buffer freed, so a chat or server process
that trained a model keeps no more than it would have. (glibc has no way to switch its dynamic
rule back on.)
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # the largest value glibc accepts on 64-bit (HEAP_MAX_SIZE / 2)
TRAIN_TRIM_THRESHOLD = 1 << 30
AFTER_TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
# A user who tunes glibc's malloc through its environment variables keeps their settings;
# LLMOS_RETAIN_HEAP=0 leaves glibc's defaults alone (benchmarks/lm_speed.py measures both).
_USER_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
OFF_VAR = "LLMOS_RETAIN_HEAP"


_lock = threading.Lock()
_depth = 0


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or any(v in os.environ for v in _USER_VARS):
        return None
    if os.environ.get(OFF_VAR, "1").strip() == "0":
        return None
    try:
        libc = ctypes.CDLL(None)  # the process's own C library
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    return libc


@contextlib.contextmanager
def retained_heap() -> Iterator[bool]:
    """Within the block, freed buffers up to 32 MiB stay in the heap for reuse.

    Yields whether the setting is in effect (glibc on Linux, no malloc tuning of the user's
    own in the environment, and ``LLMOS_RETAIN_HEAP`` not ``0``); otherwise it changes
    nothing. Blocks may nest and run in several threads: the first to enter applies it, the
    last to leave releases it."""
    global _depth
    libc = _libc()
    with _lock:
        applied = libc is not None and (
            _depth > 0
            or (
                libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                and libc.mallopt(M_TRIM_THRESHOLD, TRAIN_TRIM_THRESHOLD) == 1
            )
        )
        if applied:
            _depth += 1
    try:
        yield applied
    finally:
        if applied and libc is not None:
            with _lock:
                _depth -= 1
                if _depth == 0:
                    libc.mallopt(M_TRIM_THRESHOLD, AFTER_TRIM_THRESHOLD)
                    libc.malloc_trim(0)


P = ParamSpec("P")
R = TypeVar("R")


def in_retained_heap(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator: run ``fn`` inside ``retained_heap()`` (training entry points)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with retained_heap():
            return fn(*args, **kwargs)

    return wrapper
