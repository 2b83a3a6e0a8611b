"""The router's trainable head: intent probabilities from frozen MiniLM vectors plus n-grams.

``assistant/router.py`` embeds each utterance once with :class:`knowledge.embed.Embedder` and
hands the ``(n, 384)`` unit vectors, together with the raw texts, to :class:`IntentHead`.
The head is one softmax layer over two views of the utterance, trained jointly:

* the sentence embedding (meaning, paraphrase), through a linear layer, and
* TF-IDF word 1-2-grams and character 3-5-grams of the text (the exact words that separate
  near-duplicate intents such as "card not working" and "card swallowed"), through an
  ``EmbeddingBag`` so the sparse vocabulary never becomes a dense matrix,

and a nearest-example similarity term that helps when there are only a few examples per intent.
Training is a convex, full-batch L-BFGS fit with weight decay (label smoothing is available but
off: it cost a point on Banking77): seconds for a bot's few hundred examples on two CPU cores,
minutes for 10k, and deterministic for a seed. Confidence is calibrated with one temperature fitted
on out-of-fold logits (k-fold cross-validation inside the training examples), so the top
probability tracks accuracy and the router's thresholds mean what they say.

Everything saved is arrays (safetensors) and JSON: no pickle.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

FORMAT_VERSION = 1
MAX_TEXT_CHARS = 2_000  # n-grams of longer texts are taken from their start; bounded work

DEFAULTS: dict[str, Any] = {
    "emb_scale": 20.0,  # unit vectors have ~0.05 per dimension; bring them near unit variance
    "lexical": True,  # fuse TF-IDF n-grams with the embedding
    # Scales of the L2-normalised word / char n-gram blocks. Like emb_scale they set how hard
    # weight decay pulls on each view; 10 measured best (Banking77 full 94.35 vs 92.66 at 1).
    "word_weight": 10.0,
    "char_weight": 10.0,
    "min_df": 1,
    "max_features": 200_000,
    "weight_decay": 1e-2,  # L2 on all weights, per example-averaged loss
    "label_smoothing": 0.0,  # measured: 0.1 costs ~1 point on Banking77 10-shot
    "knn_weight": 0.25,  # weight of the max-cosine-to-class-examples logit term (+0.4 10-shot)
    "knn_scale": 20.0,
    "max_iter": 200,
    "cv_folds": 3,  # folds for the temperature (k extra fits); fewer when classes are tiny
}

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[£$€%?!]")


class _Lexicon:
    """TF-IDF over word 1-2-grams and char 3-5-grams, stored as a vocabulary and an IDF array."""

    def __init__(
        self, vocab: list[str], idf: np.ndarray, word_weight: float, char_weight: float
    ) -> None:
        self.vocab = vocab
        self.index = {f: i for i, f in enumerate(vocab)}
        self.idf = idf.astype(np.float32)
        self.word_weight = word_weight
        self.char_weight = char_weight

    @staticmethod
    def grams(text: str) -> tuple[Counter[str], Counter[str]]:
        tokens = _TOKEN_RE.findall(text[:MAX_TEXT_CHARS].lower())
        words: Counter[str] = Counter("w" + t for t in tokens)
        words.update("b" + a + " " + b for a, b in itertools.pairwise(tokens))
        chars: Counter[str] = Counter()
        for t in tokens:
            padded = f" {t} "
            for n in (3, 4, 5):
                chars.update("c" + padded[i : i + n] for i in range(len(padded) - n + 1))
        return words, chars

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        *,
        min_df: int,
        max_features: int,
        word_weight: float,
        char_weight: float,
    ) -> _Lexicon:
        df: Counter[str] = Counter()
        for text in texts:
            words, chars = cls.grams(text)
            df.update(words.keys())
            df.update(chars.keys())
        kept = [(f, c) for f, c in df.items() if c >= min_df]
        # Most frequent first, ties broken by name: the vocabulary is deterministic.
        kept.sort(key=lambda fc: (-fc[1], fc[0]))
        kept = kept[:max_features]
        n = len(texts)
        vocab = [f for f, _ in kept]
        idf = np.array([math.log((1 + n) / (1 + c)) + 1.0 for _, c in kept], dtype=np.float32)
        return cls(vocab, idf, word_weight, char_weight)

    def transform(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat ``(ids, offsets, weights)`` for ``torch.nn.EmbeddingBag``."""
        ids: list[int] = []
        weights: list[float] = []
        offsets = np.zeros(len(texts), dtype=np.int64)
        for row, text in enumerate(texts):
            offsets[row] = len(ids)
            for block, scale in zip(
                self.grams(text), (self.word_weight, self.char_weight), strict=True
            ):
                b_ids: list[int] = []
                b_w: list[float] = []
                for f, tf in block.items():
                    j = self.index.get(f)
                    if j is not None:
                        b_ids.append(j)
                        b_w.append((1.0 + math.log(tf)) * float(self.idf[j]))
                if b_ids:
                    w = np.asarray(b_w, dtype=np.float64)
                    w *= scale / max(float(np.linalg.norm(w)), 1e-12)
                    ids.extend(b_ids)
                    weights.extend(w.tolist())
        return (
            np.asarray(ids, dtype=np.int64),
            offsets,
            np.asarray(weights, dtype=np.float32),
        )


def name_examples(intents: Iterable[str]) -> list[tuple[str, str]]:
    """(intent, text) for ``router.intent_names``: each intent whose name has words gives one
    example, "card_arrival" -> "card arrival" (a skill's own intent, "skill:summarize", gives
    "summarize"). A well-named intent states its meaning in two or three words, which the few
    examples per intent may never say so plainly (Banking77 10-shot, frozen head: +0.36 on
    test, see BENCHMARKS.md); a name such as ``faq_1`` says nothing, so it is off by default."""
    out = []
    for intent in sorted(intents):
        text = " ".join(re.sub(r"[_\-.:/]+", " ", intent.removeprefix("skill:")).split())
        if any(c.isalpha() for c in text):
            out.append((intent, text))
    return out


def _fit_linear(
    x: Any,
    lex: tuple[Any, Any, Any] | None,
    y: Any,
    n_classes: int,
    n_lex: int,
    hp: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    """Full-batch L-BFGS on the fused softmax; returns the torch weight tensors."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    d = x.shape[1]
    w = (torch.randn(d, n_classes, generator=gen) * 0.01).requires_grad_()
    b = torch.zeros(n_classes, requires_grad=True)
    params = [w, b]
    lw = None
    if lex is not None and n_lex:
        lw = torch.zeros(n_lex, n_classes, requires_grad=True)
        params.append(lw)
    xs = x * float(hp["emb_scale"])
    wd = float(hp["weight_decay"])
    ls = float(hp["label_smoothing"])
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=int(hp["max_iter"]),
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Any:
        opt.zero_grad()
        z = xs @ w + b
        reg = (w * w).sum()
        if lw is not None:
            assert lex is not None
            ids, offsets, weights = lex
            z = z + F.embedding_bag(ids, lw, offsets, mode="sum", per_sample_weights=weights)
            reg = reg + (lw * lw).sum()
        loss = F.cross_entropy(z, y, label_smoothing=ls) + 0.5 * wd * reg
        loss.backward()
        return loss

    # Small full-batch problems: several threads only add hand-off cost, and on a busy
    # 2-core machine they made a 40-example fit 25x slower. One thread, restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    out = {"w": w.detach(), "b": b.detach()}
    if lw is not None:
        out["lex_w"] = lw.detach()
    return out


def _check_matrix(X: Any, dim: int | None = None) -> np.ndarray:
    if not isinstance(X, np.ndarray):
        try:
            X = np.asarray(X, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"X must be a numeric array: {exc}") from None
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-d array (n, dim), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X is empty (shape {X.shape})")
    if not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
        raise ValueError(f"X must hold real numbers, got dtype {X.dtype}")
    X = X.astype(np.float32, copy=False)
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values")
    if float(np.abs(X).max()) > 1e4:
        raise ValueError("X values are out of range for embeddings (|x| > 1e4)")
    if dim is not None and X.shape[1] != dim:
        raise ValueError(f"X has {X.shape[1]} columns but the head was trained on {dim}")
    return X


def _check_texts(texts: Sequence[str] | None, n: int) -> list[str] | None:
    if texts is None:
        return None
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, not one string")
    texts = list(texts)
    if len(texts) != n:
        raise ValueError(f"got {len(texts)} texts for {n} rows of X")
    if not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must all be strings")
    return texts


def _folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Stratified fold ids: each class is spread round-robin over the folds after a shuffle."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y), dtype=np.int64)
    start = 0
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        fold[idx] = (np.arange(len(idx)) + start) % k
        start += len(idx)  # rotate so classes with one example do not all land in fold 0
    return fold


def _fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature that minimises held-out NLL (golden-section search on log T)."""
    z = logits.astype(np.float64)

    def nll(log_t: float) -> float:
        s = z / math.exp(log_t)
        s = s - s.max(axis=1, keepdims=True)
        lse = np.log(np.exp(s).sum(axis=1))
        return float((lse - s[np.arange(len(y)), y]).mean())

    lo, hi = math.log(0.05), math.log(20.0)
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(b)
    return float(math.exp((lo + hi) / 2))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class IntentHead:
    """Calibrated intent classifier over sentence embeddings (and, given texts, n-grams).

    Args:
        seed: makes training (initialisation, folds) repeatable.
        **hparams: overrides of :data:`DEFAULTS`; unknown names raise ``ValueError``.
    """

    def __init__(self, *, seed: int = 0, **hparams: Any) -> None:
        unknown = sorted(set(hparams) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown IntentHead hyper-parameters: {', '.join(unknown)}")
        for name, value in hparams.items():
            want = type(DEFAULTS[name])
            ok = isinstance(value, want) or (want is float and isinstance(value, int))
            if not ok or isinstance(value, bool) is not (want is bool):
                raise ValueError(f"IntentHead hyper-parameter {name} must be {want.__name__}")
            if want is not bool and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"IntentHead hyper-parameter {name} must be >= 0")
        self.seed = int(seed)
        self.hparams: dict[str, Any] = {**DEFAULTS, **hparams}
        self.classes: list[str] = []
        self.temperature = 1.0
        self.cv_accuracy: float | None = None  # out-of-fold accuracy seen while calibrating
        self.dim: int | None = None
        self._params: dict[str, Any] | None = None

    # -- training ----------------------------------------------------------------------
    def fit(
        self,
        X: np.ndarray,
        y: Sequence[str],
        texts: Sequence[str] | None = None,
        *,
        on_progress: Any = None,
        calibrate: bool = True,
        calibrate_on: np.ndarray | None = None,
    ) -> IntentHead:
        """Train on ``X`` (n, dim) with labels ``y``; ``texts`` switch on the n-gram view.

        ``on_progress(done, total, info)`` is called after each of the k+1 fits.
        ``calibrate=False`` skips the k extra fits (temperature 1), for callers that calibrate
        the head themselves. ``calibrate_on`` (boolean, one per row) limits the rows whose
        out-of-fold logits fit the temperature: self-training passes its human-labelled rows,
        because the head's own pseudo-labels agree with it by construction and would make it
        look surer than it is.
        """
        X = _check_matrix(X)
        if isinstance(y, str) or len(y) != X.shape[0]:
            raise ValueError(f"got {len(y)} labels for {X.shape[0]} rows of X")
        labels = [str(c) for c in y]
        if any(not c for c in labels):
            raise ValueError("labels must be non-empty strings")
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise ValueError("need examples of at least two intents to train a classifier")
        texts = _check_texts(texts, X.shape[0])
        if calibrate_on is None:
            calib = np.ones(X.shape[0], dtype=bool)
        else:
            calib = np.asarray(calibrate_on, dtype=bool)
            if calib.shape != (X.shape[0],) or not calib.any():
                raise ValueError("calibrate_on must mark at least one of the rows of X")
        index = {c: i for i, c in enumerate(classes)}
        yi = np.array([index[c] for c in labels], dtype=np.int64)
        n = len(yi)

        from tqdm.auto import tqdm

        counts = np.bincount(yi, minlength=len(classes))
        k = int(min(self.hparams["cv_folds"], max(2, int(np.median(counts)))))
        calibrate = calibrate and k >= 2 and n >= 2 * len(classes)
        total = (k if calibrate else 0) + 1
        bar = tqdm(total=total, desc="router head", unit="fit", disable=None, leave=False)
        done = 0

        def tick(stage: str) -> None:
            nonlocal done
            done += 1
            bar.update(1)
            if on_progress is not None:
                on_progress(done, total, {"stage": stage})

        self.cv_accuracy = None
        try:
            temperature = 1.0
            if calibrate:
                fold = _folds(yi, k, self.seed)
                oof = np.zeros((n, len(classes)), dtype=np.float64)
                for f in range(k):
                    tr, te = fold != f, fold == f
                    params = self._train(X[tr], yi[tr], _take(texts, tr), len(classes), f + 1)
                    oof[te] = self._logits(params, X[te], _take(texts, te))
                    tick(f"fold {f + 1}/{k}")
                temperature = _fit_temperature(oof[calib], yi[calib])
                self.cv_accuracy = float((oof[calib].argmax(axis=1) == yi[calib]).mean())
            params = self._train(X, yi, texts, len(classes), 0)
            tick("final")
        finally:
            bar.close()
        self.classes = classes
        self.dim = X.shape[1]
        self.temperature = temperature
        self._params = params
        return self

    def _train(
        self,
        X: np.ndarray,
        yi: np.ndarray,
        texts: list[str] | None,
        n_classes: int,
        seed_offset: int,
    ) -> dict[str, Any]:
        import torch

        hp = self.hparams
        lexicon = None
        lex: tuple[Any, Any, Any] | None = None
        if hp["lexical"] and texts is not None:
            lexicon = _Lexicon.fit(
                texts,
                min_df=int(hp["min_df"]),
                max_features=int(hp["max_features"]),
                word_weight=float(hp["word_weight"]),
                char_weight=float(hp["char_weight"]),
            )
            ids_, offsets_, weights_ = lexicon.transform(texts)
            lex = (torch.from_numpy(ids_), torch.from_numpy(offsets_), torch.from_numpy(weights_))
        weights = _fit_linear(
            torch.from_numpy(np.ascontiguousarray(X)),
            lex,
            torch.from_numpy(yi),
            n_classes,
            len(lexicon.vocab) if lexicon is not None else 0,
            hp,
            self.seed * 1009 + seed_offset,
        )
        params: dict[str, Any] = {k: v.numpy().astype(np.float32) for k, v in weights.items()}
        params["lexicon"] = lexicon
        if float(hp["knn_weight"]) > 0:
            params["memory"] = X.astype(np.float32)
            params["memory_y"] = yi.astype(np.int64)
        return params

    # -- inference ---------------------------------------------------------------------
    def _logits(self, params: dict[str, Any], X: np.ndarray, texts: list[str] | None) -> np.ndarray:
        hp = self.hparams
        z = (X * np.float32(hp["emb_scale"])) @ params["w"] + params["b"]
        lexicon: _Lexicon | None = params.get("lexicon")
        if lexicon is not None:
            if texts is None:
                raise ValueError("this head uses n-gram features: pass texts with X")
            ids, offsets, weights = lexicon.transform(texts)
            rows = np.repeat(np.arange(len(texts)), np.diff(np.append(offsets, len(ids))))
            np.add.at(z, rows, weights[:, None] * params["lex_w"][ids])
        if "memory" in params:
            n_classes = z.shape[1]
            sims = X @ params["memory"].T  # (n, m) cosine: both sides are unit vectors
            best = np.full((len(X), n_classes), -1.0, dtype=np.float32)
            my = params["memory_y"]
            for c in np.unique(my):
                best[:, c] = sims[:, my == c].max(axis=1)
            z = z + float(hp["knn_weight"]) * float(hp["knn_scale"]) * best
        return z.astype(np.float64)

    def predict_proba(self, X: np.ndarray, texts: Sequence[str] | None = None) -> np.ndarray:
        """Calibrated probabilities ``(n, len(classes))``; each row sums to 1."""
        if self._params is None:
            raise RuntimeError("IntentHead is not trained: call fit() or from_state() first")
        X = _check_matrix(X, self.dim)
        texts = _check_texts(texts, X.shape[0])
        return _softmax(self._logits(self._params, X, texts) / self.temperature)

    def predict(self, X: np.ndarray, texts: Sequence[str] | None = None) -> list[str]:
        """The most probable intent of each row."""
        proba = self.predict_proba(X, texts)
        return [self.classes[i] for i in proba.argmax(axis=1)]

    # -- persistence -------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays for safetensors and JSON-able metadata; :meth:`from_state` inverts it."""
        if self._params is None:
            raise RuntimeError("IntentHead is not trained: nothing to save")
        p = self._params
        tensors = {"w": p["w"], "b": p["b"]}
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "kind": "llmos.IntentHead",
            "classes": list(self.classes),
            "hparams": dict(self.hparams),
            "seed": self.seed,
            "temperature": self.temperature,
            "dim": self.dim,
            "cv_accuracy": self.cv_accuracy,
            "vocab": None,
        }
        lexicon: _Lexicon | None = p.get("lexicon")
        if lexicon is not None:
            tensors["lex_w"] = p["lex_w"]
            tensors["lex_idf"] = lexicon.idf
            meta["vocab"] = list(lexicon.vocab)
        if "memory" in p:
            tensors["memory"] = p["memory"]
            tensors["memory_y"] = p["memory_y"]
        return {k: np.ascontiguousarray(v) for k, v in tensors.items()}, meta

    @classmethod
    def from_state(cls, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> IntentHead:
        """Rebuild a trained head, checking every shape so a damaged file fails clearly."""
        if not isinstance(meta, dict) or meta.get("kind") != "llmos.IntentHead":
            raise ValueError("not an IntentHead state (meta.kind is missing or wrong)")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported IntentHead format {meta.get('format_version')!r}")
        try:
            hparams = {k: v for k, v in dict(meta["hparams"]).items() if k in DEFAULTS}
            head = cls(seed=int(meta["seed"]), **hparams)
            classes = [str(c) for c in meta["classes"]]
            dim = int(meta["dim"])
            temperature = float(meta["temperature"])
            w = np.asarray(tensors["w"], dtype=np.float32)
            b = np.asarray(tensors["b"], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"IntentHead state is incomplete or malformed: {exc}") from None
        n_classes = len(classes)
        if n_classes < 2 or len(set(classes)) != n_classes:
            raise ValueError("IntentHead state: classes must be at least two distinct names")
        if w.shape != (dim, n_classes) or b.shape != (n_classes,):
            raise ValueError(f"IntentHead state: weight shapes {w.shape}, {b.shape} do not fit")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError("IntentHead state: temperature must be a positive number")
        params: dict[str, Any] = {"w": w, "b": b, "lexicon": None}
        vocab = meta.get("vocab")
        if vocab is not None:
            idf = np.asarray(tensors.get("lex_idf"), dtype=np.float32)
            lex_w = np.asarray(tensors.get("lex_w"), dtype=np.float32)
            if not isinstance(vocab, list) or idf.shape != (len(vocab),):
                raise ValueError("IntentHead state: vocabulary and IDF sizes differ")
            if lex_w.shape != (len(vocab), n_classes):
                raise ValueError("IntentHead state: n-gram weight shape does not fit")
            params["lexicon"] = _Lexicon(
                [str(v) for v in vocab],
                idf,
                float(head.hparams["word_weight"]),
                float(head.hparams["char_weight"]),
            )
            params["lex_w"] = lex_w
        if "memory" in tensors:
            memory = np.asarray(tensors["memory"], dtype=np.float32)
            memory_y = np.asarray(tensors.get("memory_y"), dtype=np.int64)
            if memory.ndim != 2 or memory.shape[1] != dim or memory_y.shape != (len(memory),):
                raise ValueError("IntentHead state: example memory shape does not fit")
            if len(memory_y) and (memory_y.min() < 0 or memory_y.max() >= n_classes):
                raise ValueError("IntentHead state: example memory labels out of range")
            params["memory"] = memory
            params["memory_y"] = memory_y
        for name in ("w", "b", "lex_w", "memory"):
            if name in params and not np.isfinite(params[name]).all():
                raise ValueError(f"IntentHead state: {name} contains NaN or infinite values")
        head.classes = classes
        head.dim = dim
        head.temperature = temperature
        cv = meta.get("cv_accuracy")
        head.cv_accuracy = float(cv) if isinstance(cv, (int, float)) else None
        head._params = params
        return head


def _take(texts: list[str] | None, mask: np.ndarray) -> list[str] | None:
    if texts is None:
        return None
    return [t for t, keep in zip(texts, mask, strict=True) if keep]
