"""Okapi BM25 over chunk texts, kept in memory and updated incrementally.

Dense MiniLM similarity misses rare exact terms (product codes, names); BM25 catches them.
The knowledge base fuses the two (see ``knowledge.fusion``); the FAQ benchmark measures
whether the fusion helps. The index is rebuilt from SQLite on open, so nothing is persisted.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from collections.abc import Iterable

import numpy as np

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
    # A light suffix strip: enough to match "refunds"/"refund", "charging"/"charge"; a final
    # "e" goes too, so "release" meets "released" and "freeze" meets "freezes" ("releas").
    for suf in ("ing", "ed", "es", "s"):
        if len(w) > len(suf) + 3 and w.endswith(suf):
            w = w[: -len(suf)]
            break
    return w[:-1] if len(w) > 4 and w.endswith("e") else w


def tokenize(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


class BM25:
    """Incremental BM25 (Robertson/Sparck Jones IDF, k1=1.2, b=0.75 by default).

    Postings live in dicts so adds and removes stay cheap; each term's postings are also
    packed into numpy arrays on first use after a change, so a query over 100k chunks scores
    its terms with a few vector operations instead of a Python loop per posting (the loop
    cost 50-100 ms per question at that size; the packed path costs about 1 ms).
    """

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self._post: dict[str, dict[int, int]] = {}
        self._packed: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._len: dict[int, int] = {}
        self._terms: dict[int, tuple[str, ...]] = {}
        self._total = 0
        self._max_id = -1
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
                self._max_id = max(self._max_id, doc_id)
                counts = Counter(toks)
                self._terms[doc_id] = tuple(counts)
                for t, n in counts.items():
                    self._post.setdefault(t, {})[doc_id] = n
                    self._packed.pop(t, None)

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
            self._packed.pop(t, None)
            post = self._post.get(t)
            if post is not None:
                post.pop(doc_id, None)
                if not post:
                    del self._post[t]

    def _pack(self, t: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(ids, term frequencies, document lengths) of ``t``'s postings, cached until changed."""
        packed = self._packed.get(t)
        if packed is None:
            post = self._post.get(t)
            if not post:
                return None
            n = len(post)
            packed = (
                np.fromiter(post.keys(), dtype=np.int64, count=n),
                np.fromiter(post.values(), dtype=np.float64, count=n),
                np.fromiter((self._len[i] for i in post), dtype=np.float64, count=n),
            )
            self._packed[t] = packed
        return packed

    def _idf(self, df: int, n: int) -> float:
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def _scores(self, query: str, only: set[int]) -> dict[int, float]:
        """Scores of the ids in ``only``: a dict walk, cheap because ``only`` is small."""
        n = len(self._len)
        if not n:
            return {}
        avg = self._total / n or 1.0
        scores: dict[int, float] = {}
        for t in set(tokenize(query)):
            post = self._post.get(t)
            if not post:
                continue
            idf = self._idf(len(post), n)
            for i in only:
                tf = post.get(i)
                if tf:
                    norm = self.k1 * (1 - self.b + self.b * self._len[i] / avg)
                    scores[i] = scores.get(i, 0.0) + idf * tf * (self.k1 + 1) / (tf + norm)
        return scores

    def search(self, query: str, k: int = 10) -> list[tuple[int, float]]:
        """The ``k`` best-scoring ids, best first (ties broken by the smaller id)."""
        terms = set(tokenize(query))
        with self._lock:
            n = len(self._len)
            if not n or k <= 0:
                return []
            avg = self._total / n or 1.0
            id_parts, score_parts = [], []
            for t in terms:
                packed = self._pack(t)
                if packed is None:
                    continue
                ids, tf, dl = packed
                norm = self.k1 * (1 - self.b + self.b * dl / avg)
                id_parts.append(ids)
                score_parts.append(self._idf(len(ids), n) * tf * (self.k1 + 1) / (tf + norm))
            max_id = self._max_id
        if not id_parts:
            return []
        ids = np.concatenate(id_parts)
        sc: np.ndarray = np.concatenate(score_parts)
        if len(id_parts) > 1:
            # Sum each id's per-term scores: a dense bincount while ids stay compact (SQLite
            # rowids do), a sort-based reduction when they are sparse.
            if max_id < 8 * len(ids) + 1_000_000:
                dense = np.bincount(ids, weights=sc, minlength=max_id + 1)
                ids = np.flatnonzero(dense)
                sc = dense[ids]
            else:
                ids, inv = np.unique(ids, return_inverse=True)
                sc = np.bincount(inv, weights=sc)
        if len(ids) > k:
            top = np.argpartition(-sc, k - 1)[:k]
            ids, sc = ids[top], sc[top]
        order = np.lexsort((ids, -sc))
        return [(int(ids[i]), float(sc[i])) for i in order]

    def score(self, query: str, ids: Iterable[int]) -> dict[int, float]:
        """BM25 scores of the given ids only (0 for ids without a matching term)."""
        ids = set(int(i) for i in ids)
        with self._lock:
            scores = self._scores(query, only=ids)
        return {i: scores.get(i, 0.0) for i in ids}
