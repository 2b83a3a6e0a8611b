"""CLI for the HTTP service: ``llmos serve`` and ``llmos keys create|list|revoke``.

FastAPI and uvicorn are imported inside ``serve`` so the rest of the CLI starts fast.
"""

from __future__ import annotations

import time

import typer

PROJECT_HELP = "Bot project directory (default: current dir or the demo)."


def _key_store(project: str | None):  # -> KeyStore
    from assistant.keys import KeyStore
    from assistant.project import resolve_project

    proj = resolve_project(project)
    proj.ensure_dirs()
    return KeyStore.for_project(proj)


def register(app: typer.Typer, train_app: typer.Typer, eval_app: typer.Typer) -> None:
    keys_app = typer.Typer(
        help="API keys for `llmos serve`: create, list, revoke.", no_args_is_help=True
    )
    app.add_typer(keys_app, name="keys")

    @app.command("serve")
    def serve_cmd(
        project: str | None = typer.Option(None, "--project", "-p", help=PROJECT_HELP),
        host: str = typer.Option(
            "127.0.0.1", "--host", help="Address to listen on (loopback by default)."
        ),
        port: int = typer.Option(8000, "--port", min=1, max=65535),
        workers: int = typer.Option(
            1,
            "--workers",
            min=1,
            max=64,
            help="Processes; sessions stay in order across them, rate limits are per worker.",
        ),
        timeout: float = typer.Option(
            20.0, "--timeout", min=0.1, max=3600, help="Seconds before a turn gets a polite reply."
        ),
        threads: int = typer.Option(
            4, "--threads", min=1, max=256, help="Turns answered at once per worker."
        ),
        origin: list[str] = typer.Option(
            [], "--origin", help="This server's public origin (for the demo page's key)."
        ),
        no_demo: bool = typer.Option(False, "--no-demo", help="No demo page or demo key."),
        docs: bool = typer.Option(False, "--docs", help="Serve /docs and /redoc."),
    ) -> None:
        """Run the HTTP API and the web widget (FastAPI + uvicorn)."""
        from assistant.project import resolve_project
        from assistant.server import ServerSettings, is_loopback, serve

        resolve_project(project)  # a bad --project fails here, before uvicorn starts
        settings = ServerSettings(
            host=host,
            port=port,
            workers=workers,
            turn_timeout_s=timeout,
            turn_threads=threads,
            public_origins=list(origin),
            demo_key=not no_demo,
            docs=docs,
        )
        settings.origins()  # validates --origin
        if not is_loopback(host):
            typer.secho(
                f"warning: listening on {host} makes the API reachable from other machines",
                fg="yellow",
                err=True,
            )
        typer.echo(f"llmos API on http://{host}:{port}  (demo page: /, spec: /openapi.json)")
        if workers > 1:
            typer.echo(
                f"{workers} workers: turns of a session stay in order across workers "
                "(a lock file beside the sessions database); rate limits are per worker"
            )
        serve(project, settings=settings)

    @keys_app.command("create")
    def keys_create(
        role: str = typer.Option(..., "--role", help="widget | agent | admin"),
        name: str = typer.Option("", "--name", help="A label shown by `llmos keys list`."),
        origin: list[str] = typer.Option(
            [], "--origin", help="Widget keys: a website origin allowed to use the key."
        ),
        rate: str | None = typer.Option(
            None, "--rate", help="Requests allowed, e.g. 120/min, 5/s (default by role)."
        ),
        project: str | None = typer.Option(None, "--project", "-p", help=PROJECT_HELP),
    ) -> None:
        """Create a key. The key is printed once, as the last line: store it now."""
        from assistant.ratelimit import parse_rate

        per_min = parse_rate(rate) if rate is not None else None
        store = _key_store(project)
        try:
            key, secret = store.create(role, name=name, origins=origin, rate_per_min=per_min)
        finally:
            store.close()
        typer.echo(f"created {key.role} key #{key.id} {key.name!r} ({key.rate:g} requests/min)")
        if key.origins:
            typer.echo(f"allowed origins: {', '.join(key.origins)}")
        elif key.role == "widget":
            typer.echo("no --origin: browsers cannot use this key (servers and curl can)")
        typer.echo("the key is shown only now; send it in the X-API-Key header:")
        typer.echo(secret)

    @keys_app.command("list")
    def keys_list(
        project: str | None = typer.Option(None, "--project", "-p", help=PROJECT_HELP),
        all_: bool = typer.Option(False, "--all", help="Include revoked keys."),
    ) -> None:
        """List keys (never their secrets)."""
        store = _key_store(project)
        try:
            keys = store.list(include_revoked=all_)
        finally:
            store.close()
        if not keys:
            typer.echo("no keys; create one with: llmos keys create --role widget --origin URL")
            return
        typer.echo(f"{'id':>4}  {'role':<7} {'prefix':<20} {'rate/min':>9}  {'created':<16} name")
        for k in keys:
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(k.created))
            status = "" if k.active else "  [revoked]"
            origins = f"  origins: {', '.join(k.origins)}" if k.origins else ""
            typer.echo(
                f"{k.id:>4}  {k.role:<7} {k.prefix + '…':<20} {k.rate:>9g}  {created:<16} "
                f"{k.name}{status}{origins}"
            )

    @keys_app.command("revoke")
    def keys_revoke(
        key_id: int = typer.Argument(..., help="The key's id (see `llmos keys list`)."),
        project: str | None = typer.Option(None, "--project", "-p", help=PROJECT_HELP),
    ) -> None:
        """Revoke a key; a running server refuses it from its next request."""
        store = _key_store(project)
        try:
            key = store.revoke(key_id)
        finally:
            store.close()
        typer.echo(f"revoked {key.role} key #{key.id} ({key.prefix}…)")
