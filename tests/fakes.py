"""Test doubles that keep unit tests fast. Paths a user takes are also tested with real parts."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence

import numpy as np

from skills.base import Reply, Services, Skill, SkillRequest


class FakeEmbedder:
    """Deterministic bag-of-words vectors: texts sharing words are similar, others are not."""

    dim = 384

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress=None) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                h = int.from_bytes(hashlib.md5(w.encode()).digest()[:4], "little")
                out[i, h % self.dim] += 1.0
            n = np.linalg.norm(out[i])
            out[i] = out[i] / n if n else out[i]
            if not n:
                out[i, 0] = 1.0
        return out


class FakeSkill(Skill):
    """Replies with queued chunks (``enqueue``) or echoes the message."""

    name = "fake"
    description = "A test skill that echoes."
    examples = ["echo this please", "fake skill test", "repeat after me"]

    def __init__(self) -> None:
        self.queue: list[list[str]] = []
        self.requests: list[SkillRequest] = []

    def enqueue(self, chunks: list[str]) -> None:
        self.queue.append(chunks)

    def handle(self, request: SkillRequest, services: Services) -> Iterator[str | Reply]:
        self.requests.append(request)
        chunks = self.queue.pop(0) if self.queue else [request.text]
        yield from chunks
        yield self.reply("".join(chunks), confidence=request.confidence)
