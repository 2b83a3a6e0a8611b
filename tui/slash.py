"""What the slash commands do inside the app (a mixin of :class:`tui.app.ChatApp`).

Kept apart from the app's layout and streaming code so each file reads as one concept.
Every failure becomes a notification; nothing here raises into Textual.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from textual import work
from textual.widgets import Markdown, Static

from assistant.exports import export_session, source_label
from tui import work as jobs
from tui.commands import CommandError, help_markdown, parse
from tui.widgets.jobs import JobPanel
from tui.widgets.messages import BotMessage, UserMessage

#: Progress updates from a job reach the UI at most this often (training calls back every step).
PROGRESS_INTERVAL_S = 0.1


class SlashCommandsMixin:
    """``/help``, ``/clear``, ``/skills``, ``/session ...``, ``/ingest``, ``/train``."""

    bot: Any
    session_id: str | None
    _job_cancel: threading.Event | None
    _job_panel: Any

    async def run_slash_command(self, line: str) -> None:
        app: Any = self
        try:
            cmd = parse(line)
        except CommandError as exc:
            app.notify(str(exc), title="command", severity="error")
            return
        if cmd.name == "help":
            await self._show_markdown(help_markdown(app.key_hints()))
            return
        if cmd.name == "clear":
            await app.chat_log.remove_children()
            return
        if self.bot is None:
            app.notify("The assistant is still loading; try again in a moment.", severity="warning")
            return
        try:
            await getattr(self, f"_cmd_{cmd.name}")(cmd.args)
        except CommandError as exc:
            app.notify(str(exc), title=f"/{cmd.name}", severity="error")
        except Exception as exc:
            from tui.app import one_line

            app.notify(one_line(exc), title=f"/{cmd.name}", severity="error")

    async def _show_markdown(self, text: str) -> None:
        app: Any = self
        await app.chat_log.mount(Markdown(text, classes="help-view"))
        app.chat_log.scroll_end(animate=False)

    # -- commands ----------------------------------------------------------------------
    async def _cmd_skills(self, args: list[str]) -> None:
        rows = ["| skill | what it does |", "|---|---|"]
        rows += [f"| `{s.name}` | {s.description} |" for s in self.bot.registry.all()]
        await self._show_markdown("### Skills\n\n" + "\n".join(rows))

    async def _cmd_session(self, args: list[str]) -> None:
        app: Any = self
        sub, rest = args[0], args[1:]
        if sub == "new":
            if app._replying:
                app.action_cancel()
            self.session_id = self.bot.new_session(title=" ".join(rest))
            await app.chat_log.remove_children()
            app.notify(f"New session {self.session_id}", timeout=3)
        elif sub == "list":
            rows = ["| id | title | turns |", "|---|---|---|"]
            for s in self.bot.store.list_sessions(limit=50):
                mark = " ◂" if s.id == self.session_id else ""
                rows.append(f"| `{s.id}`{mark} | {_cell(s.title)} | {s.turns} |")
            await self._show_markdown("### Sessions\n\n" + "\n".join(rows))
        elif sub == "switch":
            await self.switch_session(self._match_session(rest[0]))
        elif sub == "rename":
            if self.session_id is None:
                self.session_id = self.bot.new_session()
            self.bot.store.rename(self.session_id, " ".join(rest))
            app.notify(f"Session renamed to {' '.join(rest)!r}", timeout=3)
        elif sub == "export":
            if self.session_id is None:
                raise CommandError("nothing to export yet: send a message first")
            session = self.bot.store.get(self.session_id)
            turns = self.bot.redacted_transcript(self.session_id)
            path = export_session(self.bot.project.exports_dir, session.title, session.id, turns)
            app.notify(f"Exported to {path}", title="export", timeout=10)
            await self._show_markdown(f"Exported {len(turns)} turns to `{path}`")
        app._set_status("ready", "ready")
        await app.refresh_sidebar()

    def _match_session(self, prefix: str) -> str:
        ids = [s.id for s in self.bot.store.list_sessions(limit=1000)]
        if prefix in ids:
            return prefix
        hits = [i for i in ids if i.startswith(prefix)]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise CommandError(f"no session {prefix!r}; see /session list")
        raise CommandError(f"{prefix!r} matches {len(hits)} sessions; type more of the id")

    async def switch_session(self, session_id: str) -> None:
        """Show a stored conversation and continue it."""
        app: Any = self
        try:
            turns = self.bot.transcript(session_id)
        except Exception as exc:
            from tui.app import one_line

            app.notify(one_line(exc), title="session", severity="error")
            return
        if app._replying:
            app.action_cancel()
        self.session_id = session_id
        log = app.chat_log
        await log.remove_children()
        views: list[Any] = []
        for t in turns:
            if t.user_text:
                views.append(UserMessage(t.user_text))
            views.append(
                BotMessage(
                    t.reply_text,
                    skill=t.skill or t.kind,
                    confidence=t.confidence,
                    sources=[source_label(s) for s in t.sources],
                )
            )
        if not views:
            views.append(Static("(empty conversation)", classes="greeting"))
        await log.mount_all(views)
        log.scroll_end(animate=False)
        app._set_status("ready", "ready")
        await app.refresh_sidebar()

    async def _cmd_ingest(self, args: list[str]) -> None:
        await self.start_job("Ingesting", lambda bot, cb: jobs.ingest(bot, args, cb), "files")

    async def _cmd_train(self, args: list[str]) -> None:
        what = args[0]
        if what == "router":
            await self.start_job("Training the router", jobs.train_router, "steps")
        elif what == "lm":
            await self.start_job("Training the language model", jobs.train_lm, "s", loss=True)
        else:
            rest = args[1:]
            await self.start_job(
                "Training the translator",
                lambda bot, cb: jobs.train_translator(bot, rest, cb),
                "steps",
                True,
            )

    # -- long jobs ---------------------------------------------------------------------
    async def start_job(
        self, title: str, fn: Callable[[Any, Any], str], unit: str, loss: bool = False
    ) -> None:
        """Run ``fn(bot, on_progress)`` in a worker with a progress panel; Esc cancels."""
        app: Any = self
        if self._job_cancel is not None:
            raise CommandError("another job is running; wait for it or press Esc to cancel it")
        panel = JobPanel(title, unit, loss)
        await app.query_one("#jobs").mount(panel)
        cancel = threading.Event()
        self._job_cancel, self._job_panel = cancel, panel
        self._run_job(title, fn, panel, cancel)

    @work(thread=True, group="job", exit_on_error=False)
    def _run_job(
        self, title: str, fn: Callable[[Any, Any], str], panel: JobPanel, cancel: threading.Event
    ) -> None:
        app: Any = self
        last = [0.0]

        def progress(done: int, total: int, info: dict[str, Any]) -> None:
            if cancel.is_set():
                raise jobs.JobCancelled()
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL_S or done >= total:
                last[0] = now
                app._from_thread(panel.advance, int(done), int(total), dict(info))

        try:
            severity, message = "information", fn(self.bot, progress)
        except jobs.JobCancelled:
            severity, message = "warning", f"{title}: cancelled"
        except Exception as exc:
            from tui.app import one_line

            severity, message = "error", one_line(exc)
        app._from_thread(self._job_done, panel, title, severity, message)

    async def _job_done(self, panel: JobPanel, title: str, severity: str, message: str) -> None:
        app: Any = self
        self._job_cancel, self._job_panel = None, None
        await panel.remove()
        app.notify(message, title=title, severity=severity, timeout=8)
        await app.refresh_sidebar()


def _cell(text: str) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")
