"""The dialogue manager through the real demo assistant: MiniLM router, SQLite sessions,
the demo's knowledge. Policy corner cases use a scripted router to stay deterministic."""

import pytest

from assistant.dialogue import DialogueManager, DialoguePolicy
from assistant.errors import InputError, TicketStateError, UnknownSessionError, UnknownTicketError
from assistant.router import Intent
from assistant.sessions import SessionStore
from skills import Reply, Services, SkillRegistry


def test_every_reply_names_skill_and_confidence(demo_bot):
    sid = demo_bot.new_session()
    for text in ["hello", "how long does delivery take?", "book me a flight to the moon"]:
        r = demo_bot.chat(text, sid)
        assert r.skill, text
        assert 0.0 <= r.confidence <= 1.0
        assert r.data["session_id"] == sid
    assert [t.n for t in demo_bot.transcript(sid)] == [1, 2, 3]


def test_greeting_and_out_of_scope(demo_bot):
    assert demo_bot.chat("hi there").skill == "smalltalk"
    r = demo_bot.chat("book me a flight to Paris")
    assert r.skill == "fallback"
    assert "can't help" in r.text


def test_handoff_opens_a_ticket(demo_bot):
    sid = demo_bot.new_session()
    r = demo_bot.chat("I want to talk to a person", sid)
    assert r.skill == "handoff"
    ticket = r.data["ticket"]
    assert any(t.id == ticket and t.session_id == sid for t in demo_bot.store.tickets("open"))


def test_translate_asks_for_missing_language_then_fills_it(demo_bot):
    sid = demo_bot.new_session()
    r1 = demo_bot.chat("translate 'thank you for your order'", sid)
    assert r1.data.get("needs") == "target_language"
    assert "language" in r1.text.lower()
    r2 = demo_bot.chat("German", sid)
    assert r2.skill == "translate"
    assert r2.data["target_language"] == "de"
    assert r2.data["method"] == "translation memory"
    r3 = demo_bot.chat("and in French?", sid)
    assert r3.skill == "translate" and r3.data["target_language"] == "fr"


def test_summarize_that_uses_last_reply(demo_bot):
    sid = demo_bot.new_session()
    first = demo_bot.chat("what is your returns policy?", sid)
    r = demo_bot.chat("summarize that in one sentence", sid)
    assert r.skill == "summarize"
    assert r.data["of"] == "last reply"
    assert r.data["sentences"] == 1
    assert r.text in first.text or r.text.split()[0] in first.text


def test_summarize_conversation(demo_bot):
    sid = demo_bot.new_session()
    demo_bot.chat("hello", sid)
    demo_bot.chat("how long does delivery take?", sid)
    r = demo_bot.chat("summarize our conversation", sid)
    assert r.skill == "summarize" and r.data["of"] == "conversation"


def test_idempotent_retry_is_stored_once(demo_bot):
    sid = demo_bot.new_session()
    a = demo_bot.chat("hello", sid, idempotency_key="retry-1")
    b = demo_bot.chat("hello", sid, idempotency_key="retry-1")
    assert a.data["turn"] == b.data["turn"] == 1
    assert b.data.get("replayed") is True
    assert len(demo_bot.transcript(sid)) == 1


@pytest.mark.parametrize(
    ("message", "match"),
    [
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("x" * 1_000_000, "too long"),
        ("hello \udcff there", "lone surrogate"),
        (b"\xff\xfe bad bytes", "not valid UTF-8"),
        ("nul\x00byte", "NUL"),
    ],
)
def test_bad_input_gets_clear_error_and_state_is_intact(demo_bot, message, match):
    sid = demo_bot.new_session()
    demo_bot.chat("hello", sid)
    with pytest.raises(InputError, match=match):
        demo_bot.chat(message, sid)
    assert len(demo_bot.transcript(sid)) == 1
    assert demo_bot.store.integrity_check() == "ok"


def test_unknown_session_is_an_error_not_a_new_session(demo_bot):
    before = len(demo_bot.store.list_sessions(limit=10_000))
    with pytest.raises(UnknownSessionError, match="unknown session id: does-not-exist"):
        demo_bot.chat("hello", "does-not-exist")
    assert len(demo_bot.store.list_sessions(limit=10_000)) == before


def test_streaming_yields_chunks_then_reply(demo_bot):
    items = list(demo_bot.stream("hello"))
    assert isinstance(items[-1], Reply)
    assert all(isinstance(i, str) for i in items[:-1])
    assert "".join(items[:-1]) == items[-1].text


def test_sessions_survive_restart(demo_bot, embedder):
    from assistant import Assistant

    sid = demo_bot.new_session()
    demo_bot.chat("hello", sid)
    bot2 = Assistant.demo(
        embedder=embedder, entry_points=False, language_model=False, knowledge=False
    )
    try:
        assert [t.user_text for t in bot2.transcript(sid)] == ["hello"]
        assert bot2.chat("thanks", sid).data["turn"] == 2
    finally:
        bot2.close()


# -- policy with a scripted router -------------------------------------------------------
class ScriptedRouter:
    def __init__(self, intents):
        self.intents = list(intents)

    def route(self, text, ctx):
        return self.intents.pop(0)


@pytest.fixture
def policy_dm(tmp_path):
    store = SessionStore(tmp_path / "s.db")
    reg = SkillRegistry.discover(entry_points_enabled=False)

    def make(intents, **policy):
        dm = DialogueManager(
            ScriptedRouter(intents),
            reg,
            store,
            Services(
                handoff=lambda sid, why: store.open_ticket(sid, why).id,
                capabilities=["answer questions"],
            ),
            DialoguePolicy(**policy),
        )
        return dm, store.create().id

    yield make
    store.close()


def test_low_confidence_asks_to_clarify_between_two_best(policy_dm):
    dm, sid = policy_dm(
        [Intent("qa", "qa", 0.35, alternatives=[("summarize", 0.30)])],
        confidence_threshold=0.45,
    )
    r = dm.turn(sid, "the refund thing")
    assert r.skill == "clarify"
    assert r.data["options"] == ["qa", "summarize"]
    assert "qa" in r.text and "summarize" in r.text


def test_clarification_answer_runs_the_chosen_skill(policy_dm):
    dm, sid = policy_dm(
        [Intent("qa", "qa", 0.35, alternatives=[("smalltalk", 0.33)])], confidence_threshold=0.45
    )
    dm.turn(sid, "hello?")
    r = dm.turn(sid, "2")
    assert r.skill == "smalltalk"


def test_low_confidence_twice_hands_over_to_a_person(policy_dm):
    low = Intent("qa", "qa", 0.2, alternatives=[("summarize", 0.01)])
    dm, sid = policy_dm(
        [low, Intent("qa", "qa", 0.2, alternatives=[("summarize", 0.01)])],
        confidence_threshold=0.45,
        low_confidence_handoff=2,
    )
    r1 = dm.turn(sid, "blorp")
    assert r1.skill == "fallback"
    r2 = dm.turn(sid, "zzzk")
    assert r2.skill == "handoff" and "person" in r2.text
    assert r2.data["handoff"]["status"] == "open"
    assert r2.data["handoff"]["reason"].startswith("low confidence")
    [ticket] = dm.store.tickets("open")
    assert ticket.session_id == sid and ticket.reason.startswith("low confidence")


def test_negative_sentiment_twice_hands_over(tmp_path):
    store = SessionStore(tmp_path / "s.db")
    reg = SkillRegistry.discover(entry_points_enabled=False)
    ok = Intent("smalltalk", "smalltalk", 0.9)
    dm = DialogueManager(
        ScriptedRouter([ok, ok, ok, ok]),
        reg,
        store,
        Services(handoff=lambda sid, why: store.open_ticket(sid, why).id),
        DialoguePolicy(negative_sentiment_handoff=2),
        is_negative=lambda text: "awful" in text,
    )
    sid = store.create().id
    try:
        assert dm.turn(sid, "this is awful").skill == "smalltalk"
        assert dm.turn(sid, "hello").skill == "smalltalk"  # the streak resets
        assert dm.turn(sid, "awful service").skill == "smalltalk"
        r = dm.turn(sid, "truly awful")
        assert r.skill == "handoff"
        assert store.tickets("open")[0].reason == "repeated negative sentiment"
    finally:
        store.close()


def test_handoff_desk_round_trip(demo_bot):
    """Customer asks for a person, an agent claims, talks, closes; the bot takes over again."""
    sid = demo_bot.new_session()
    demo_bot.chat("how long does delivery take?", sid)
    r = demo_bot.chat("I want to talk to a person", sid)
    ticket_id = r.data["ticket"]
    assert r.data["handoff"]["status"] == "open"
    # while nobody has claimed it, the bot keeps answering
    assert demo_bot.chat("do you ship to Canada?", sid).skill != "agent"
    assert [t.id for t in demo_bot.tickets("open")].count(ticket_id) == 1

    ticket = demo_bot.claim_ticket(ticket_id, "Alex")
    assert ticket.status == "claimed" and ticket.agent == "Alex"
    assert demo_bot.handoff_state(sid)["status"] == "claimed"
    with pytest.raises(TicketStateError):
        demo_bot.claim_ticket(ticket_id, "Sam")

    r = demo_bot.chat("my kettle arrived broken", sid)
    assert r.skill == "agent" and r.text == ""  # delivered to Alex, the bot stays quiet
    agent_turn = demo_bot.agent_reply(ticket_id, "Alex", "Sorry! I'll send a new one today.")
    with pytest.raises(TicketStateError):
        demo_bot.agent_reply(ticket_id, "Sam", "hi")

    turns = demo_bot.transcript(sid)
    kinds = [t.kind for t in turns]
    assert kinds[-3:] == ["system", "customer", "agent"]
    assert turns[-1].n == agent_turn.n and turns[-1].reply_text.startswith("Sorry!")
    assert [t.n for t in turns] == list(range(1, len(turns) + 1))

    demo_bot.close_ticket(ticket_id, "Alex")
    assert demo_bot.ticket(ticket_id).status == "closed"
    assert demo_bot.handoff_state(sid) is None
    assert demo_bot.chat("how long does delivery take?", sid).skill == "qa"
    with pytest.raises(TicketStateError):
        demo_bot.agent_reply(ticket_id, "Alex", "one more thing")
    with pytest.raises(UnknownTicketError):
        demo_bot.ticket(999_999)

    stats = demo_bot.stats()
    assert stats["handoffs"] >= 1 and stats["turns"] >= 4 and stats["series"]


def test_customer_can_go_back_to_the_bot(demo_bot):
    sid = demo_bot.new_session()
    ticket_id = demo_bot.chat("can I speak to a human", sid).data["ticket"]
    demo_bot.claim_ticket(ticket_id, "Alex")
    r = demo_bot.chat("never mind, back to the bot please", sid)
    assert r.skill == "handoff" and "back with the assistant" in r.text
    assert demo_bot.ticket(ticket_id).status == "closed"
    assert demo_bot.handoff_state(sid) is None
    assert demo_bot.chat("how long does delivery take?", sid).skill == "qa"


def test_skill_crash_becomes_polite_reply(policy_dm, tmp_path):
    from skills import Skill

    class Boom(Skill):
        name = "boom"
        description = "Always fails."

        def handle(self, request, services):
            raise RuntimeError("kaput")
            yield  # pragma: no cover

    dm, sid = policy_dm([Intent("boom", "boom", 0.99)])
    dm.registry.add(Boom())
    r = dm.turn(sid, "do it")
    assert r.skill == "boom" and r.confidence == 0.0
    assert "something went wrong" in r.text
    assert dm.store.turns(sid)[0].reply_text == r.text


def test_before_skill_hook_can_answer_instead_of_the_skill(policy_dm):
    """The hook the server's circuit breaker uses: it sees each skill's name before the skill
    runs, and a Reply it returns is stored as the turn's answer without running the skill."""
    from skills import Skill

    ran: list[str] = []

    class Counted(Skill):
        name = "counted"
        description = "Counts its runs."

        def handle(self, request, services):
            ran.append(request.text)
            yield Reply(text="ran", skill="counted", confidence=1.0)

    dm, sid = policy_dm([Intent("counted", "counted", 0.99), Intent("counted", "counted", 0.99)])
    dm.registry.add(Counted())
    seen: list[str] = []

    def gate(name: str) -> Reply | None:
        seen.append(name)
        return Reply(text="skipped", skill="fallback", confidence=0.0) if len(seen) > 1 else None

    dm.before_skill = gate
    assert dm.turn(sid, "first").text == "ran"
    second = dm.turn(sid, "second")
    assert (second.text, second.skill) == ("skipped", "fallback")
    assert ran == ["first"] and seen == ["counted", "counted"]
    assert [t.reply_text for t in dm.store.turns(sid)] == ["ran", "skipped"]


def test_first_run_trains_the_demo_language_model_and_generate_streams(demo_bot):
    """The path `make chat` takes on a fresh machine, with a tiny time budget."""
    if demo_bot.services.generator is None:
        assert demo_bot.needs_language_model()
        seen = []
        demo_bot.train_language_model(time_budget_s=3, on_progress=lambda d, t, i: seen.append(d))
        assert seen
    assert demo_bot.services.generator is not None
    assert not demo_bot.needs_language_model()
    items = list(demo_bot.stream("write a short apology to a customer whose parcel is late"))
    final = items[-1]
    assert isinstance(final, Reply) and final.skill == "generate"
    assert "".join(i for i in items[:-1] if isinstance(i, str)).strip() == final.text.strip()
    assert final.text.strip()


def test_pii_never_reaches_logs_exports_or_tickets(demo_bot):
    """Canaries sent through chat and handoff are masked in exports, tickets and log records."""
    import io
    import logging

    from assistant.pii import install_logging_filter

    canaries = ["jo.canary@example.com", "4111 1111 1111 1111", "+44 20 7946 0958"]
    sid = demo_bot.new_session()
    demo_bot.chat(f"my email is {canaries[0]} and my card {canaries[1]}", sid)
    r = demo_bot.chat(f"I want to talk to a person, call me on {canaries[2]}", sid)
    view = demo_bot.ticket_view(r.data["ticket"])
    exported = [t.to_dict() for t in demo_bot.redacted_transcript(sid)]
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    logging.getLogger().addHandler(handler)
    try:
        install_logging_filter(demo_bot.config.pii)  # what Assistant() does at start-up
        logging.getLogger("assistant.test").warning("customer said %s", f"mail {canaries[0]}")
    finally:
        logging.getLogger().removeHandler(handler)
    assert "customer said mail [email]" in buf.getvalue()
    blob = repr(view) + repr(exported) + repr(demo_bot.tickets()) + buf.getvalue()
    for canary in canaries:
        assert canary not in blob, canary
    assert "[email]" in blob and "[card]" in blob and "[phone]" in blob
    # the conversation itself keeps what the customer wrote (stated in the README)
    assert canaries[0] in demo_bot.transcript(sid)[0].user_text


def test_explicit_commands_win_over_the_pasted_text(demo_bot):
    """Pasted foreign text must not outvote "summarize this:" in the classifier."""
    sid = demo_bot.new_session()
    r = demo_bot.chat(
        "summarize this: Der Wasserkocher kam gestern an. Leider ist er kaputt. "
        "Ich möchte mein Geld zurück, bitte.",
        sid,
    )
    assert r.skill == "summarize" and "English" in r.text
    r = demo_bot.chat("translate to German: thank you for your order", sid)
    assert r.skill == "translate" and r.text == "Vielen Dank für Ihre Bestellung."
