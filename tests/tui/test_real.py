"""The chat app over the REAL assistant: router, dialogue manager, SQLite sessions, MiniLM."""

from __future__ import annotations

import pytest

from tests.tui.conftest import wait_for
from tui.app import ChatApp
from tui.widgets.jobs import JobPanel
from tui.widgets.messages import BotMessage, UserMessage

pytestmark = pytest.mark.anyio


def replies(app) -> list[BotMessage]:
    return list(app.query(BotMessage))


async def send(pilot, text: str) -> None:
    pilot.app.prompt.load_text(text)
    await pilot.press("enter")


async def test_real_reply_streams_and_sessions_persist(real_bot):
    app = ChatApp(assistant=real_bot)
    async with app.run_test(size=(110, 36)) as pilot:
        await pilot.press(*"hello", "enter")
        await wait_for(pilot, lambda: replies(app) and not app._replying, timeout=60)
        reply = replies(app)[-1]
        (turn,) = real_bot.transcript(app.session_id)
        assert reply.text == turn.reply_text and reply.text.strip()
        badge = str(reply.query_one(".badge").render())
        assert badge.startswith(f"{turn.skill} · ") and badge.endswith("%")
        first = app.session_id

        await send(pilot, "/session new")
        await send(pilot, "thank you")
        await wait_for(pilot, lambda: replies(app) and not app._replying, timeout=60)
        assert app.session_id != first

        await send(pilot, f"/session switch {first}")
        await wait_for(pilot, lambda: [m.text for m in app.query(UserMessage)] == ["hello"])
        assert replies(app)[0].text == turn.reply_text
        stored = {s.id: s.turns for s in real_bot.store.list_sessions()}
        assert len(stored) == 2 and set(stored.values()) == {1}
        await wait_for(pilot, lambda: app.session_id == first)


async def test_real_input_error_is_a_notification(real_bot):
    app = ChatApp(assistant=real_bot)
    async with app.run_test(size=(110, 36)) as pilot:
        await send(pilot, "x" * 100_000)
        await wait_for(pilot, lambda: replies(app) and not app._replying, timeout=30)
        errors = [n.message for n in app._notifications if n.severity == "error"]
        assert errors and "\n" not in errors[0]
        assert replies(app)[-1].has_class("error")


async def test_real_ingest_with_progress(tmp_path, embedder, llmos_home):
    """A real KnowledgeBase ingests a folder in a worker; the panel shows per-file progress."""
    from assistant.api import Assistant
    from assistant.scaffold import scaffold

    root = scaffold(tmp_path / "kb")
    bot = Assistant.from_project(
        root, embedder=embedder, knowledge=True, language_model=False, entry_points=False
    )
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"note{i}.md").write_text(
            f"# Note {i}\n\nThe Lumo kettle model {i} boils water in {i + 2} minutes.\n",
            encoding="utf-8",
        )
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 not really a pdf")
    seen: list[tuple[int, int]] = []
    advance = JobPanel.advance

    def recording_advance(panel, done, total, info):
        seen.append((done, total))
        advance(panel, done, total, info)

    try:
        app = ChatApp(assistant=bot)
        async with app.run_test(size=(110, 36)) as pilot:
            JobPanel.advance = recording_advance
            before = bot.knowledge.stats()["documents"]
            await send(pilot, f"/ingest {docs}")
            await wait_for(pilot, lambda: app._notifications, timeout=120)
            await wait_for(pilot, lambda: not app.query(JobPanel))
            msgs = [(n.severity, n.message) for n in app._notifications]
            assert any(m.startswith("ingested: 6 added") for _, m in msgs), msgs
            assert bot.knowledge.stats()["documents"] == before + 6
            assert seen and seen[-1] == (7, 7)  # the last update always reaches the panel
            assert "skipped (broken.pdf" in next(m for _, m in msgs if m.startswith("ingested"))
    finally:
        JobPanel.advance = advance
        bot.close()
