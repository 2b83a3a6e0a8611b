"""The ``llmos chat`` terminal UI (Textual).

    from tui.app import run
    run("path/to/bot")          # or None: current directory, else the demo bot

The first frame appears at once; the assistant (MiniLM, router, knowledge) loads in a thread
worker while a status line says so, and messages typed meanwhile wait in a queue. Replies
stream in a thread worker too; long jobs (ingest, training) run in their own worker with a
progress panel. Nothing heavy is imported at module level, so start-up stays fast.

For tests and benchmarks the app takes a prebuilt ``assistant=`` (real or fake) or a
``loader=`` callable that builds one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.widgets import Footer, Static

from tui import work as jobs
from tui.commands import CommandError, SlashCommandProvider, is_command
from tui.slash import SlashCommandsMixin
from tui.widgets.messages import BotMessage, UserMessage
from tui.widgets.prompt import PromptArea
from tui.widgets.sidebar import Sidebar
from tui.work import model_lines

LOG = logging.getLogger(__name__)

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def one_line(exc: BaseException) -> str:
    """An exception as one line for a notification (never a traceback)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if type(exc).__module__.split(".")[0] in {"assistant", "knowledge", "lm", "skills", "tui"}:
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ChatApp(SlashCommandsMixin, App[None]):
    """Chat with an llmos assistant: streaming Markdown replies, sessions, jobs."""

    CSS_PATH = "chat.tcss"
    TITLE = "llmos"
    COMMANDS: ClassVar[set[Any]] = App.COMMANDS | {SlashCommandProvider}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="cancel"),
        Binding("ctrl+b", "toggle_sidebar", "Sidebar", id="toggle_sidebar"),
        Binding("ctrl+n", "new_session", "New", id="new_session"),
        Binding("ctrl+o", "copy_last", "Copy", id="copy_last"),
        Binding("ctrl+t", "toggle_theme", "Theme", id="toggle_theme"),
        Binding("f1", "help", "Help", id="help"),
        Binding("ctrl+q", "quit", "Quit", id="quit", priority=True),
    ]

    def __init__(
        self,
        project: str | None = None,
        *,
        assistant: Any = None,
        loader: Callable[[], Any] | None = None,
        session_id: str | None = None,
        keys: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.project = project
        self.bot: Any = assistant
        self._loader = loader
        self.session_id: str | None = session_id
        self._keys = keys
        self._queue: deque[tuple[str, UserMessage]] = deque()
        self._replying = False
        self._reply_cancel: threading.Event | None = None
        self._job_cancel: threading.Event | None = None
        self._job_panel: Any = None
        self._load_started = time.monotonic()
        self._spin = 0
        self._status_timer: Any = None
        #: Timestamps for the latency benchmark: first mount, first reply chunk, echo.
        self.marks: dict[str, float] = {}

    # -- layout ------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Horizontal(id="body"):
            yield Sidebar(id="sidebar")
            with Vertical(id="main"):
                yield Static("", id="status", markup=False)
                yield VerticalScroll(id="chat")
                yield Vertical(id="jobs")
                yield PromptArea(id="prompt", completions=self._completion_choices)
        yield Footer()

    @property
    def chat_log(self) -> VerticalScroll:
        return self.query_one("#chat", VerticalScroll)

    @property
    def prompt(self) -> PromptArea:
        return self.query_one("#prompt", PromptArea)

    async def on_mount(self) -> None:
        self.marks["mounted"] = time.perf_counter()
        self.prompt.focus()
        if self.size.width < 100:
            self.query_one(Sidebar).add_class("-hidden")
        if self._keys:
            self.apply_keys(self._keys)
        if self.bot is not None:
            await self._assistant_ready(self.bot)
        else:
            self._set_status("loading models…", "loading")
            self._status_timer = self.set_interval(0.25, self._tick_status)
            self._load()

    # -- loading -----------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def _load(self) -> None:
        try:
            if self._loader is not None:
                bot = self._loader()
            else:
                from assistant.config import load_config
                from assistant.project import resolve_project

                cfg = load_config(resolve_project(self.project).config_file)
                if cfg.keys:
                    self._from_thread(self.apply_keys, dict(cfg.keys))
                from assistant.api import Assistant

                bot = Assistant.from_project(self.project)
        except Exception as exc:
            self._from_thread(self._load_failed, one_line(exc))
            return
        self._from_thread(self._assistant_ready, bot)

    def _from_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """call_from_thread that tolerates the app having exited meanwhile."""
        try:
            return self.call_from_thread(fn, *args)
        except RuntimeError:
            return None

    async def _assistant_ready(self, bot: Any) -> None:
        self.bot = bot
        self.marks["ready"] = time.perf_counter()
        if self._status_timer is not None:
            self._status_timer.stop()
        if self._keys is None and getattr(bot.config, "keys", None):
            self.apply_keys(dict(bot.config.keys))
        self._set_status("ready", "ready")
        if self.session_id is not None:
            await self.switch_session(self.session_id)
        else:
            greeting = getattr(bot.config, "greeting", "")
            if greeting and not self.chat_log.children:
                await self.chat_log.mount(Static(greeting, classes="greeting", markup=False))
        await self.refresh_sidebar()
        await self._pump()
        await self._first_run_training(bot)

    async def _first_run_training(self, bot: Any) -> None:
        """The demo trains its small language model on first start, while the chat is usable."""
        needs = getattr(bot, "needs_language_model", None)
        if not (callable(needs) and needs() and getattr(bot.project, "is_demo", False)):
            return
        try:
            await self.start_job(
                "Training the demo language model (first run only)", jobs.train_lm, "s", loss=True
            )
        except CommandError:
            return
        self.notify(
            "Training the demo's language model in the background (about 90 s); "
            "chat away meanwhile. Esc cancels.",
            title="first run",
        )

    def _load_failed(self, message: str) -> None:
        if self._status_timer is not None:
            self._status_timer.stop()
        self._set_status(f"could not load the assistant: {message}", "error")
        self.notify(message, title="could not load the assistant", severity="error", timeout=30)

    def _tick_status(self) -> None:
        self._spin = (self._spin + 1) % len(SPINNER)
        secs = time.monotonic() - self._load_started
        queued = f" · {len(self._queue)} queued" if self._queue else ""
        self._set_status(f"{SPINNER[self._spin]} loading models… {secs:.0f}s{queued}", "loading")

    def _set_status(self, text: str, state: str) -> None:
        try:
            status = self.query_one("#status", Static)
        except NoMatches:  # shutting down
            return
        name = getattr(getattr(self.bot, "config", None), "name", None) or "llmos"
        session = f" · session {self.session_id}" if self.session_id else ""
        status.update(f"{name} · {text}{session}")
        status.set_classes(state)

    def apply_keys(self, keys: dict[str, str]) -> None:
        """Rebind actions from the bot config (``keys: {toggle_sidebar: ctrl+s}``)."""
        known = {b.id for b in self._bindings_list() if b.id}
        bad = sorted(set(keys) - known)
        if bad:
            self.notify(
                f"unknown key binding action(s) {', '.join(bad)}; known: {', '.join(sorted(known))}",
                severity="warning",
            )
        self.update_keymap({k: v for k, v in keys.items() if k in known})

    def _bindings_list(self) -> list[Binding]:
        return [b for b in self.BINDINGS if isinstance(b, Binding)]

    # -- chatting ----------------------------------------------------------------------
    async def on_prompt_area_submitted(self, event: PromptArea.Submitted) -> None:
        event.stop()
        text = event.text
        if is_command(text):
            await self.run_slash_command(text)
            return
        view = UserMessage(text, queued=self.bot is None or self._replying)
        await self.chat_log.mount(view)
        self.marks.setdefault("first_echo", time.perf_counter())
        self.marks["last_echo"] = time.perf_counter()
        self.chat_log.scroll_end(animate=False)
        self._queue.append((text, view))
        await self._pump()

    async def _pump(self) -> None:
        """Answer the next queued message when the assistant is loaded and idle."""
        if self.bot is None or self._replying or not self._queue:
            return
        text, user_view = self._queue.popleft()
        user_view.mark_sent()
        try:
            if self.session_id is None:
                self.session_id = self.bot.new_session(title=text[:40])
                self._set_status("ready", "ready")
        except Exception as exc:
            self.notify(one_line(exc), title="session", severity="error")
            return
        self._replying = True  # before the first await: no second reply may start meanwhile
        self._reply_cancel = threading.Event()
        view = BotMessage(pending=True)
        await self.chat_log.mount(view)
        self.chat_log.scroll_end(animate=False)
        self._answer(text, self.session_id, view, self._reply_cancel)

    @work(thread=True, group="reply", exit_on_error=False)
    def _answer(
        self, text: str, session_id: str, view: BotMessage, cancel: threading.Event
    ) -> None:
        final: Any = None
        error: str | None = None
        try:
            stream = self.bot.stream(text, session_id)
            try:
                for item in stream:
                    if cancel.is_set():
                        break
                    if isinstance(item, str):
                        self.marks.setdefault("first_chunk", time.perf_counter())
                        self._from_thread(view.write, item)
                    else:
                        final = item
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()  # a cancelled turn is not stored (the generator unwinds)
        except Exception as exc:
            error = one_line(exc)
        self._from_thread(self._answer_done, view, final, error, cancel.is_set() and final is None)

    async def _answer_done(
        self, view: BotMessage, final: Any, error: str | None, cancelled: bool
    ) -> None:
        if not view.is_attached:  # the view was cleared (session switch, /clear) meanwhile
            self._replying = False
            self._reply_cancel = None
            await self._pump()
            return
        if cancelled:
            await view.fail("", "cancelled")
            self.notify("Reply cancelled; nothing was saved for that turn.", severity="warning")
        elif error is not None:
            await view.fail(error)
            self.notify(error, title="error", severity="error")
        elif final is not None:
            sources = [s.label() for s in final.sources]
            await view.finish(final.text, final.skill, float(final.confidence), sources)
            self.marks["last_reply"] = time.perf_counter()
        else:
            await view.fail("no reply")
        self.chat_log.scroll_end(animate=False)
        self._replying = False
        self._reply_cancel = None
        await self.refresh_sidebar()
        await self._pump()

    # -- sidebar -----------------------------------------------------------------------
    async def refresh_sidebar(self) -> None:
        if self.bot is None:
            return
        sidebar = self.query_one(Sidebar)
        try:
            await sidebar.set_sessions(self.bot.store.list_sessions(limit=50), self.session_id)
            kb = getattr(self.bot, "knowledge", None)
            sidebar.set_knowledge(kb.stats() if kb is not None else None)
            sidebar.set_models(model_lines(self.bot))
        except Exception as exc:  # a broken store must not take the chat down
            self.notify(one_line(exc), title="sidebar", severity="error")

    async def on_sidebar_session_chosen(self, event: Sidebar.SessionChosen) -> None:
        if event.session_id != self.session_id:
            await self.switch_session(event.session_id)
            with contextlib.suppress(NoMatches):  # the app may be closing
                self.prompt.focus()

    def session_choices(self) -> list[tuple[str, str]]:
        if self.bot is None:
            return []
        try:
            return [(s.id, s.title) for s in self.bot.store.list_sessions(limit=20)]
        except Exception:
            return []

    def _completion_choices(self) -> dict[str, list[str]]:
        return {"switch": [sid for sid, _ in self.session_choices()]}

    # -- actions -----------------------------------------------------------------------
    def action_cancel(self) -> None:
        """Esc: stop the streaming reply; else stop the running job."""
        if self._replying and self._reply_cancel is not None:
            self._reply_cancel.set()
            self._set_status("cancelling…", "loading")
        elif self._job_cancel is not None:
            self._job_cancel.set()
            self.notify("Cancelling the job…", severity="warning", timeout=3)

    def action_toggle_sidebar(self) -> None:
        self.query_one(Sidebar).toggle_class("-hidden")

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    async def action_new_session(self) -> None:
        await self.run_slash_command("/session new")

    async def action_help(self) -> None:
        await self.run_slash_command("/help")

    def action_copy_last(self) -> None:
        replies = list(self.query(BotMessage))
        if not replies:
            self.notify("Nothing to copy yet.", severity="warning", timeout=3)
            return
        replies[-1].action_copy()

    def key_hints(self) -> list[tuple[str, str]]:
        """(key, description) of the app bindings as currently bound (config included)."""
        keymap = getattr(self, "_keymap", {}) or {}
        return [
            (keymap.get(b.id, b.key) if b.id else b.key, b.description)
            for b in self._bindings_list()
        ] + [("ctrl+p", "command palette")]


class _NotifyHandler(logging.Handler):
    """Library warnings become notifications instead of text written over the screen."""

    def __init__(self, app: App[Any]) -> None:
        super().__init__(level=logging.WARNING)
        self.app = app

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage().splitlines()[0][:300]
            sev: Literal["error", "warning"] = (
                "error" if record.levelno >= logging.ERROR else "warning"
            )
            if threading.current_thread() is threading.main_thread():
                self.app.notify(msg, severity=sev)
            else:
                self.app.call_from_thread(self.app.notify, msg, severity=sev)
        except Exception:
            pass


def run(project: str | None) -> None:
    """Entry point of ``llmos chat``: run the full-screen chat on ``project``."""
    app = ChatApp(project)
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [_NotifyHandler(app)]
    try:
        app.run()
    finally:
        root.handlers = saved
        if app.bot is not None:
            with contextlib.suppress(Exception):
                app.bot.close()
