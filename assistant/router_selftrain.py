"""Self-training for the router: learn from unlabelled user messages.

A bot has a few labelled examples per intent but, once it runs, many unlabelled messages. The
head is trained on the labelled examples, labels the unlabelled ones itself (pseudo-labels),
keeps those whose calibrated top-class probability is at least ``tau``, and is retrained on
labelled + kept; ``rounds`` > 1 repeats the labelling with the retrained head. The confident
messages fill in the phrasings that the few examples miss. Banking77 10-shot with 7,231
unlabelled train texts (the semi-supervised protocol of CPFT; ``benchmarks/intents.py
--selftrain``): test accuracy 87.01 -> 88.08, and 87.73 -> 88.67 on the fine-tuned encoder, at
tau 0.5 and 2 rounds, chosen on a separate dev set. With ``graph`` the pseudo-labels also hear
a label propagation over a nearest-neighbour graph of examples and messages: 88.28 and 88.93
at graph 0.5, tau 0.05 (also chosen on dev).

Calibration needs care: out-of-fold logits over labelled + pseudo-labelled rows look far surer
than the head is (the pseudo-labels agree with the head by construction), and even the labelled
rows alone are scored too kindly when the pseudo-labels around them were made by a head that had
seen them. So the final temperature comes from :func:`held_out_temperature`: each labelled fold
is predicted by a head whose pseudo-labels came from a head that never saw that fold.

The pseudo-labelling is pure: numpy vectors in, an :class:`~assistant.router_head.IntentHead`
and plain-dict statistics out; ``assistant/router.py`` embeds the pool and persists the result.
The readers at the end turn a message file or the sessions database into texts. Nothing here
imports more than numpy, the stdlib, the head and the error type, so the benchmark can use it
without the rest of the assistant.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assistant.errors import RouterError
from assistant.router_head import IntentHead, _fit_temperature, _folds

MAX_FILE_BYTES = 100_000_000  # a message log of a million lines is fine; a stray 5 GB file is not
MAX_SESSION_TURNS = 1_000_000  # most recent user turns read from the sessions database


@dataclass(frozen=True)
class SelfTrainSettings:
    """How pseudo-labels are chosen.

    Args:
        tau: keep a pseudo-label when the head's calibrated top probability is >= tau. Lower
            keeps more (and more wrong) labels; on a Banking77 dev set 0.4-0.7 were all within
            0.5 points of each other, 0.5 with 2 rounds the best.
        rounds: label-and-retrain passes; a later round relabels the whole pool (+0.4 dev
            points at tau 0.5, for twice the training time).
        max_pool: at most this many distinct unlabelled texts (a seeded sample beyond it):
            embedding and the head fit grow with the pool, and so does the stored router.
        seed: picks the sample when the pool is over ``max_pool``.
        graph: weight of the neighbour graph's vote in each pseudo-label (0: the head alone).
            The labelled examples' intents spread over a nearest-neighbour graph of labelled
            and unlabelled messages (:func:`propagate_labels`), and the pseudo-label is the
            argmax of ``(1 - graph) * head + graph * graph_vote``: the graph follows chains
            of close paraphrases that the head, fitted on 10 examples, does not reach. Pair
            it with a low ``tau`` (0.05): where head and graph disagree the mixed confidence
            is low, and those are the rows the graph corrects (Banking77 dev, fine-tuned
            encoder: +0.45 to +0.55 points at tau 0.05 over no graph, +0.05 to +0.2 at 0.5).
        neighbours: the graph's edges per message (15 measured best of 10/15/20 on dev).
    """

    tau: float = 0.5
    rounds: int = 1
    max_pool: int = 20_000
    seed: int = 0
    graph: float = 0.0
    neighbours: int = 15

    def __post_init__(self) -> None:
        for name, want in (
            ("tau", float),
            ("rounds", int),
            ("max_pool", int),
            ("seed", int),
            ("graph", float),
            ("neighbours", int),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float) if want is float else int):
                raise ValueError(f"{name} must be {want.__name__}, got {v!r}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau}")
        if not 1 <= self.rounds <= 10:
            raise ValueError(f"rounds must be between 1 and 10, got {self.rounds}")
        if self.max_pool < 1:
            raise ValueError(f"max_pool must be >= 1, got {self.max_pool}")
        if not 0.0 <= self.graph <= 1.0:
            raise ValueError(f"graph must be between 0 and 1, got {self.graph}")
        if not 1 <= self.neighbours <= 100:
            raise ValueError(f"neighbours must be between 1 and 100, got {self.neighbours}")

    def as_dict(self) -> dict[str, Any]:
        d = {**asdict(self), "tau": float(self.tau), "graph": float(self.graph)}
        if not self.graph:  # without the graph: the dict (and the fingerprint) of before it
            del d["graph"], d["neighbours"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SelfTrainSettings:
        unknown = sorted(set(d) - {"tau", "rounds", "max_pool", "seed", "graph", "neighbours"})
        if unknown:
            raise ValueError(f"unknown self-training settings: {', '.join(unknown)}")
        return cls(**d)


def normalise(text: str) -> str:
    """The key two utterances are duplicates under: case and spacing do not make a new one."""
    return " ".join(text.casefold().split())


def _distinct(unlabelled: Sequence[str]) -> set[str]:
    return {normalise(t) for t in unlabelled} - {""}


def pool_keys(unlabelled: Sequence[str]) -> np.ndarray:
    """64-bit keys of the distinct normalised texts, sorted. Stored with a self-trained router,
    so that a start can count how many messages are new or gone since it was trained."""
    keys = {
        int.from_bytes(hashlib.sha256(k.encode("utf-8", "replace")).digest()[:8], "little")
        for k in _distinct(unlabelled)
    }
    return np.array(sorted(keys), dtype=np.uint64)


def pool_digest(unlabelled: Sequence[str]) -> str:
    """sha256 of the distinct normalised texts, in sorted order: the router's fingerprint uses
    it, so reordering or repeating lines of the file does not retrain, a new message does."""
    h = hashlib.sha256()
    for key in sorted(_distinct(unlabelled)):
        h.update(key.encode("utf-8", "replace") + b"\x00")
    return h.hexdigest()


def prepare_pool(
    unlabelled: Sequence[str], labelled: Sequence[str], settings: SelfTrainSettings
) -> tuple[list[str], dict[str, int]]:
    """The texts worth pseudo-labelling, and how many were dropped for what.

    Duplicates go (one vote per distinct message, or a frequent greeting would outweigh the
    examples), as do texts identical to a labelled example (the label is already known) and
    blank ones. The result is sorted and, over ``max_pool``, a seeded sample, so it depends
    only on the set of texts, never on their order.
    """
    seen_labelled = {normalise(t) for t in labelled}
    distinct: dict[str, str] = {}
    blank = 0
    for t in sorted(unlabelled):  # the first of a duplicate group in sorted order is kept
        key = normalise(t)
        if not key:
            blank += 1
            continue
        distinct.setdefault(key, t.strip())
    duplicates = len(unlabelled) - blank - len(distinct)
    overlap = [k for k in distinct if k in seen_labelled]
    for k in overlap:
        del distinct[k]
    keys = sorted(distinct)
    capped = 0
    if len(keys) > settings.max_pool:
        rng = np.random.default_rng(settings.seed)
        take = np.sort(rng.choice(len(keys), size=settings.max_pool, replace=False))
        capped = len(keys) - settings.max_pool
        keys = [keys[i] for i in take]
    pool = [distinct[k] for k in keys]
    stats = {
        "unlabelled": len(unlabelled),
        "blank": blank,
        "duplicates": duplicates,
        "labelled_overlap": len(overlap),
        "capped": capped,
        "pool": len(pool),
    }
    return pool, stats


GRAPH_ALPHA = 0.9  # how far labels spread over the graph (0: not at all; 1: no anchoring)
GRAPH_POWER = 3.0  # edge weight = cosine ** power: close paraphrases count far more
GRAPH_ITERATIONS = 100  # alpha ** 100 < 3e-5: converged
_GRAPH_BLOCK = 1024  # rows of the similarity matrix computed at a time (memory: block x n)


def propagate_labels(
    X: np.ndarray,
    y: Sequence[str],
    U: np.ndarray,
    classes: Sequence[str],
    neighbours: int = 15,
    alpha: float = GRAPH_ALPHA,
) -> np.ndarray:
    """Label propagation (Zhou et al. 2004) from the labelled rows to the unlabelled ones.

    The graph links each of the ``len(X) + len(U)`` vectors to its ``neighbours`` most similar
    others (cosine ** :data:`GRAPH_POWER`, made symmetric); ``F = (1 - alpha) (I - alpha S)^-1 Y``
    with ``S`` the normalised graph and ``Y`` the labelled rows' one-hot intents, by iteration.
    Returns an ``(len(U), len(classes))`` array whose rows sum to 1, or to 0 where no labelled
    row is connected. Exact neighbours, a block of rows at a time (``1024 x n`` floats of
    memory): 2-2.5 s for Banking77's 8,001 vectors and 77 intents, 17 s for 22,000 random
    vectors and 200 intents (2 CPU threads), a fraction of the head fits around it.
    """
    import torch

    if not len(U):
        return np.zeros((0, len(classes)), dtype=np.float32)
    Z = np.vstack([X, U]).astype(np.float32)
    n, nl = len(Z), len(X)
    Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    k = min(neighbours, n - 1)
    cols = np.empty((n, k), dtype=np.int64)
    vals = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, _GRAPH_BLOCK):
        sim = Z[start : start + _GRAPH_BLOCK] @ Z.T
        sim[np.arange(len(sim)), np.arange(start, start + len(sim))] = -np.inf  # no self-loops
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        cols[start : start + len(sim)] = top
        vals[start : start + len(sim)] = np.take_along_axis(sim, top, axis=1)
    # W + W^T (an edge either way counts, twice if both ways), normalised D^-1/2 W D^-1/2
    src = np.concatenate([np.repeat(np.arange(n), k), cols.ravel()])
    dst = np.concatenate([cols.ravel(), np.repeat(np.arange(n), k)])
    w = np.tile(np.maximum(vals.ravel(), 0.0) ** GRAPH_POWER, 2)
    deg = np.bincount(src, weights=w, minlength=n)
    inv = np.divide(1.0, np.sqrt(deg), out=np.zeros_like(deg), where=deg > 0)
    S = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([src, dst])),
        torch.from_numpy((w * inv[src] * inv[dst]).astype(np.float32)),
        (n, n),
        check_invariants=True,
    ).coalesce()
    index_of = {c: j for j, c in enumerate(classes)}
    Y = torch.zeros((n, len(classes)), dtype=torch.float32)
    Y[torch.arange(nl), torch.tensor([index_of[c] for c in y], dtype=torch.int64)] = 1.0
    F = Y.clone()
    for _ in range(GRAPH_ITERATIONS):
        F = alpha * torch.sparse.mm(S, F) + (1.0 - alpha) * Y
    out = F[nl:].numpy()
    total = out.sum(axis=1, keepdims=True)
    return np.divide(out, total, out=np.zeros_like(out), where=total > 0)


def pseudo_label(
    head: IntentHead,
    U: np.ndarray,
    texts: Sequence[str] | None,
    tau: float,
    graph_vote: np.ndarray | None = None,
    graph: float = 0.0,
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Indices of the rows of ``U`` the head is sure of (top probability >= tau), their labels
    and their confidences. With ``graph_vote`` (:func:`propagate_labels`, columns in
    ``head.classes`` order) each row's probabilities are ``(1 - graph) * head + graph * vote``;
    a row the graph does not reach keeps the head's own."""
    proba = head.predict_proba(U, texts)
    if graph_vote is not None and graph > 0:
        reached = graph_vote.sum(axis=1, keepdims=True) > 0
        proba = np.where(reached, (1.0 - graph) * proba + graph * graph_vote, proba)
    conf = proba.max(axis=1)
    keep = np.flatnonzero(conf >= tau)
    labels = [head.classes[i] for i in proba[keep].argmax(axis=1)]
    return keep, labels, conf[keep]


def self_train(
    X: np.ndarray,
    y: Sequence[str],
    texts: Sequence[str] | None,
    U: np.ndarray,
    pool: Sequence[str] | None,
    settings: SelfTrainSettings,
    *,
    make_head: Callable[[], IntentHead],
    base: IntentHead | None = None,
    on_round: Callable[[int, IntentHead], None] | None = None,
) -> tuple[IntentHead, dict[str, Any]]:
    """Train on ``X``/``y``, then on ``X`` + the confident pseudo-labelled rows of ``U``.

    Args:
        X, y, texts: the labelled examples (vectors, intents, raw texts or None).
        U, pool: the unlabelled vectors and their texts (``pool`` is None iff ``texts`` is).
        settings: tau and rounds.
        make_head: a fresh, untrained head (the same hyper-parameters every round).
        base: the head already trained on the labelled examples alone, to skip that fit.
        on_round: called with (round, head) after each retrain (the benchmark scores them); the
            last round's head gets its held-out temperature only after this call.

    Returns the last head and ``{"pool", "kept", "rounds": [{"round", "kept",
    "mean_confidence", "changed"}, ...]}``; ``changed`` counts pool rows whose kept label
    differs from the previous round's. Stops early when a round keeps nothing or keeps exactly
    what the previous one kept (the next fit would be the same).
    """
    head = base if base is not None else make_head().fit(X, list(y), texts)
    if (texts is None) != (pool is None):
        raise ValueError("pass texts for both the labelled and the unlabelled rows, or neither")
    rounds: list[dict[str, Any]] = []
    kept_n = 0
    prev: dict[int, str] = {}
    # The last round's own cross-validated temperature would be replaced by the held-out one:
    # skip its k fits when the held-out one can be computed.
    held_out = _held_out_folds(y) is not None
    vote = None
    if len(U) and settings.graph > 0:
        vote = propagate_labels(X, y, U, head.classes, settings.neighbours)
    if len(U):
        for r in range(1, settings.rounds + 1):
            idx, labels, conf = pseudo_label(head, U, pool, settings.tau, vote, settings.graph)
            now = dict(zip(idx.tolist(), labels, strict=True))
            changed = sum(1 for i in set(now) | set(prev) if now.get(i) != prev.get(i))
            if not len(idx) or (r > 1 and changed == 0):
                break
            X2 = np.vstack([X, U[idx]])
            y2 = [*y, *labels]
            t2 = None if texts is None or pool is None else [*texts, *(pool[i] for i in idx)]
            labelled = np.arange(len(X2)) < len(X)
            last = held_out and r == settings.rounds
            head = make_head().fit(X2, y2, t2, calibrate=not last, calibrate_on=labelled)
            kept_n, prev = len(idx), now
            rounds.append(
                {
                    "round": r,
                    "kept": len(idx),
                    "mean_confidence": round(float(conf.mean()), 4),
                    "changed": changed,
                }
            )
            if on_round is not None:
                on_round(r, head)
    if rounds and held_out:
        head.temperature, head.cv_accuracy = held_out_temperature(
            X, y, texts, U, pool, settings, make_head
        )
    return head, {"pool": len(U), "kept": kept_n, "rounds": rounds}


def _held_out_folds(
    y: Sequence[str], k: int = 3
) -> tuple[list[str], np.ndarray, np.ndarray] | None:
    """(classes, label ids, stratified fold ids) of the labelled rows, or ``None`` when the
    classes are too small for two folds."""
    classes = sorted(set(y))
    index = {c: i for i, c in enumerate(classes)}
    yi = np.array([index[c] for c in y], dtype=np.int64)
    k = int(min(k, max(2, int(np.median(np.bincount(yi, minlength=len(classes)))))))
    if len(classes) < 2 or len(yi) < 2 * len(classes):
        return None
    return classes, yi, _folds(yi, k, 0)


def held_out_temperature(
    X: np.ndarray,
    y: Sequence[str],
    texts: Sequence[str] | None,
    U: np.ndarray,
    pool: Sequence[str] | None,
    settings: SelfTrainSettings,
    make_head: Callable[[], IntentHead],
) -> tuple[float, float | None]:
    """(temperature, out-of-fold accuracy) for a self-trained head, from labelled rows only.

    For each of 3 stratified folds of the labelled rows: a head trained on the other folds
    pseudo-labels the pool, a head trained on those folds + its pseudo-labels (one round, an
    approximation of ``rounds`` > 1) scores the fold; with ``settings.graph`` the graph's vote
    also spreads from the other folds only. No fold is ever scored by a head whose training
    data was labelled with its help. Costs 3 fits on the small labelled set and 3 on
    the combined set, what the head's own calibration would cost. Needs
    :func:`_held_out_folds` to be possible (``ValueError`` otherwise).
    """
    folds = _held_out_folds(y)
    if folds is None:
        raise ValueError("too few labelled examples per intent for a held-out temperature")
    classes, yi, fold = folds
    yl = list(y)
    index = {c: i for i, c in enumerate(classes)}
    oof = np.full((len(yi), len(classes)), -1e9)
    scored = np.zeros(len(yi), dtype=bool)
    for f in range(int(fold.max()) + 1):
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        t_tr = None if texts is None else [texts[int(i)] for i in tr]
        y_tr = [yl[i] for i in tr]
        if len(set(y_tr)) < 2:
            continue
        base = make_head().fit(X[tr], y_tr, t_tr)
        vote = None
        if settings.graph > 0 and len(U):
            vote = propagate_labels(X[tr], y_tr, U, base.classes, settings.neighbours)
        idx, labels, _ = pseudo_label(base, U, pool, settings.tau, vote, settings.graph)
        t2 = None if t_tr is None or pool is None else [*t_tr, *(pool[i] for i in idx)]
        head = make_head().fit(np.vstack([X[tr], U[idx]]), [*y_tr, *labels], t2, calibrate=False)
        proba = head.predict_proba(X[te], None if texts is None else [texts[int(i)] for i in te])
        cols = np.array([index[c] for c in head.classes], dtype=np.int64)
        oof[np.ix_(te, cols)] = np.log(np.clip(proba, 1e-300, 1.0))  # logits up to a row shift
        known = set(head.classes)
        scored[te] = [yl[i] in known for i in te]  # a class missing from the fold's training
    if not scored.any():  # no fold had two intents to train on: leave the logits as they are
        return 1.0, None
    temperature = _fit_temperature(oof[scored], yi[scored])
    return temperature, float((oof[scored].argmax(axis=1) == yi[scored]).mean())


# -- reading unlabelled utterances ---------------------------------------------------------
def read_unlabelled_file(path: Path, name: str | None = None) -> list[str]:
    """Utterances from a ``.txt`` (one per line) or ``.jsonl`` (``{"text": ...}`` per line).

    Raises :class:`RouterError` with one line naming the file (``name``, default the path) and,
    where there is one, the line: a bad file must stop training before anything is stored.
    """
    name = name or str(path)
    suffix = path.suffix.lower()
    if suffix not in {".txt", ".jsonl"}:
        raise RouterError(f"{name}: unlabelled utterances must be a .txt or .jsonl file")
    try:
        if not path.is_file():
            raise RouterError(f"{name}: no such file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise RouterError(f"{name}: file is too large (over {MAX_FILE_BYTES} bytes)")
        raw = path.read_bytes()
    except OSError as exc:
        raise RouterError(f"{name}: cannot read ({exc.strerror or exc})") from None
    nul = raw.find(b"\x00")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise RouterError(f"{name} line {line}: not a text file (NUL byte)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise RouterError(f"{name} line {line}: not a text file (invalid UTF-8)") from None
    out: list[str] = []
    for n, line_text in enumerate(text.splitlines(), start=1):
        if not line_text.strip():
            continue
        if suffix == ".txt":
            out.append(line_text.strip())
            continue
        try:
            obj = json.loads(line_text)
        except json.JSONDecodeError as exc:
            raise RouterError(f"{name} line {n}: invalid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise RouterError(f'{name} line {n}: expected an object with a "text" string')
        if obj["text"].strip():
            out.append(obj["text"].strip())
    if not out:
        raise RouterError(f"{name}: no utterances (the file is empty)")
    return out


def read_session_texts(db_path: Path, limit: int = MAX_SESSION_TURNS) -> list[str]:
    """The users' own messages stored in a sessions database, newest first, read-only.

    Only ``chat`` turns count (not a human agent's messages). A bot that has never run has no
    database yet: that is an empty list, not an error.
    """
    if not db_path.exists():
        return []
    try:
        db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise RouterError(f"{db_path.name}: cannot open the sessions database ({exc})") from None
    try:
        rows = db.execute(
            "SELECT user_text FROM turns WHERE kind = 'chat' ORDER BY created DESC LIMIT ?",
            (limit,),
        ).fetchall()
    except sqlite3.Error as exc:
        raise RouterError(f"{db_path.name}: cannot read the stored user turns ({exc})") from None
    finally:
        db.close()
    return [r[0] for r in rows if isinstance(r[0], str) and r[0].strip()]
