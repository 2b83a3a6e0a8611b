"""Fixtures for the HTTP service: one real demo assistant for the whole session, served
in-process (TestClient) and by a real uvicorn on 127.0.0.1.

The assistant is the built-in demo (real MiniLM router, FAISS knowledge, SQLite sessions)
plus one test skill, ``hold``, that waits the number of milliseconds named in the message
before it answers: the slow path the timeout and ordering tests need.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from skills.base import Reply, Skill

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class HoldSkill(Skill):
    """Waits ``N ms`` (from the message) and echoes the message: a real, slow skill."""

    name = "hold"
    description = "Waits on the line before answering (a test skill)."
    examples = [
        "please hold the line for 100 ms",
        "please hold the line for 250 ms",
        "please hold the line for 40 ms",
        "please hold the line for 1200 ms",
        "hold the line 300 ms please",
        "keep me on hold for 80 ms",
    ]
    capability = "hold the line"

    def handle(self, request, services):
        m = re.search(r"(\d+)\s*ms", request.text)
        ms = min(int(m.group(1)), 30_000) if m else 10
        first = f"holding for {ms} ms. "
        yield first  # streamed before the wait: clients see it early
        time.sleep(ms / 1000)
        rest = f"held: {request.text}"
        yield rest
        yield Reply(text=first + rest, skill=self.name, confidence=request.confidence)


def hold(ms: int, tag: str = "") -> str:
    """A message the router sends to the hold skill."""
    return f"please hold the line for {ms} ms {tag}".strip()


@pytest.fixture(scope="session")
def service_bot(tmp_path_factory: pytest.TempPathFactory, embedder, llmos_home):
    """The demo assistant with the hold skill, its state in a temp dir of its own."""
    from assistant.api import Assistant
    from assistant.project import DEMO_ROOT, Project

    state = tmp_path_factory.mktemp("service_state")
    project = Project(root=DEMO_ROOT, state=state, is_demo=True)
    bot = Assistant(
        project,
        embedder=embedder,
        entry_points=False,
        language_model=False,
        extra_skills=[HoldSkill()],
    )
    yield bot
    bot.close()


@dataclass
class Api:
    """An in-process client plus keys of every role for one app."""

    client: Any
    app: Any
    admin: str
    agent: str
    widget: str
    origin: str = "https://shop.example"

    def h(self, key: str | None = None, **extra: str) -> dict[str, str]:
        out = {"X-API-Key": key} if key is not None else {}
        out.update(extra)
        return out

    @property
    def keys(self):
        return self.app.state.keys

    @property
    def service(self):
        return self.app.state.service

    def chat(self, message: str, session_id: str | None = None, key: str | None = None, **kw):
        body = {"message": message, "session_id": session_id, **kw}
        return self.client.post("/v1/chat", json=body, headers=self.h(key or self.widget))


@pytest.fixture(scope="session")
def make_api(service_bot) -> Iterator[Callable[..., Api]]:
    """Build an app over the shared assistant with the given ServerSettings fields."""
    from fastapi.testclient import TestClient

    from assistant.server import ServerSettings, create_app

    clients: list[Any] = []

    def make(**settings: Any) -> Api:
        app = create_app(service_bot, settings=ServerSettings(**settings))
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        ks = app.state.keys
        origin = "https://shop.example"
        return Api(
            client=client,
            app=app,
            admin=ks.create("admin", name="test admin")[1],
            agent=ks.create("agent", name="test agent")[1],
            widget=ks.create("widget", name="test widget", origins=[origin])[1],
            origin=origin,
        )

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture(scope="session")
def api(make_api) -> Api:
    """The default app, shared by tests that do not change settings."""
    return make_api()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_loopback(host: str) -> None:
    """Load, rate-limit and API tests only ever target this machine."""
    if host not in LOOPBACK:
        raise RuntimeError(f"refusing to test against non-loopback host {host!r}")
    addrs = {ai[4][0] for ai in socket.getaddrinfo(host, None)}
    if not addrs <= {"127.0.0.1", "::1"}:
        raise RuntimeError(f"{host!r} does not resolve to loopback only: {sorted(addrs)}")


class UvicornThread:
    """A real uvicorn server on 127.0.0.1 in a background thread.

    With ``settings`` it runs the shipped configuration (``assistant.server.uvicorn_options``:
    concurrency limit, keep-alive and request-head deadlines) instead of uvicorn's defaults.
    """

    def __init__(self, app: Any, port: int, settings: Any = None) -> None:
        import uvicorn

        assert_loopback("127.0.0.1")
        if settings is not None:
            from assistant.server import uvicorn_options

            opts = uvicorn_options(settings, "warning")
            opts.update(host="127.0.0.1", port=port, log_config=None)
            config = uvicorn.Config(app, lifespan="on", **opts)
        else:
            config = uvicorn.Config(
                app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"
            )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="uvicorn")

    def __enter__(self) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server(service_bot) -> Iterator[tuple[str, str, str, str]]:
    """``(base_url, admin_key, widget_key, agent_key)`` of a real uvicorn on loopback.

    The widget key allows the origin ``base_url`` (the demo page's own origin), so a browser
    that opens ``base_url + "/"`` can use it.
    """
    from assistant.server import ServerSettings, create_app

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = create_app(service_bot, settings=ServerSettings(port=port, public_origins=[base]))
    ks = app.state.keys
    admin = ks.create("admin", name="live admin")[1]
    widget = ks.create("widget", name="live widget", origins=[base])[1]
    agent = ks.create("agent", name="live agent")[1]
    with UvicornThread(app, port):
        yield base, admin, widget, agent


def turns_of(bot, session_id: str) -> list[Any]:
    return bot.store.turns(session_id)


def parse_sse(text: str) -> list[tuple[str, Any]]:
    """``[(event, data)]`` of a server-sent-event body."""
    import json

    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        event, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        events.append((event, json.loads("\n".join(data)) if data else None))
    return events


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
