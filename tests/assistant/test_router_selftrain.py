"""Self-training the router on unlabelled messages (assistant/router_selftrain.py).

Pure pseudo-labelling logic on small synthetic vectors first (fast), then the router through
the real MiniLM encoder and a real project: persistence, retraining on change, the CLI and its
one-line errors for bad input files.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from assistant.errors import RouterError
from assistant.router import Example, IntentRouter, fingerprint
from assistant.router_head import IntentHead
from assistant.router_selftrain import (
    SelfTrainSettings,
    pool_digest,
    prepare_pool,
    propagate_labels,
    pseudo_label,
    read_session_texts,
    read_unlabelled_file,
    self_train,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- pool preparation ----------------------------------------------------------------------
def test_pool_dedupes_drops_examples_and_blank_and_ignores_order():
    unlabelled = ["Where is my card?", "where is  my card?", "  ", "hello there", "Top up failed"]
    labelled = ["HELLO there", "something else"]
    pool, stats = prepare_pool(unlabelled, labelled, SelfTrainSettings())
    assert pool == ["Top up failed", "Where is my card?"]  # sorted by normalised text
    assert stats == {
        "unlabelled": 5,
        "blank": 1,
        "duplicates": 1,
        "labelled_overlap": 1,
        "capped": 0,
        "pool": 2,
    }
    again, _ = prepare_pool(list(reversed(unlabelled)), labelled, SelfTrainSettings())
    assert again == pool


def test_pool_cap_is_a_fixed_sample_whatever_the_order():
    texts = [f"message number {i}" for i in range(50)]
    st = SelfTrainSettings(max_pool=10, seed=3)
    a, stats = prepare_pool(texts, [], st)
    b, _ = prepare_pool(texts[::-1], [], st)
    assert a == b and len(a) == 10 and stats["capped"] == 40 and stats["pool"] == 10
    c, _ = prepare_pool(texts, [], SelfTrainSettings(max_pool=10, seed=4))
    assert c != a  # the seed picks the sample


def test_pool_digest_tracks_the_set_of_texts():
    d = pool_digest(["a b", "c"])
    assert pool_digest(["c", "A  b", "c"]) == d
    assert pool_digest(["a b", "c", "new message"]) != d


@pytest.mark.parametrize(
    "bad",
    [
        {"tau": 0.0},
        {"tau": 1.5},
        {"rounds": 0},
        {"rounds": True},
        {"max_pool": 0},
        {"x": 1},
        {"graph": -0.1},
        {"graph": 1.5},
        {"graph": "0.5"},
        {"neighbours": 0},
        {"neighbours": 101},
    ],
)
def test_settings_are_validated(bad):
    with pytest.raises(ValueError):
        SelfTrainSettings.from_dict(bad)


# -- pseudo-labelling on synthetic vectors -------------------------------------------------
def _clusters(seed: int = 0, per_class: int = 3, unlabelled: int = 30):
    """Three well separated directions in 16-d; labelled and unlabelled points around each."""
    rng = np.random.default_rng(seed)
    centers = np.eye(16, dtype=np.float32)[:3]

    def around(c, n):
        v = centers[c] + 0.25 * rng.standard_normal((n, 16)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    X = np.vstack([around(c, per_class) for c in range(3)])
    y = [name for name in ("a", "b", "c") for _ in range(per_class)]
    U = np.vstack([around(c, unlabelled) for c in range(3)])
    truth = [name for name in ("a", "b", "c") for _ in range(unlabelled)]
    return X, y, U, truth


def _head() -> IntentHead:
    return IntentHead(seed=0, lexical=False, cv_folds=2)


def test_confident_pseudo_labels_join_the_training_set():
    X, y, U, truth = _clusters()
    base = _head().fit(X, y)
    st = SelfTrainSettings(tau=0.5, rounds=1)
    idx, labels, conf = pseudo_label(base, U, None, st.tau)
    proba = base.predict_proba(U)
    assert list(idx) == list(np.flatnonzero(proba.max(axis=1) >= 0.5)) and len(idx) > 30
    assert (conf >= 0.5).all()
    assert np.mean([labels[k] == truth[i] for k, i in enumerate(idx)]) > 0.9

    seen: list[int] = []
    head, stats = self_train(
        X, y, None, U, None, st, make_head=_head, base=base, on_round=lambda r, h: seen.append(r)
    )
    assert head is not base and seen == [1]
    assert stats["pool"] == len(U) and stats["kept"] == len(idx)
    assert stats["rounds"][0]["kept"] == len(idx) and stats["rounds"][0]["changed"] == len(idx)
    # the kept rows are training rows now: the head's example memory holds them
    assert head._params is not None and len(head._params["memory"]) == len(X) + len(idx)
    assert np.mean(np.array(head.predict(U)) == np.array(truth)) >= np.mean(
        np.array(base.predict(U)) == np.array(truth)
    )


def test_nothing_confident_enough_leaves_the_base_head():
    X, y, U, _ = _clusters()
    base = _head().fit(X, y)
    head, stats = self_train(
        X, y, None, U, None, SelfTrainSettings(tau=1.0), make_head=_head, base=base
    )
    assert head is base and stats["kept"] == 0 and stats["rounds"] == []


def test_a_round_that_keeps_the_same_labels_stops():
    X, y, U, _ = _clusters(per_class=4)
    _, stats = self_train(
        X, y, None, U, None, SelfTrainSettings(tau=0.4, rounds=3), make_head=_head
    )
    assert len(stats["rounds"]) == 1  # round 2 relabelled the separated clusters identically
    assert stats["kept"] == len(U)


def test_the_temperature_is_fitted_on_the_labelled_rows_only():
    # Noisy labelled rows (a third of them mislabelled) plus many easy pseudo-labelled ones:
    # fitted on every row, the temperature would be set by the easy rows and the head would
    # claim far more confidence than its labelled examples support.
    X, y, U, truth = _clusters(per_class=12, unlabelled=60)
    rng = np.random.default_rng(1)
    noisy = list(y)
    for i in rng.choice(len(y), size=len(y) // 3, replace=False):
        noisy[i] = {"a": "b", "b": "c", "c": "a"}[noisy[i]]
    X2, y2 = np.vstack([X, U]), [*noisy, *truth]
    labelled = np.arange(len(X2)) < len(X)
    everything = _head().fit(X2, y2)
    only_labelled = _head().fit(X2, y2, calibrate_on=labelled)
    assert only_labelled.temperature > everything.temperature
    assert only_labelled.cv_accuracy is not None and everything.cv_accuracy is not None
    assert only_labelled.cv_accuracy < everything.cv_accuracy  # measured on the noisy rows
    with pytest.raises(ValueError, match="calibrate_on"):
        _head().fit(X2, y2, calibrate_on=np.zeros(len(X2), dtype=bool))

    # self_train fits the temperature on held-out labelled folds: cautious on noisy labels too
    head, _ = self_train(
        X, noisy, None, U, None, SelfTrainSettings(tau=0.01, rounds=1), make_head=_head
    )
    assert head.temperature > everything.temperature


def _chain_and_far_cluster():
    """Labelled "a" at e0 and "b" at e1 (five each); unlabelled: a chain of close steps from
    e0 over e2 to halfway between e2 and e1 (its end is nearer b's examples than a's), and a far
    tight cluster around e3 that no labelled example is linked to."""
    rng = np.random.default_rng(0)
    e = np.eye(16, dtype=np.float32)

    def unit(v):
        return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)

    X = unit(np.vstack([e[0] + 0.02 * rng.standard_normal((5, 16)),
                        e[1] + 0.02 * rng.standard_normal((5, 16))]))  # fmt: skip
    y = ["a"] * 5 + ["b"] * 5
    t = np.linspace(0, 1, 40)[1:, None]
    first = unit((1 - t) * e[0] + t * e[2])  # e0 -> e2
    second = unit((1 - t) * e[2] + t * unit(e[2] + e[1]))  # e2 -> halfway to e1
    far = unit(e[3] + 0.01 * rng.standard_normal((8, 16)))
    return X, y, np.vstack([first, second, far]), len(first) + len(second)


def test_the_graph_follows_a_chain_of_paraphrases_that_the_head_does_not():
    X, y, U, n_chain = _chain_and_far_cluster()
    head = _head().fit(X, y)
    vote = propagate_labels(X, y, U, head.classes, neighbours=4)
    assert vote.shape == (len(U), 2)
    chain, far = vote[:n_chain], vote[n_chain:]
    np.testing.assert_allclose(chain.sum(axis=1), 1.0, rtol=1e-5)
    assert (chain.argmax(axis=1) == 0).all()  # every step of the chain is "a"
    assert (far.sum(axis=1) == 0).all()  # nothing labelled reaches the far cluster
    end = n_chain - 1
    assert head.predict(U[end : end + 1]) == ["b"]  # nearer b's examples: the head says b

    _, alone, _ = pseudo_label(head, U, None, 0.0)
    _, mixed, conf = pseudo_label(head, U, None, 0.0, vote, graph=0.9)
    assert alone[end] == "b" and mixed[end] == "a"
    # where the graph has no vote, the head's own probabilities decide, unchanged
    proba = head.predict_proba(U[n_chain:])
    np.testing.assert_allclose(conf[n_chain:], proba.max(axis=1), rtol=1e-6)
    assert mixed[n_chain:] == alone[n_chain:]
    assert propagate_labels(X, y, U[:0], head.classes).shape == (0, 2)


def test_self_training_with_the_graph_and_its_settings():
    X, y, U, n_chain = _chain_and_far_cluster()
    st = SelfTrainSettings(tau=0.4, rounds=1, graph=0.9, neighbours=4)
    head, stats = self_train(X, y, None, U, None, st, make_head=_head)
    assert stats["kept"] > 0 and head.predict(U[n_chain - 1 : n_chain]) == ["a"]
    plain, _ = self_train(X, y, None, U, None, SelfTrainSettings(tau=0.4), make_head=_head)
    assert plain.predict(U[n_chain - 1 : n_chain]) == ["b"]
    # without the graph the settings (and so the router's fingerprint) are what they were
    assert SelfTrainSettings(tau=0.4).as_dict() == {
        "tau": 0.4, "rounds": 1, "max_pool": 20_000, "seed": 0
    }  # fmt: skip
    assert st.as_dict()["graph"] == 0.9 and SelfTrainSettings.from_dict(st.as_dict()) == st


def test_texts_for_one_side_only_is_an_error():
    X, y, U, _ = _clusters()
    with pytest.raises(ValueError, match="both"):
        self_train(
            X, y, ["t"] * len(X), U, None, SelfTrainSettings(), make_head=_head, base=_head()
        )


# -- reading unlabelled messages -----------------------------------------------------------
def test_reads_txt_and_jsonl(tmp_path):
    txt = tmp_path / "m.txt"
    txt.write_bytes("\ufeffwhere is my card\n\n  top up failed  \n".encode())
    assert read_unlabelled_file(txt) == ["where is my card", "top up failed"]
    jl = tmp_path / "m.jsonl"
    jl.write_text('{"text": "hi"}\n\n{"text": "  ", "x": 1}\n{"text": "bye"}\n')
    assert read_unlabelled_file(jl, "m.jsonl") == ["hi", "bye"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt", None, "missing.txt: no such file"),
        ("bin.txt", b"hello\nab\x00\x01", "bin.txt line 2: not a text file (NUL byte)"),
        ("latin.txt", b"ok\ncaf\xe9\n", "latin.txt line 2: not a text file (invalid UTF-8)"),
        ("empty.txt", b"", "empty.txt: no utterances (the file is empty)"),
        ("blank.jsonl", b"\n  \n", "blank.jsonl: no utterances (the file is empty)"),
        ("bad.jsonl", b'{"text": "a"}\n{"text": \n', "bad.jsonl line 2: invalid JSON"),
        ("list.jsonl", b'{"text": "a"}\n["a"]\n', 'list.jsonl line 2: expected an object with a "text"'),
        ("notext.jsonl", b'{"utterance": "a"}\n', 'notext.jsonl line 1: expected an object with a "text"'),
        ("m.csv", b"a\n", "m.csv: unlabelled utterances must be a .txt or .jsonl file"),
    ],
)  # fmt: skip
def test_bad_files_are_one_line_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(RouterError) as err:
        read_unlabelled_file(path, name)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_session_user_turns_are_read_read_only_and_redacted(tmp_path):
    from assistant.config import UnlabelledConfig
    from assistant.sessions import SessionStore

    db = tmp_path / "sessions.db"
    assert read_session_texts(db) == []  # a bot that never ran
    store = SessionStore(db)
    s = store.create()
    store.append(s.id, "my card is lost", "sorry!")
    store.append(s.id, "mail me at jo@example.com", "ok")
    store.append(s.id, "(agent note)", "", kind="agent")
    store.close()
    before = db.read_bytes()
    assert sorted(read_session_texts(db)) == ["mail me at jo@example.com", "my card is lost"]
    assert db.read_bytes() == before
    cfg = UnlabelledConfig(sessions=True)
    assert sorted(cfg.texts(tmp_path, db)) == ["mail me at [email]", "my card is lost"]


def test_config_section_is_validated():
    from pydantic import ValidationError

    from assistant.config import BotConfig

    assert BotConfig().router.unlabelled is None
    rc = BotConfig.model_validate({"router": {"unlabelled": {"files": "m.txt", "tau": 0.7}}}).router
    assert rc.unlabelled is not None and rc.unlabelled.files == ["m.txt"]
    assert SelfTrainSettings.from_dict(rc.unlabelled.settings()).tau == 0.7
    g = BotConfig.model_validate({"router": {"unlabelled": {"files": "m.txt", "graph": 0.5}}})
    assert g.router.unlabelled is not None
    assert SelfTrainSettings.from_dict(g.router.unlabelled.settings()).graph == 0.5
    bads = (
        {},
        {"files": ["m.csv"]},
        {"sessions": True, "tau": 0},
        {"sessions": "x"},
        {"sessions": True, "graph": 2},
        {"sessions": True, "neighbours": 0},
    )
    for bad in bads:
        with pytest.raises(ValidationError):
            BotConfig.model_validate({"router": {"unlabelled": bad}})


# -- the router ----------------------------------------------------------------------------
def _examples() -> list[Example]:
    texts = {
        "lost_card": ["my card is lost", "i lost my card", "i can't find my card"],
        "exchange": ["what is the exchange rate", "rate for euros", "dollar to pound rate"],
        "top_up": ["top up failed", "my top-up did not work", "could not add money"],
    }
    return [
        Example(i, "qa" if i != "top_up" else "smalltalk", t) for i, ts in texts.items() for t in ts
    ]


UNLABELLED = [
    "someone stole my card",
    "card missing from my wallet",
    "how much is a euro in dollars",
    "what rate do you give for yen",
    "adding money to my account failed",
    "the top up was declined",
    "I LOST MY CARD",  # a copy of an example: skipped
    "someone stole my card",  # a duplicate: skipped
]


def test_default_fingerprints_are_unchanged(fake_embedder, tmp_path):
    ex = _examples()
    r = IntentRouter(fake_embedder, tmp_path / "r")
    r.ensure_trained(ex)
    assert r.fingerprint == fingerprint(ex, {}) and r.selftrain_stats is None
    doc = json.loads((tmp_path / "r" / "router.json").read_text())
    assert "selftrain" not in doc
    r.set_finetune({"epochs": 2})
    assert r._fp_params() == {"head": {}, "finetune_encoder": r.finetune.as_dict()}
    r.set_selftrain(["x"])
    assert set(r._fp_params()) == {"head", "finetune_encoder", "selftrain"}
    r.set_selftrain(None)
    r.set_finetune(None)
    assert r._fp_params() == {}
    # a self-trained router without the graph keeps its fingerprint whatever `neighbours` says
    r.set_selftrain(["x"], {"tau": 0.5})
    plain = r._fp_params()
    r.set_selftrain(["x"], {"tau": 0.5, "graph": 0.0, "neighbours": 30})
    assert r._fp_params() == plain
    r.set_selftrain(["x"], {"tau": 0.5, "graph": 0.5})
    assert r._fp_params() != plain


def test_selftrained_router_persists_reloads_and_retrains_on_change(embedder, tmp_path):
    ex = _examples()
    model_dir = tmp_path / "bot" / "models" / "router"
    st = {"tau": 0.5}
    r1 = IntentRouter(embedder, model_dir, unlabelled=UNLABELLED, selftrain=st)
    assert r1.ensure_trained(ex) is True
    s = r1.selftrain_stats
    assert s is not None and s["pool"] == 6 and s["duplicates"] == 1
    assert s["labelled_overlap"] == 1 and 0 < s["kept"] <= 6
    assert r1.train_stats is not None and r1.train_stats["selftrain"]["kept"] == s["kept"]
    assert len(r1.example_vecs) == len(ex)  # out-of-scope is measured to real examples only
    assert r1.route("somebody took my card").intent == "lost_card"
    doc = json.loads((model_dir / "router.json").read_text())
    assert doc["selftrain"]["kept"] == s["kept"]

    # a restart with the same messages (in another order) loads it, no retraining
    r2 = IntentRouter(embedder, model_dir, unlabelled=UNLABELLED[::-1], selftrain=st)
    assert r2.ensure_trained(ex) is False
    assert r2.trained_at == r1.trained_at and r2.selftrain_stats == s
    text = "the top up got declined"
    assert r2.classify(text) == r1.classify(text)

    # new messages, other settings, or none at all: never the stored self-trained router
    more = IntentRouter(embedder, model_dir, unlabelled=[*UNLABELLED, "card gone"], selftrain=st)
    assert more.ensure_trained(ex) is True
    tau = IntentRouter(embedder, model_dir, unlabelled=UNLABELLED, selftrain={"tau": 0.9})
    assert tau.ensure_trained(ex) is True
    g = {"tau": 0.05, "graph": 0.5, "neighbours": 3}
    graph = IntentRouter(embedder, model_dir, unlabelled=UNLABELLED, selftrain=g)
    assert graph.ensure_trained(ex) is True and graph.selftrain_stats is not None
    assert graph.selftrain_stats["settings"]["graph"] == 0.5 and graph.selftrain_stats["kept"] == 6
    assert graph.route("somebody took my card").intent == "lost_card"
    doc = json.loads((model_dir / "router.json").read_text())
    assert doc["selftrain"]["settings"]["neighbours"] == 3
    frozen = IntentRouter(embedder, model_dir)
    assert frozen.ensure_trained(ex) is True and frozen.selftrain_stats is None
    assert "selftrain" not in json.loads((model_dir / "router.json").read_text())


def test_a_few_new_messages_keep_the_stored_router(fake_embedder, tmp_path):
    """``sessions: true`` adds messages with every conversation: a start retrains only once
    ``retrain_after`` of them are new or gone; other changes always retrain."""
    ex, d, st = _examples(), tmp_path / "router", {"tau": 0.5}

    def start(messages, examples=ex, retrain_after=2, settings=st):
        r = IntentRouter(
            fake_embedder, d, unlabelled=messages, selftrain=settings, retrain_after=retrain_after
        )
        return r.ensure_trained(examples), r

    trained, r1 = start(UNLABELLED)
    assert trained
    base = json.loads((d / "router.json").read_text())["base_fingerprint"]
    assert base and base != r1.fingerprint
    trained, r2 = start([*UNLABELLED, "card gone"])  # one new message: kept
    assert not trained and r2.trained_at == r1.trained_at and r2.fingerprint == r1.fingerprint
    assert r2.classify("card gone") == r1.classify("card gone")
    assert start([*UNLABELLED, "card gone"], retrain_after=0)[0]  # 0: any change retrains
    grown = [*UNLABELLED, "card gone", "wallet stolen", "topup failed"]
    assert start(grown)[0]  # two new since the last training: retrained
    assert not start([*UNLABELLED, "card gone", "topup failed"])[0]  # one gone: kept
    assert start(grown, examples=ex[:-1])[0]  # the examples changed: always retrained
    assert start(grown, settings={"tau": 0.6})[0]  # the settings changed: always retrained


def test_invalid_selftrain_settings_are_router_errors(fake_embedder):
    with pytest.raises(RouterError, match="tau"):
        IntentRouter(fake_embedder, None, unlabelled=["x"], selftrain={"tau": 2})
    with pytest.raises(RouterError, match="list of strings"):
        IntentRouter(fake_embedder, None, unlabelled="one string")


# -- the command line ----------------------------------------------------------------------
def _llmos(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run ``llmos`` in-process through ``main()``: the one-line error contract included."""
    from assistant.cli import main

    monkeypatch.setattr(sys, "argv", ["llmos", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_selftrain_and_bad_inputs(project_dir, monkeypatch, capsys, embedder, router_fits):
    p = str(project_dir)
    msgs = project_dir / "messages.txt"
    msgs.write_text("\n".join([*UNLABELLED, "can you summarise this for me", "hi there!"]) + "\n")
    code, out, err = _llmos(
        monkeypatch, capsys, "train", "router", "-p", p, "--unlabelled", str(msgs), "--tau", "0.5"
    )
    assert code == 0, err
    # one fit, with the messages: not first as llmos.yaml says, then again
    assert router_fits == [{"selftrain": True, "finetune": False}]
    router_dir = project_dir / "models" / "router"
    doc = json.loads((router_dir / "router.json").read_text())
    kept, pool = doc["selftrain"]["kept"], doc["selftrain"]["pool"]
    assert f"Self-training: kept {kept} pseudo-labels of {pool} unlabelled messages" in out
    assert 0 < kept <= pool and "router.unlabelled is not set" in out
    stored = {f: (router_dir / f).read_bytes() for f in ("router.json", "router.safetensors")}

    bad = {
        "bin.txt": b"hello\n\x00\x01",
        "empty.txt": b"",
        "bad.jsonl": b'{"text": "a"}\nnot json\n',
    }
    for name, content in bad.items():
        (project_dir / name).write_bytes(content)
    cases = [
        (["--unlabelled", str(project_dir / "nope.txt")], f"{project_dir / 'nope.txt'}: no such"),
        (["--unlabelled", str(project_dir / "bin.txt")], "bin.txt line 2: not a text file"),
        (["--unlabelled", str(project_dir / "empty.txt")], "empty.txt: no utterances"),
        (["--unlabelled", str(project_dir / "bad.jsonl")], "bad.jsonl line 2: invalid JSON"),
        (["--unlabelled", str(msgs), "--tau", "0"], "invalid router self-training settings"),
        (["--tau", "0.5"], "--tau needs --unlabelled"),
        (["--graph", "0.5"], "--graph needs --unlabelled"),
    ]
    for extra, message in cases:
        code, out, err = _llmos(monkeypatch, capsys, "train", "router", "-p", p, *extra)
        assert code == 1 and err.startswith("error: ") and message in err, (extra, err)
        assert err.count("\n") == 1 and "Traceback" not in out + err

    # the same through llmos.yaml: the file named relative to the project, with its line
    (project_dir / "llmos.yaml").write_text(
        "name: bot\nrouter:\n  unlabelled:\n    files: [bad.jsonl]\n"
    )
    code, out, err = _llmos(monkeypatch, capsys, "train", "router", "-p", p)
    assert code == 1 and err == "error: bad.jsonl line 2: invalid JSON (Expecting value)\n"
    assert {f: (router_dir / f).read_bytes() for f in stored} == stored  # nothing was touched

    # settings from llmos.yaml alone (the README's graph setting): the summary line shows them
    (project_dir / "llmos.yaml").write_text(
        "name: bot\nrouter:\n  unlabelled: {files: messages.txt, graph: 0.5, tau: 0.05}\n"
    )
    code, out, err = _llmos(monkeypatch, capsys, "train", "router", "-p", p)
    assert code == 0, err
    assert "Self-training: kept" in out and "(tau 0.05, graph 0.5, 1 round(s)" in out


def test_a_start_with_router_unlabelled_keeps_the_self_trained_router(project_dir):
    """``router.unlabelled`` in llmos.yaml reaches the router at start-up: the first start
    self-trains, the next one loads that router instead of retraining it frozen."""
    from assistant.api import Assistant

    (project_dir / "messages.jsonl").write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in UNLABELLED)
    )
    cfg = project_dir / "llmos.yaml"
    cfg.write_text(cfg.read_text() + "router:\n  unlabelled:\n    files: messages.jsonl\n")
    first = Assistant.from_project(project_dir, knowledge=False, language_model=False)
    try:
        stats = first.router.selftrain_stats
        assert stats is not None and stats["pool"] > 0
        trained_at = first.router.trained_at
    finally:
        first.close()
    again = Assistant.from_project(project_dir, knowledge=False, language_model=False)
    try:
        assert again.router.trained_at == trained_at
        assert again.router.selftrain_stats == stats
    finally:
        again.close()


def test_sessions_selftraining_retrains_once_enough_turns_are_new(project_dir):
    """``sessions: true``: the stored user turns are the messages; one new turn does not make
    the next start retrain (minutes on a real bot), ``retrain_after`` of them do."""
    from assistant.api import Assistant

    cfg = project_dir / "llmos.yaml"
    cfg.write_text(
        cfg.read_text() + "router:\n  unlabelled:\n    sessions: true\n    retrain_after: 2\n"
    )

    def start_and_say(*texts: str) -> float | None:
        bot = Assistant.from_project(project_dir, knowledge=False, language_model=False)
        try:
            trained_at = bot.router.trained_at
            for text in texts:
                bot.chat(text)
            return trained_at
        finally:
            bot.close()

    first = start_and_say("hello there")
    assert first is not None
    assert start_and_say("thanks a lot") == first  # one new turn: the stored router
    assert start_and_say() != first  # two new turns since it was trained: retrained
