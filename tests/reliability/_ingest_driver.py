"""Crash-test driver: ``knowledge.base.KnowledgeBase`` ingesting a folder until killed.

Run as ``python tests/reliability/_ingest_driver.py STORE CORPUS``: opens the knowledge base
(which runs its repair), prints ``{"ready": true}``, ingests CORPUS with ``sync=True`` and
prints ``{"done": ...}``. The harness SIGKILLs it at random moments.

The embedder is :class:`HashEmbedder`, a small deterministic bag-of-words encoder, because
loading MiniLM per restart would take seconds: the property under test is storage atomicity
(SQLite rows, FAISS vectors, graph facts), which does not depend on what the vectors mean.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


class HashEmbedder:
    """Deterministic unit vectors from hashed words (same idea as ``tests.fakes.FakeEmbedder``)."""

    dim = 64

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress=None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                h = int.from_bytes(hashlib.md5(w.encode()).digest()[:4], "little")
                out[i, h % self.dim] += 1.0
            n = float(np.linalg.norm(out[i]))
            if n:
                out[i] /= n
            else:
                out[i, 0] = 1.0
        return out


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(REPO))
    from knowledge.base import KnowledgeBase

    store, corpus = Path(argv[1]), Path(argv[2])
    kb = KnowledgeBase.open(store, HashEmbedder(), index_kind="flat")
    print(json.dumps({"ready": True, "rebuilt": kb.rebuilt}), flush=True)
    report = kb.ingest([corpus], sync=True)
    print(
        json.dumps(
            {
                "done": True,
                "added": len(report.added),
                "updated": len(report.updated),
                "removed": len(report.removed),
                "seconds": report.seconds,
                "errors": report.errors,
            }
        ),
        flush=True,
    )
    kb.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
