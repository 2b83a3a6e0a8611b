"""Chat messages: the user's text, and the assistant's streamed Markdown reply.

A reply starts empty and grows as chunks arrive (through Textual's ``MarkdownStream``, which
merges fragments when they come faster than the widget can render, so there is no flicker);
when the final reply lands it gets a badge (skill and confidence) and a collapsible list of
its sources.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Collapsible, Markdown, Static
from textual.widgets.markdown import MarkdownStream


class UserMessage(Static, can_focus=True):
    """What the user typed (plain text: no markup interpretation of user input)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("c", "copy", "Copy message")]

    def __init__(self, text: str, queued: bool = False) -> None:
        super().__init__(text, markup=False, classes="user-message")
        self.text = text
        self.set_class(queued, "queued")
        self.border_title = "you (queued)" if queued else "you"

    def mark_sent(self) -> None:
        self.remove_class("queued")
        self.border_title = "you"

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.text)
        self.app.notify("Message copied to the clipboard", timeout=2)


class BotMessage(Vertical, can_focus=True):
    """One assistant reply: Markdown body, a skill/confidence badge, collapsible sources."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("c", "copy", "Copy message")]

    def __init__(
        self,
        text: str = "",
        *,
        skill: str | None = None,
        confidence: float | None = None,
        sources: list[str] | None = None,
        pending: bool = False,
    ) -> None:
        super().__init__(classes="bot-message")
        self.text = text
        self._initial = (skill, confidence, sources or [])
        self._stream: MarkdownStream | None = None
        self.set_class(pending, "pending")

    def compose(self) -> ComposeResult:
        yield Markdown(self.text or ("…" if self.has_class("pending") else ""), classes="body")
        yield Static("", classes="badge", markup=False)

    def on_mount(self) -> None:
        skill, confidence, sources = self._initial
        if skill is not None:
            self._show_meta(skill, confidence or 0.0, sources)

    @property
    def body(self) -> Markdown:
        return self.query_one(".body", Markdown)

    async def write(self, chunk: str) -> None:
        """Append a streamed chunk (called on the UI thread)."""
        if not self.is_attached:
            return
        if self._stream is None:
            await self.body.update("")
            self._stream = Markdown.get_stream(self.body)
        self.text += chunk
        await self._stream.write(chunk)

    async def _stop_stream(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.stop()

    async def finish(self, text: str, skill: str, confidence: float, sources: list[str]) -> None:
        await self._stop_stream()
        if text != self.text:  # the dialogue may rewrite the text after streaming
            self.text = text
            await self.body.update(text)
        self.remove_class("pending")
        self._show_meta(skill, confidence, sources)

    async def fail(self, message: str, label: str = "error") -> None:
        await self._stop_stream()
        self.remove_class("pending")
        self.add_class(label)
        if not self.text:
            await self.body.update(f"*({label}: {message})*" if message else f"*({label})*")
        self.query_one(".badge", Static).update(label)

    def _show_meta(self, skill: str, confidence: float, sources: list[str]) -> None:
        self.query_one(".badge", Static).update(f"{skill} · {confidence:.0%}")
        if sources:
            lines = "\n".join(f"• {s}" for s in sources)
            self.mount(
                Collapsible(
                    Static(lines, markup=False, classes="source-list"),
                    title=f"Sources ({len(sources)})",
                    collapsed=True,
                    classes="sources",
                )
            )

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.text)
        self.app.notify("Reply copied to the clipboard", timeout=2)
