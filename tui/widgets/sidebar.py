"""The sidebar: stored sessions, knowledge statistics and the active models."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Label, ListItem, ListView, Static


class SessionItem(ListItem):
    def __init__(self, session_id: str, title: str, turns: int, current: bool) -> None:
        name = title or session_id
        mark = "▸ " if current else "  "
        super().__init__(Label(f"{mark}{name[:20]} ({turns})", markup=False))
        self.session_id = session_id


class Sidebar(VerticalScroll):
    """Left column; hidden with Ctrl+B."""

    class SessionChosen(Message):
        def __init__(self, session_id: str) -> None:
            super().__init__()
            self.session_id = session_id

    def compose(self) -> ComposeResult:
        yield Label("Sessions", classes="sidebar-title")
        yield ListView(id="session-list")
        yield Label("Knowledge", classes="sidebar-title")
        yield Static("—", id="knowledge-stats", markup=False)
        yield Label("Models", classes="sidebar-title")
        yield Static("—", id="model-info", markup=False)

    async def set_sessions(self, sessions: list[Any], current: str | None) -> None:
        lv = self.query_one("#session-list", ListView)
        await lv.clear()
        items = [SessionItem(s.id, s.title, s.turns, s.id == current) for s in sessions]
        await lv.extend(items)
        for i, s in enumerate(sessions):
            if s.id == current:
                lv.index = i

    def set_knowledge(self, stats: dict[str, int] | None) -> None:
        text = "not loaded"
        if stats is not None:
            keys = ("documents", "chunks", "faq", "entities", "facts")
            text = "\n".join(f"{k:10} {stats.get(k, 0):>6}" for k in keys if k in stats)
        self.query_one("#knowledge-stats", Static).update(text)

    def set_models(self, lines: list[str]) -> None:
        self.query_one("#model-info", Static).update("\n".join(lines) or "—")

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        event.stop()
        item = event.item
        if isinstance(item, SessionItem):
            self.post_message(self.SessionChosen(item.session_id))
