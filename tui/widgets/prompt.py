"""The message entry: multi-line, with history and slash-command completion.

Enter sends; Shift+Enter or Ctrl+J inserts a newline (many terminals send the same code for
Enter and Shift+Enter, Ctrl+J works everywhere). Up on the first line and Down on the last
line walk the history, so editing a multi-line draft still moves the cursor normally.
"""

from __future__ import annotations

from collections.abc import Callable

from textual import events
from textual.message import Message
from textual.widgets import TextArea

from tui.commands import complete

MAX_HISTORY = 500


class PromptArea(TextArea):
    """A TextArea that submits on Enter and remembers what was sent."""

    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(
        self,
        *,
        completions: Callable[[], dict[str, list[str]]] | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id, soft_wrap=True, show_line_numbers=False, tab_behavior="focus")
        self.sent_history: list[str] = []
        self._hist_pos: int | None = None  # index into history while browsing
        self._draft = ""
        self._completions = completions
        self._cycle: list[str] = []
        self._cycle_pos = 0

    async def _on_key(self, event: events.Key) -> None:
        key = event.key
        handled = True
        if key == "enter":
            self._submit()
        elif key in ("shift+enter", "ctrl+j"):
            self.insert("\n")
        elif key == "up" and self.cursor_at_first_line and self.sent_history:
            self._browse(-1)
        elif key == "down" and self.cursor_at_last_line and self._hist_pos is not None:
            self._browse(+1)
        elif key == "tab" and self.text.startswith("/") and "\n" not in self.text:
            self._complete()
        else:
            handled = False
        if handled:
            event.stop()
            event.prevent_default()
            return
        if key != "tab":
            self._cycle = []
        await super()._on_key(event)

    def _submit(self) -> None:
        text = self.text.strip()
        if not text:
            return
        if not self.sent_history or self.sent_history[-1] != text:
            self.sent_history.append(text)
            del self.sent_history[:-MAX_HISTORY]
        self._hist_pos = None
        self._cycle = []
        self.clear()
        self.post_message(self.Submitted(text))

    def _browse(self, step: int) -> None:
        if self._hist_pos is None:
            self._draft = self.text
            pos = len(self.sent_history) + step
        else:
            pos = self._hist_pos + step
        if pos < 0:
            return
        if pos >= len(self.sent_history):
            self._hist_pos = None
            self._replace_text(self._draft)
            return
        self._hist_pos = pos
        self._replace_text(self.sent_history[pos])

    def _replace_text(self, text: str) -> None:
        self.load_text(text)
        self.move_cursor(self.document.end)

    def _complete(self) -> None:
        """Tab completes a /command; repeated Tab cycles through the candidates."""
        if self._cycle and self.text in self._cycle:
            self._cycle_pos = (self._cycle_pos + 1) % len(self._cycle)
        else:
            extra = self._completions() if self._completions else {}
            self._cycle = complete(self.text, extra)
            self._cycle_pos = 0
            if not self._cycle:
                self.app.bell()
                return
            if len(self._cycle) > 1:
                self.app.notify(
                    "  ".join(c.strip() for c in self._cycle), title="completions", timeout=3
                )
        self._replace_text(self._cycle[self._cycle_pos])
