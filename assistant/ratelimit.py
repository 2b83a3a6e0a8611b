"""Per-key rate limits for the HTTP service: one token bucket per API key.

A key allowed ``N`` requests a minute gets a bucket of ``N`` tokens that refills at ``N/60``
tokens a second, so a burst of up to ``N`` requests passes and a sustained rate above ``N``
a minute is refused with 429 and a ``Retry-After`` of the seconds until the next token
(RFC 6585 §4). Buckets live in this process: with ``llmos serve --workers K`` each worker
keeps its own, so a key may get up to ``K`` times its limit in total.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    """The outcome of one request against a bucket."""

    allowed: bool
    retry_after: int  # whole seconds until a request would pass; 0 when allowed
    remaining: int  # whole tokens left after this request


class RateLimiter:
    """Token buckets keyed by an identity (an API key id, a client address); thread-safe.

    Args:
        clock: seconds, monotonic (tests pass a fake clock to step time).
        max_buckets: idle buckets beyond this are dropped (a full bucket carries no state).
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_buckets: int = 100_000
    ) -> None:
        self._clock = clock
        self._max = max_buckets
        self._lock = threading.Lock()
        # identity -> (tokens, last update, capacity)
        self._buckets: dict[str, tuple[float, float, float]] = {}

    def hit(self, identity: str, per_minute: float, burst: float | None = None) -> Decision:
        """Take one token from ``identity``'s bucket if there is one."""
        if per_minute <= 0:
            return Decision(False, 60, 0)
        capacity = float(burst if burst is not None else per_minute)
        capacity = max(1.0, capacity)
        rate = per_minute / 60.0  # tokens per second
        now = self._clock()
        with self._lock:
            tokens, last, _ = self._buckets.get(identity, (capacity, now, capacity))
            tokens = min(capacity, tokens + (now - last) * rate)
            if tokens >= 1.0:
                tokens -= 1.0
                self._buckets[identity] = (tokens, now, capacity)
                if len(self._buckets) > self._max:
                    self._prune(now, rate)
                return Decision(True, 0, int(tokens))
            self._buckets[identity] = (tokens, now, capacity)
            wait = (1.0 - tokens) / rate
        return Decision(False, max(1, math.ceil(wait)), 0)

    def reset(self, identity: str | None = None) -> None:
        """Forget one bucket (a revoked key) or all of them."""
        with self._lock:
            if identity is None:
                self._buckets.clear()
            else:
                self._buckets.pop(identity, None)

    def _prune(self, now: float, rate: float) -> None:
        # drop buckets that would be full by now: forgetting them changes nothing
        full = [
            k for k, (tok, last, cap) in self._buckets.items() if tok + (now - last) * rate >= cap
        ]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) > self._max:  # still too many: drop the stalest
            by_age = sorted(self._buckets, key=lambda k: self._buckets[k][1])
            for k in by_age[: len(self._buckets) - self._max]:
                del self._buckets[k]


def parse_rate(spec: str | float | int) -> float:
    """``"120/min"``, ``"5/s"``, ``"1000/h"`` or a plain number (per minute) -> per minute."""
    from assistant.errors import InputError

    if isinstance(spec, (int, float)):
        value, unit = float(spec), "min"
    else:
        text = spec.strip().lower().replace(" ", "")
        num, _, unit = text.partition("/")
        unit = unit or "min"
        try:
            value = float(num)
        except ValueError:
            raise InputError(f"rate {spec!r}: expected N/min, N/s or N/h (e.g. 120/min)") from None
    per = {"s": 1 / 60, "sec": 1 / 60, "second": 1 / 60, "m": 1.0, "min": 1.0, "minute": 1.0}
    per |= {"h": 60.0, "hour": 60.0}
    if unit not in per:
        raise InputError(f"rate {spec!r}: unit must be /s, /min or /h")
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"rate {spec!r}: must be a positive number")
    per_minute = value / per[unit]
    if per_minute > 10_000_000:
        raise InputError(f"rate {spec!r} is too high")
    return per_minute
