"""Layout snapshots (pytest-textual-snapshot). Update with: pytest tests/tui --snapshot-update

The scripted assistant keeps them deterministic: fixed session ids, no timestamps on screen,
the cursor blink off, no toast notifications.
"""

from __future__ import annotations

from tests.tui.fakes import FakeAssistant
from tui.app import ChatApp
from tui.widgets.messages import BotMessage


async def _settle(pilot) -> None:
    for _ in range(200):
        if not pilot.app._replying:
            break
        await pilot.pause(0.05)
    await pilot.pause(0.1)
    pilot.app.clear_notifications()
    await pilot.pause()


def _app(tmp_path) -> ChatApp:
    app = ChatApp(assistant=FakeAssistant(tmp_path / "snap"))
    return app


async def _chat_with_sources(pilot) -> None:
    pilot.app.prompt.cursor_blink = False
    pilot.app.prompt.load_text("how long does delivery take?")
    await pilot.press("enter")
    await _settle(pilot)
    reply = pilot.app.query(BotMessage).last()
    reply.query_one(".sources").collapsed = False
    await pilot.pause(0.1)
    pilot.app.chat_log.scroll_end(animate=False)
    await pilot.pause(0.1)


def test_snapshot_chat_with_sources(snap_compare, tmp_path):
    assert snap_compare(_app(tmp_path), terminal_size=(110, 44), run_before=_chat_with_sources)


def test_snapshot_sidebar(snap_compare, tmp_path):
    async def run_before(pilot) -> None:
        pilot.app.prompt.cursor_blink = False
        for text in ("hello there", "how about delivery?"):
            pilot.app.prompt.load_text(text)
            await pilot.press("enter")
            await _settle(pilot)
        await pilot.app.run_slash_command("/session new Second chat")
        await _settle(pilot)

    assert snap_compare(_app(tmp_path), terminal_size=(110, 30), run_before=run_before)


def test_snapshot_help(snap_compare, tmp_path):
    async def run_before(pilot) -> None:
        pilot.app.prompt.cursor_blink = False
        await pilot.press("f1")
        await _settle(pilot)
        pilot.app.chat_log.scroll_home(animate=False)
        await pilot.pause(0.1)

    assert snap_compare(_app(tmp_path), terminal_size=(110, 40), run_before=run_before)


def test_snapshot_narrow_80x24(snap_compare, tmp_path):
    assert snap_compare(_app(tmp_path), terminal_size=(80, 24), run_before=_chat_with_sources)
