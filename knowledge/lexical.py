"""Okapi BM25 over chunk texts, kept in memory and updated incrementally.

Dense MiniLM similarity misses rare exact terms (product codes, names); BM25 catches them.
The knowledge base fuses the two (see ``knowledge.fusion``); the FAQ benchmark measures
whether the fusion helps. The index is rebuilt from SQLite on open, so nothing is persisted.
"""

from __future__ import annotations

import heapq
import math
import re
import threading
from collections import Counter
from collections.abc import Iterable

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)


def _stem(w: str) -> str:
    # A light suffix strip: enough to match "refunds"/"refund", "charging"/"charge".
    for suf in ("ing", "ed", "es", "s"):
        if len(w) > len(suf) + 3 and w.endswith(suf):
            return w[: -len(suf)]
    return w


def tokenize(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


class BM25:
    """Incremental BM25 (Robertson/Sparck Jones IDF, k1=1.2, b=0.75 by default)."""

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self._post: dict[str, dict[int, int]] = {}
        self._len: dict[int, int] = {}
        self._terms: dict[int, tuple[str, ...]] = {}
        self._total = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._len)

    def add(self, items: Iterable[tuple[int, str]]) -> None:
        with self._lock:
            for doc_id, text in items:
                if doc_id in self._len:
                    self._remove(doc_id)
                toks = tokenize(text)
                self._len[doc_id] = len(toks)
                self._total += len(toks)
                counts = Counter(toks)
                self._terms[doc_id] = tuple(counts)
                for t, n in counts.items():
                    self._post.setdefault(t, {})[doc_id] = n

    def remove(self, ids: Iterable[int]) -> None:
        with self._lock:
            for i in ids:
                self._remove(int(i))

    def _remove(self, doc_id: int) -> None:
        n = self._len.pop(doc_id, None)
        if n is None:
            return
        self._total -= n
        for t in self._terms.pop(doc_id, ()):
            post = self._post.get(t)
            if post is not None:
                post.pop(doc_id, None)
                if not post:
                    del self._post[t]

    def _scores(self, query: str, only: set[int] | None = None) -> dict[int, float]:
        n = len(self._len)
        if not n:
            return {}
        avg = self._total / n or 1.0
        scores: dict[int, float] = {}
        for t in set(tokenize(query)):
            post = self._post.get(t)
            if not post:
                continue
            idf = math.log(1.0 + (n - len(post) + 0.5) / (len(post) + 0.5))
            items = post.items() if only is None else ((i, post[i]) for i in only if i in post)
            for i, tf in items:
                norm = self.k1 * (1 - self.b + self.b * self._len[i] / avg)
                scores[i] = scores.get(i, 0.0) + idf * tf * (self.k1 + 1) / (tf + norm)
        return scores

    def search(self, query: str, k: int = 10) -> list[tuple[int, float]]:
        with self._lock:
            scores = self._scores(query)
        return heapq.nlargest(k, scores.items(), key=lambda kv: kv[1])

    def score(self, query: str, ids: Iterable[int]) -> dict[int, float]:
        """BM25 scores of the given ids only (0 for ids without a matching term)."""
        ids = set(int(i) for i in ids)
        with self._lock:
            scores = self._scores(query, only=ids)
        return {i: scores.get(i, 0.0) for i in ids}
