"""Behaviour of the chat app through Textual's Pilot, with the scripted assistant."""

from __future__ import annotations

import threading

import pytest
from textual.widgets import Markdown

from tests.tui.conftest import wait_for
from tests.tui.fakes import FakeAssistant
from tui.app import ChatApp
from tui.widgets.jobs import JobPanel
from tui.widgets.messages import BotMessage, UserMessage
from tui.widgets.sidebar import SessionItem, Sidebar

SIZE = (110, 36)
pytestmark = pytest.mark.anyio


async def send(pilot, text: str) -> None:
    pilot.app.prompt.load_text(text)
    await pilot.press("enter")


def replies(app) -> list[BotMessage]:
    return list(app.query(BotMessage))


def notes(app) -> list[tuple[str, str]]:
    return [(n.severity, n.message) for n in app._notifications]


async def test_streamed_reply_has_badge_and_sources(fake_bot):
    app = ChatApp(assistant=fake_bot)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*"how long does delivery take?", "enter")
        await wait_for(pilot, lambda: not app._replying and replies(app))
        reply = replies(app)[-1]
        assert "3-5 working days" in reply.text
        assert str(reply.query_one(".badge").render()) == "qa · 87%"
        sources = reply.query_one(".sources")
        assert sources.title == "Sources (2)" and sources.collapsed
        labels = str(sources.query_one(".source-list").render())
        assert "shipping-and-delivery.md, chars 120-340" in labels
        assert "Lumo kettle made_by Juniper Home" in labels
        # the stored turn is what the UI showed
        (turn,) = fake_bot.transcript(app.session_id)
        assert turn.reply_text == reply.text


async def test_history_multiline_and_copy(fake_bot):
    app = ChatApp(assistant=fake_bot)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*"first", "enter")
        await wait_for(pilot, lambda: not app._replying and len(replies(app)) == 1)
        await pilot.press(*"line one", "ctrl+j", *"line two")
        assert app.prompt.text == "line one\nline two"
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app._replying and len(replies(app)) == 2)
        assert replies(app)[-1].text == "You said: line one\nline two"
        await pilot.press("up")
        assert app.prompt.text == "line one\nline two"
        await pilot.press("up", "up")  # cursor to the first line, then older history
        assert app.prompt.text == "first"
        await pilot.press("down", "down")
        assert app.prompt.text == ""
        await pilot.press("ctrl+o")
        assert app.clipboard == "You said: line one\nline two"


async def test_esc_cancels_a_running_reply_and_nothing_is_stored(fake_bot):
    fake_bot.hold = True
    app = ChatApp(assistant=fake_bot)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "tell me about delivery")
        await wait_for(pilot, fake_bot.started.is_set)
        await pilot.press("escape")
        fake_bot.release.set()
        await wait_for(pilot, lambda: not app._replying)
        assert replies(app)[-1].has_class("cancelled")
        assert fake_bot.transcript(app.session_id) == []
        assert any("cancelled" in m for _, m in notes(app))


async def test_skill_error_becomes_a_notification(fake_bot):
    app = ChatApp(assistant=fake_bot)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "boom")
        await wait_for(pilot, lambda: not app._replying and replies(app))
        assert ("error", "the message could not be understood (boom)") in notes(app)
        assert replies(app)[-1].has_class("error")
        await send(pilot, "/nope")
        assert ("error", "unknown command /nope; try /help") in notes(app)


async def test_messages_typed_while_loading_are_queued(tmp_path):
    gate = threading.Event()
    bot = FakeAssistant(tmp_path / "b")

    def loader():
        gate.wait(20)
        return bot

    app = ChatApp(loader=loader)
    async with app.run_test(size=SIZE) as pilot:
        status = app.query_one("#status")
        assert "loading models" in str(status.render())
        await send(pilot, "are you there?")
        user = app.query_one(UserMessage)
        assert user.has_class("queued") and not replies(app)
        gate.set()
        await wait_for(pilot, lambda: app.bot is not None and not app._replying and replies(app))
        assert replies(app)[-1].text == "You said: are you there?"
        assert not user.has_class("queued")
        assert "ready" in str(status.render())
    bot.close()


async def test_loader_failure_is_a_notification(tmp_path):
    from assistant.errors import ConfigError

    def loader():
        raise ConfigError("llmos.yaml line 3: router.confidence_threshold: invalid")

    app = ChatApp(loader=loader)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: notes(app))
        assert notes(app)[0] == ("error", "llmos.yaml line 3: router.confidence_threshold: invalid")


async def test_session_commands_switch_rename_export(fake_bot):
    app = ChatApp(assistant=fake_bot)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hello one")
        await wait_for(pilot, lambda: not app._replying and replies(app))
        first = app.session_id
        await send(pilot, "/session rename Delivery chat")
        assert fake_bot.store.get(first).title == "Delivery chat"
        await send(pilot, "/session new")
        second = app.session_id
        assert second != first and not replies(app)
        await send(pilot, "hello two")
        await wait_for(pilot, lambda: not app._replying and replies(app))
        await send(pilot, f"/session switch {first}")
        assert app.session_id == first
        assert [m.text for m in app.query(UserMessage)] == ["hello one"]
        assert replies(app)[0].text == "You said: hello one"
        await send(pilot, "/session list")
        table = app.query(".help-view").last()
        assert isinstance(table, Markdown) and first in table.source and second in table.source
        await send(pilot, "my card is 4111 1111 1111 1111, mail jo.canary@example.com")
        await wait_for(pilot, lambda: not app._replying and len(replies(app)) == 2)
        await send(pilot, "/session export")
        exported = list((fake_bot.project.state / "exports").glob("*.md"))
        text = exported[0].read_text()
        assert len(exported) == 1 and "hello one" in text
        # exports are redacted: the card number and address never reach the file
        assert "[card]" in text and "[email]" in text
        assert "4111" not in text and "jo.canary" not in text
        assert any(str(exported[0]) in m for _, m in notes(app))
        # the sidebar lists both sessions; selecting one switches
        items = list(app.query(SessionItem))
        assert {i.session_id for i in items} == {first, second}
        app.query_one(Sidebar).post_message(Sidebar.SessionChosen(second))
        await wait_for(pilot, lambda: [m.text for m in app.query(UserMessage)] == ["hello two"])
        assert app.session_id == second
        await wait_for(pilot, lambda: app.focused is app.prompt)


async def test_help_skills_clear_and_tab_completion(fake_bot):
    app = ChatApp(assistant=fake_bot)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f1")
        assert "/session new|list" in app.query(".help-view").last().source
        await send(pilot, "/skills")
        assert "Answers from documents." in app.query(".help-view").last().source
        await send(pilot, "/clear")
        assert not app.chat_log.children
        await pilot.press("slash", "t", "r", "tab")
        assert app.prompt.text == "/train "


async def test_ingest_shows_progress_and_cancels(fake_bot, tmp_path):
    fake_bot.ingest_steps, fake_bot.ingest_delay = 4, 0.3
    app = ChatApp(assistant=fake_bot)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, f"/ingest {tmp_path}")
        await wait_for(pilot, lambda: app.query(JobPanel))
        panel = app.query_one(JobPanel)
        await wait_for(pilot, lambda: panel.done >= 1)
        await wait_for(pilot, lambda: not app.query(JobPanel))
        assert panel.total == 4
        assert any(m.startswith("ingested: 1 added") for _, m in notes(app))
        assert "documents" in str(app.query_one("#knowledge-stats").render())
        # a second, slow ingest is cancelled with Esc; typing still works meanwhile
        fake_bot.ingest_steps, fake_bot.ingest_delay = 200, 0.05
        await send(pilot, f"/ingest {tmp_path}")
        await wait_for(pilot, lambda: app.query(JobPanel) and app.query_one(JobPanel).done >= 1)
        await pilot.press(*"abc")
        assert app.prompt.text == "abc"
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.query(JobPanel))
        assert ("warning", "Ingesting: cancelled") in notes(app)
        await send(pilot, "/ingest /no/such/path")
        await wait_for(pilot, lambda: not app.query(JobPanel))
        assert ("error", "no such file or folder: /no/such/path") in notes(app)


async def test_train_commands(fake_bot):
    app = ChatApp(assistant=fake_bot)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "/train router")
        await wait_for(pilot, lambda: not app.query(JobPanel))
        assert any("router trained on 3 examples" in m for _, m in notes(app))
        await send(pilot, "/train lm")
        await wait_for(pilot, lambda: not app.query(JobPanel))
        assert any(
            sev == "error" and m.startswith("no training text: set lm.corpus")
            for sev, m in notes(app)
        )
        await send(pilot, "/train translator")
        await wait_for(pilot, lambda: not app.query(JobPanel))
        assert any(
            sev == "error" and m.startswith("usage: /train translator PAIRS.tsv SRC TGT")
            for sev, m in notes(app)
        )


async def test_keys_from_config_theme_and_sidebar(fake_bot):
    app = ChatApp(assistant=fake_bot, keys={"toggle_sidebar": "ctrl+s", "bogus": "x"})
    async with app.run_test(size=SIZE) as pilot:
        sidebar = app.query_one(Sidebar)
        assert not sidebar.has_class("-hidden")
        await pilot.press("ctrl+s")
        assert sidebar.has_class("-hidden")
        assert any("unknown key binding action(s) bogus" in m for _, m in notes(app))
        theme = app.theme
        await pilot.press("ctrl+t")
        assert app.theme != theme
        assert ("ctrl+s", "Sidebar") in app.key_hints()


async def test_command_palette_offers_slash_actions(fake_bot):
    app = ChatApp(assistant=fake_bot)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await pilot.press(*"new session")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.session_id is not None)
        assert app.session_id == "s1"


async def test_narrow_terminal_hides_sidebar(fake_bot):
    app = ChatApp(assistant=fake_bot)
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.query_one(Sidebar).has_class("-hidden")
        await pilot.press("ctrl+b")
        assert not app.query_one(Sidebar).has_class("-hidden")


async def test_switching_session_while_streaming_does_not_crash(fake_bot):
    fake_bot.hold = True
    app = ChatApp(assistant=fake_bot)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "first session message")
        await wait_for(pilot, fake_bot.started.is_set)
        first = app.session_id
        await send(pilot, "/session new")
        fake_bot.release.set()
        await wait_for(pilot, lambda: not app._replying)
        await send(pilot, "/clear")
        assert app.session_id != first and not replies(app)
        assert fake_bot.transcript(first) == []  # cancelled by the switch: nothing stored
        fake_bot.hold = False
        await send(pilot, "still works")
        await wait_for(pilot, lambda: replies(app) and not app._replying)
        assert replies(app)[-1].text == "You said: still works"
