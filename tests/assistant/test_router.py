"""Router persistence and retraining, with a fast fake encoder (the real one is covered by the
dialogue and CLI tests)."""

import pytest

from assistant.errors import RouterError
from assistant.router import Example, IntentRouter, RouteContext


def examples(extra: str | None = None) -> list[Example]:
    out = [
        Example("greet", "smalltalk", t)
        for t in ["hello there", "hi friend", "good morning to you", "hey hello"]
    ]
    out += [
        Example("refund", "qa", t)
        for t in ["refund my order", "I want my money back", "refund policy please", "get a refund"]
    ]
    out += [
        Example("summarize", "summarize", t)
        for t in ["summarize this text", "give me a summary", "summary please", "sum it up"]
    ]
    if extra:
        out.append(Example("greet", "smalltalk", extra))
    return out


def test_trains_persists_and_retrains_only_on_change(tmp_path, fake_embedder):
    r1 = IntentRouter(fake_embedder, tmp_path / "router")
    assert r1.ensure_trained(examples()) is True
    assert (tmp_path / "router" / "router.safetensors").is_file()
    assert (tmp_path / "router" / "router.json").is_file()
    assert r1.route("refund my order please").skill == "qa"

    r2 = IntentRouter(fake_embedder, tmp_path / "router")
    assert r2.ensure_trained(examples()) is False  # loaded, not retrained
    assert r2.trained_at == r1.trained_at
    text = "give me a summary of it"
    assert r2.classify(text)[0][0][0] == r1.classify(text)[0][0][0]

    r3 = IntentRouter(fake_embedder, tmp_path / "router")
    assert r3.ensure_trained(examples(extra="howdy partner")) is True  # examples changed


def test_damaged_router_files_are_retrained_not_trusted(tmp_path, fake_embedder):
    r1 = IntentRouter(fake_embedder, tmp_path / "router")
    r1.ensure_trained(examples())
    (tmp_path / "router" / "router.safetensors").write_bytes(b"\x00garbage")
    r2 = IntentRouter(fake_embedder, tmp_path / "router")
    assert r2.ensure_trained(examples()) is True
    assert r2.route("hello there").skill == "smalltalk"


def test_follow_up_and_slots_resolve_against_context(tmp_path, fake_embedder):
    r = IntentRouter(fake_embedder, tmp_path / "router")
    r.ensure_trained(examples())
    ctx = RouteContext(
        last_reply="Refunds take 5 days.",
        last_skill="qa",
        has_history=True,
        document_names=["refund-policy.md"],
    )
    intent = r.route("summarize that in two sentences", ctx)
    assert (intent.skill, intent.referent_kind, intent.slots["length"]) == (
        "summarize",
        "last_reply",
        "sentences:2",
    )
    intent = r.route("translate it into German", ctx)
    assert intent.skill == "translate" and intent.slots["target_language"] == "de"
    intent = r.route("summarize the refund policy", ctx)
    assert intent.slots["document"] == "refund-policy.md"


def test_untrainable_examples_raise_router_error(tmp_path, fake_embedder):
    r = IntentRouter(fake_embedder, None)
    with pytest.raises(RouterError, match="at least two intents"):
        r.train([Example("a", "qa", "x"), Example("a", "qa", "y")])
    with pytest.raises(RouterError, match="mapped to two skills"):
        r.train([Example("a", "qa", "x"), Example("a", "smalltalk", "y"), Example("b", "qa", "z")])
    with pytest.raises(RouterError, match="no example"):
        r.train([])


def test_intent_names_become_head_examples_only_when_asked(tmp_path, fake_embedder):
    from assistant.router_head import name_examples

    assert name_examples(["opening_hours", "skill:summarize", "card-arrival", "42"]) == [
        ("card-arrival", "card arrival"),
        ("opening_hours", "opening hours"),
        ("skill:summarize", "summarize"),
    ]
    ex = examples() + [
        Example("opening_hours", "qa", t)
        for t in ["when do you open", "what time do you close", "are you open on sunday"]
    ]
    plain = IntentRouter(fake_embedder, tmp_path / "router")
    plain.ensure_trained(ex)
    # no example says "opening" or "hours": the plain head cannot know what they mean
    assert plain.classify("opening hours")[0][0][0] != "opening_hours"

    named = IntentRouter(fake_embedder, tmp_path / "router", intent_names=True)
    assert named.ensure_trained(ex) is True  # a different router: not the stored plain one
    assert named.train_stats["intent_names"] == 4
    assert named.classify("opening hours")[0][0][0] == "opening_hours"
    # out of scope is still "far from every example": the names do not widen it
    assert len(named.example_vecs) == len(ex)
    assert (
        IntentRouter(fake_embedder, tmp_path / "router", intent_names=True).ensure_trained(ex)
        is False
    )
    assert IntentRouter(fake_embedder, tmp_path / "router").ensure_trained(ex) is True


def test_intent_names_setting_reaches_the_router(project_dir):
    from assistant.api import Assistant

    cfg = project_dir / "llmos.yaml"
    cfg.write_text(cfg.read_text() + "router:\n  intent_names: true\n")
    bot = Assistant.from_project(project_dir, knowledge=False, language_model=False)
    try:
        assert bot.router.intent_names is True
        # every intent of the scaffold has a worded name, so each adds one head example
        assert bot.router.train_stats["intent_names"] == len(bot.router.head.classes)
    finally:
        bot.close()
