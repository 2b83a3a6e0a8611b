"""CLI for stored conversations: ``llmos sessions`` (list), ``sweep`` and ``delete``.

    llmos sessions [--project DIR]                  stored conversations, newest first
    llmos sessions sweep [--project DIR] [--days N] delete conversations idle N days, once
    llmos sessions delete ID... [--project DIR]     delete these conversations now

``sweep`` uses ``sessions.retention_days`` from llmos.yaml unless ``--days`` is given; it is
the same sweep ``llmos serve`` runs in the background (RELIABILITY H3, B3). Both remove the
deleted conversations' bytes from the database and their exported transcripts.
"""

from __future__ import annotations

import math
from typing import Any

import typer

from assistant.errors import ConfigError, UnknownSessionError

PROJECT_HELP = "Bot project directory (default: current dir or the demo)."


def prune_owner_rows(project: Any, store: Any) -> None:
    """The HTTP service's ``keys.db`` (when there is one) forgets who started the deleted
    sessions, and the idempotency keys that started them."""
    from assistant.keys import KeyStore

    if not KeyStore.path_for(project).is_file():
        return
    keys = KeyStore.for_project(project)
    try:
        keys.prune_owners(store.exists)
    finally:
        keys.close()


def parse_days(text: str) -> float:
    """``--days`` as a positive, finite number of days; a one-line ConfigError otherwise."""
    try:
        days = float(text)
    except ValueError:
        days = math.nan
    if not math.isfinite(days) or not 0 < days <= 36_500:
        raise ConfigError(f"--days must be a positive number of days (at most 36500), got {text!r}")
    return days


def register(app: typer.Typer, train_app: typer.Typer, eval_app: typer.Typer) -> None:
    sessions_app = typer.Typer(
        help="Stored conversations: list them (no subcommand), or sweep out old ones.",
        invoke_without_command=True,
    )
    app.add_typer(sessions_app, name="sessions")

    @sessions_app.callback()
    def list_sessions(
        ctx: typer.Context,
        project: str | None = typer.Option(None, "--project", "-p", help=PROJECT_HELP),
    ) -> None:
        """List stored conversations, newest first."""
        if ctx.invoked_subcommand is not None:
            return
        from assistant.project import resolve_project
        from assistant.sessions import SessionStore

        proj = resolve_project(project)
        store = SessionStore(proj.sessions_db)
        try:
            found = store.list_sessions()
            for s in found:
                typer.echo(f"{s.id}  {s.turns:4d} turns  {s.title}")
            if not found:
                typer.echo(f"No stored conversations in {proj.sessions_db}")
        finally:
            store.close()

    @sessions_app.command("sweep")
    def sweep_cmd(
        project: str | None = typer.Option(None, "--project", "-p", help=PROJECT_HELP),
        days: str | None = typer.Option(
            None,
            "--days",
            help="Delete conversations idle longer than this (default: sessions.retention_days).",
        ),
    ) -> None:
        """Delete conversations idle longer than the retention period, once; print the counts.

        Sessions with an open handoff ticket are kept; a session in the middle of a turn is
        skipped (the next sweep takes it).
        """
        from assistant.config import load_config
        from assistant.exports import prune_exports
        from assistant.project import resolve_project
        from assistant.sessions import SessionStore

        period = parse_days(days) if days is not None else None  # fail before opening anything
        proj = resolve_project(project)
        if period is None:
            period = load_config(proj.config_file).sessions.retention_days
        if period is None:
            raise ConfigError(
                "no retention period: pass --days N or set sessions.retention_days in llmos.yaml"
            )
        store = SessionStore(proj.sessions_db)
        try:
            report = store.sweep(period * 86_400.0)
            report.exports_removed = prune_exports(proj.exports_dir, store.exists)
            prune_owner_rows(proj, store)
        finally:
            store.close()
        typer.echo(f"{report.line()} (older than {period:g} days)")
        if not report.scrubbed:
            typer.secho(
                "warning: deleted rows may stay in the write-ahead log until the next sweep",
                fg="yellow",
                err=True,
            )

    @sessions_app.command("delete")
    def delete_cmd(
        session_ids: list[str] = typer.Argument(..., help="Session ids (see `llmos sessions`)."),
        project: str | None = typer.Option(None, "--project", "-p", help=PROJECT_HELP),
    ) -> None:
        """Delete conversations now: their turns, handoff tickets and exported transcripts.

        Waits for a turn in flight to finish (the session's lock); an unknown id is an error
        and nothing is deleted.
        """
        from assistant.exports import prune_exports
        from assistant.project import resolve_project
        from assistant.sessions import SessionStore, validate_session_id

        ids = [validate_session_id(s) for s in session_ids]
        proj = resolve_project(project)
        store = SessionStore(proj.sessions_db)
        try:
            missing = [s for s in ids if not store.exists(s)]
            if missing:
                raise UnknownSessionError(f"no stored session {missing[0]!r}; nothing deleted")
            for sid in ids:
                store.delete(sid)
            removed = prune_exports(proj.exports_dir, store.exists)
            prune_owner_rows(proj, store)
        finally:
            store.close()
        typer.echo(
            f"deleted {len(ids)} session{'s' if len(ids) != 1 else ''}"
            + (
                f" and {removed} exported transcript{'s' if removed != 1 else ''}"
                if removed
                else ""
            )
        )
