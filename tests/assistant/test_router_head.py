"""IntentHead: training, calibration, persistence, determinism, input checks, real MiniLM."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from assistant.router_head import IntentHead


def _clusters(
    n_classes: int = 4, per_class: int = 10, dim: int = 32, noise: float = 0.35, seed: int = 0
) -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
    """Unit vectors around one random centre per class, texts naming the class."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.repeat(np.arange(n_classes), per_class)
    X = centres[y] + noise * rng.normal(size=(len(y), dim)) / np.sqrt(dim) * 3
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    labels = [f"intent_{c}" for c in y]
    words = ["refund", "balance", "transfer", "card", "pin", "limit", "fee", "loan"]
    texts = [f"please help with my {words[c % len(words)]} number {i}" for i, c in enumerate(y)]
    return X.astype(np.float32), labels, texts, centres


def _ece(proba: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    conf = proba.max(axis=1)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    return float(
        sum(
            abs(correct[which == b].mean() - conf[which == b].mean()) * (which == b).mean()
            for b in range(bins)
            if (which == b).any()
        )
    )


def test_fit_and_predict_on_separable_clusters() -> None:
    X, y, texts, _ = _clusters()
    Xt, yt, tt, _ = _clusters(per_class=5, seed=0)  # same centres (same seed), new noise below
    head = IntentHead(seed=0).fit(X, y, texts)
    assert head.classes == sorted(set(y))
    proba = head.predict_proba(Xt, tt)
    assert proba.shape == (len(yt), 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert (proba >= 0).all()
    assert head.predict(Xt, tt) == yt
    assert 0.0 < head.temperature < 20.0
    assert head.cv_accuracy is not None and head.cv_accuracy > 0.9


def test_confidence_is_calibrated_on_overlapping_classes() -> None:
    # Heavy noise so accuracy is well below 1: an uncalibrated softmax would be overconfident.
    X, y, _, _ = _clusters(n_classes=5, per_class=60, dim=16, noise=0.9, seed=3)
    Xt, yt, _, _ = _clusters(n_classes=5, per_class=200, dim=16, noise=0.9, seed=3)
    rng = np.random.default_rng(1)
    order = rng.permutation(len(yt))  # a fresh draw of noise for the held-out points
    Xt, yt = Xt[order], [yt[i] for i in order]
    head = IntentHead(seed=0, lexical=False).fit(X, y)
    proba = head.predict_proba(Xt)
    pred = np.array(head.classes)[proba.argmax(axis=1)]
    correct = pred == np.array(yt)
    assert 0.4 < correct.mean() < 0.98
    assert abs(proba.max(axis=1).mean() - correct.mean()) < 0.08
    assert _ece(proba, correct) < 0.1


def test_ngrams_separate_intents_that_embeddings_cannot() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 16)).astype(np.float32)  # embeddings carry no signal at all
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = ["freeze"] * 20 + ["unfreeze"] * 20
    texts = [f"please freeze my card {i}" for i in range(20)]
    texts += [f"please unfreeze my card {i}" for i in range(20)]
    # No nearest-example term: on pure-noise embeddings it would only add noise.
    head = IntentHead(seed=0, knn_weight=0.0).fit(X, y, texts)
    Xq = rng.normal(size=(2, 16)).astype(np.float32)
    Xq /= np.linalg.norm(Xq, axis=1, keepdims=True)
    assert head.predict(Xq, ["can you freeze it", "can you unfreeze it"]) == ["freeze", "unfreeze"]
    with pytest.raises(ValueError, match="texts"):
        head.predict_proba(Xq)  # this head needs the n-gram view


@pytest.mark.parametrize("hparams", [{}, {"knn_weight": 0.0}, {"lexical": False}])
def test_state_round_trip_through_safetensors_and_json(tmp_path, hparams) -> None:
    X, y, texts, _ = _clusters()
    head = IntentHead(seed=1, **hparams).fit(X, y, texts)
    tensors, meta = head.state_dict()
    save_file(tensors, str(tmp_path / "head.safetensors"))
    (tmp_path / "head.json").write_text(json.dumps(meta))
    loaded = IntentHead.from_state(
        load_file(str(tmp_path / "head.safetensors")),
        json.loads((tmp_path / "head.json").read_text()),
    )
    assert loaded.classes == head.classes
    assert loaded.temperature == head.temperature
    np.testing.assert_array_equal(loaded.predict_proba(X, texts), head.predict_proba(X, texts))


def test_same_seed_same_model_and_progress_is_reported() -> None:
    X, y, texts, _ = _clusters(noise=0.8)
    calls: list[tuple[int, int]] = []
    a = IntentHead(seed=7).fit(X, y, texts, on_progress=lambda d, t, info: calls.append((d, t)))
    b = IntentHead(seed=7).fit(X, y, texts)
    np.testing.assert_array_equal(a.predict_proba(X, texts), b.predict_proba(X, texts))
    assert (
        calls
        and calls[-1][0] == calls[-1][1]
        and [d for d, _ in calls] == list(range(1, len(calls) + 1))
    )


def _bad_fits() -> list[tuple[str, object, object, object]]:
    X, y, texts, _ = _clusters()
    nan = X.copy()
    nan[3, 2] = np.nan
    return [
        ("empty", np.zeros((0, 32), np.float32), [], None),
        ("one intent", X, ["same"] * len(y), None),
        ("labels", X, y[:-1], None),
        ("texts", X, y, texts[:-1]),
        ("NaN", nan, y, None),
        ("2-d", X[0], y[:1], None),
        ("real numbers", np.array([["a"] * 32] * len(y)), y, None),
        ("huge", X * 1e30, y, None),
    ]


@pytest.mark.parametrize(("what", "X", "y", "texts"), _bad_fits(), ids=lambda v: str(v)[:12])
def test_bad_training_input_raises_value_error(what, X, y, texts) -> None:
    with pytest.raises(ValueError):
        IntentHead().fit(X, y, texts)


def test_bad_use_raises_clear_errors() -> None:
    X, y, _, _ = _clusters()
    with pytest.raises(ValueError, match="unknown"):
        IntentHead(epochs=3)
    with pytest.raises(ValueError, match="lexical must be bool"):
        IntentHead(lexical="yes")
    with pytest.raises(ValueError, match=">= 0"):
        IntentHead(weight_decay=-1.0)
    with pytest.raises(RuntimeError, match="not trained"):
        IntentHead().predict_proba(X)
    head = IntentHead(lexical=False).fit(X, y)
    with pytest.raises(ValueError, match="columns"):
        head.predict_proba(np.ones((1, 8), np.float32))
    with pytest.raises(ValueError, match="empty"):
        head.predict_proba(np.zeros((0, 32), np.float32))


def test_damaged_state_is_rejected() -> None:
    X, y, texts, _ = _clusters()
    tensors, meta = IntentHead(seed=0).fit(X, y, texts).state_dict()
    with pytest.raises(ValueError, match="IntentHead"):
        IntentHead.from_state(tensors, {**meta, "kind": "something else"})
    with pytest.raises(ValueError, match="shape"):
        IntentHead.from_state({**tensors, "w": tensors["w"][:, :2]}, meta)
    with pytest.raises(ValueError, match="vocabulary"):
        IntentHead.from_state(tensors, {**meta, "vocab": meta["vocab"][:-1]})
    bad = tensors["w"].copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        IntentHead.from_state({**tensors, "w": bad}, meta)
    with pytest.raises(ValueError, match="malformed"):
        IntentHead.from_state({}, meta)


def test_real_minilm_routes_held_out_paraphrases(embedder) -> None:
    intents = {
        "weather": ["will it rain tomorrow", "what's the forecast", "is it sunny outside",
                    "how cold is it today", "do I need an umbrella", "weather this weekend",
                    "temperature in paris", "is a storm coming"],
        "translate": ["translate this to french", "how do you say hello in german",
                      "what is cat in spanish", "put this sentence into italian",
                      "translate the last answer", "say thank you in japanese",
                      "english to dutch please", "can you translate it"],
        "summarize": ["summarize this document", "give me a short summary", "tl;dr please",
                      "sum up the report", "what are the key points", "make it shorter",
                      "brief overview of the file", "condense this text"],
        "greet": ["hello", "hi there", "good morning", "hey", "howdy", "hi bot",
                  "good evening", "hello again"],
        "human": ["talk to a person", "I want a human agent", "connect me to support staff",
                  "let me speak to someone real", "get me a representative",
                  "transfer me to an operator", "human please", "real person now"],
        "joke": ["tell me a joke", "make me laugh", "say something funny", "know any jokes",
                 "cheer me up with a pun", "a funny story please", "got a riddle",
                 "tell me something hilarious"],
    }  # fmt: skip
    texts = [t for ex in intents.values() for t in ex]
    y = [name for name, ex in intents.items() for _ in ex]
    head = IntentHead(seed=0).fit(embedder.encode(texts), y, texts)
    queries = {
        "is it going to snow later": "weather",
        "how would I say goodbye in portuguese": "translate",
        "can you shorten this article for me": "summarize",
        "hiya": "greet",
        "I need to speak with a real agent": "human",
        "do you know a good joke": "joke",
    }
    qs = list(queries)
    proba = head.predict_proba(embedder.encode(qs), qs)
    pred = [head.classes[i] for i in proba.argmax(axis=1)]
    assert sum(p == queries[q] for q, p in zip(qs, pred, strict=True)) >= 5
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
