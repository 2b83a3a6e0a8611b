"""CLI for stored conversations: ``llmos sessions`` (list) and ``llmos sessions sweep``.

    llmos sessions [--project DIR]                  stored conversations, newest first
    llmos sessions sweep [--project DIR] [--days N] delete conversations idle N days, once

``sweep`` uses ``sessions.retention_days`` from llmos.yaml unless ``--days`` is given; it is
the same sweep ``llmos serve`` runs in the background (RELIABILITY H3, B3).
"""

from __future__ import annotations

import math

import typer

from assistant.errors import ConfigError

PROJECT_HELP = "Bot project directory (default: current dir or the demo)."


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

        store = SessionStore(resolve_project(project).sessions_db)
        try:
            for s in store.list_sessions():
                typer.echo(f"{s.id}  {s.turns:4d} turns  {s.title}")
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
        finally:
            store.close()
        typer.echo(f"{report.line()} (older than {period:g} days)")
        if not report.scrubbed:
            typer.secho(
                "warning: deleted rows may stay in the write-ahead log until the next sweep",
                fg="yellow",
                err=True,
            )
