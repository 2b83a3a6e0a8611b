"""Hung skills and slow clients against a real uvicorn on 127.0.0.1 (RELIABILITY F7, B2, F8).

- A turn that outlives ``turn_timeout_s`` is stored as a ``timeout`` turn
  (``status: "failed_timeout"``), its session is free for the next message at once, and
  the skill's late reply is dropped, never stored as a second answer.
- After ``breaker_threshold`` consecutive timeouts a skill is skipped (fallback reply) for
  ``breaker_cooldown_s`` and ``/healthz`` lists it as degraded; then it is tried again.
- Idle keep-alive connections, connections that never send a request and 1-byte-a-second
  uploads do not stop ``/healthz`` or a chat turn; the slow ones are cut off (408 / closed).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.service.conftest import UvicornThread, free_port, hold


class Live:
    def __init__(self, base: str, widget: str, service: Any) -> None:
        self.base = base
        self.widget = widget
        self.service = service
        self.client = httpx.Client(base_url=base, timeout=30, headers={"X-API-Key": widget})

    def chat(self, message: str, session_id: str | None = None, **kw: Any) -> httpx.Response:
        body = {"message": message, "session_id": session_id, **kw}
        return self.client.post("/v1/chat", json=body)


def _serve(service_bot: Any, **settings: Any) -> Iterator[Live]:
    from assistant.server import ServerSettings, create_app

    port = free_port()
    cfg = ServerSettings(port=port, demo_key=False, **settings)
    app = create_app(service_bot, settings=cfg)
    widget = app.state.keys.create_ephemeral("widget", name="hardening", rate_per_min=1e6)[1]
    with UvicornThread(app, port, settings=cfg):
        live = Live(f"http://127.0.0.1:{port}", widget, app.state.service)
        try:
            yield live
        finally:
            live.client.close()


def _warm(service_bot: Any) -> None:
    """Warm the router and the QA skill (lazy indexes) so that only the hold skill is slow."""
    for text in ("How do I track my order?", "How long does delivery take?", hold(1)):
        service_bot.chat(text)


@pytest.fixture
def slow_server(service_bot) -> Iterator[Live]:
    _warm(service_bot)
    yield from _serve(service_bot, turn_timeout_s=1.0, breaker_threshold=3, breaker_cooldown_s=2.0)


def _wait_idle(live: Live, timeout: float = 30) -> None:
    """Until no turn thread runs (the hung skills finished)."""
    deadline = time.monotonic() + timeout
    while live.service.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live.service.in_flight == 0


def test_timed_out_turn_is_stored_lock_freed_and_late_reply_dropped(slow_server, service_bot):
    live = slow_server
    sid = live.chat("How do I track my order?").json()["session_id"]
    t0 = time.perf_counter()
    r = live.chat(hold(3000, "timeout-case"), sid, idempotency_key="slow-1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert time.perf_counter() - t0 < 2.8  # answered before the skill finished
    assert body["timed_out"] is True and body["turn"] == 2
    assert body["reply"]["skill"] == "timeout"
    assert body["reply"]["data"]["status"] == "failed_timeout"
    assert body["reply"]["data"]["skill"] == "hold"
    # the client sees what happened in the transcript
    t = live.client.get(f"/v1/sessions/{sid}").json()["turns"]
    assert [(x["n"], x["skill"]) for x in t] == [(1, "qa"), (2, "timeout")]
    assert t[1]["status"] == "failed_timeout" and t[1]["user"] == hold(3000, "timeout-case")
    assert "status" not in t[0]
    # the session is free at once: the next message is answered while the skill still hangs
    t1 = time.perf_counter()
    nxt = live.chat("How long does delivery take?", sid)
    assert nxt.status_code == 200 and nxt.json()["turn"] == 3
    assert nxt.json()["timed_out"] is False
    assert time.perf_counter() - t1 < 2.0
    assert live.service.in_flight >= 1  # the hung turn is still running
    # the late reply is dropped: still three turns once the skill has finished
    _wait_idle(live)
    stored = service_bot.store.turns(sid)
    assert [s.n for s in stored] == [1, 2, 3]
    assert [s.skill for s in stored][1] == "timeout"
    assert not any(s.reply_text.startswith("holding for 3000 ms") for s in stored)
    # a retry with the same idempotency key replays the recorded outcome
    again = live.chat(hold(3000, "timeout-case"), sid, idempotency_key="slow-1").json()
    assert again["turn"] == 2 and again["replayed"] is True and again["timed_out"] is True
    assert len(service_bot.store.turns(sid)) == 3
    # and the session keeps working
    assert live.chat("How do I track my order?", sid).json()["turn"] == 4


def test_stream_timeout_is_stored_too(slow_server, service_bot):
    from tests.service.conftest import parse_sse

    live = slow_server
    r = live.client.post("/v1/chat/stream", json={"message": hold(2500, "stream-timeout")})
    events = parse_sse(r.text)
    assert events[0][0] == "start" and events[-1][0] == "done"
    done = events[-1][1]
    assert done["timed_out"] is True and done["turn"] == 1
    sid = done["session_id"]
    nxt = live.chat("How do I track my order?", sid).json()
    assert nxt["turn"] == 2 and not nxt["timed_out"]
    _wait_idle(live)
    assert [t.skill for t in service_bot.store.turns(sid)] == ["timeout", "qa"]


def test_circuit_breaker_skips_a_skill_after_three_timeouts(slow_server, service_bot):
    live = slow_server
    sid = live.chat("How do I track my order?").json()["session_id"]
    assert live.client.get("/healthz").json()["degraded_skills"] == []
    blamed = 0
    for i in range(6):  # a turn given up before it reached the skill (a slow router on a
        # loaded machine) blames no skill: it neither counts nor resets the count
        body = live.chat(hold(2500, f"breaker {i}"), sid).json()
        assert body["timed_out"] is True
        blamed += body["reply"]["data"].get("skill") == "hold"
        if blamed == 3:
            break
        assert live.client.get("/healthz").json()["degraded_skills"] == []
    assert blamed == 3
    health = live.client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "degraded" and health.json()["degraded_skills"] == ["hold"]
    # skipped: a fast fallback reply instead of a fourth hang
    t0 = time.perf_counter()
    skipped = live.chat(hold(2500, "breaker open"), sid).json()
    assert time.perf_counter() - t0 < 1.5
    assert skipped["timed_out"] is False and skipped["reply"]["skill"] == "fallback"
    assert skipped["reply"]["data"]["skipped_skill"] == "hold"
    # other skills are unaffected
    assert live.chat("How do I track my order?", sid).json()["reply"]["skill"] == "qa"
    # after the cool-down the skill is tried again; a success closes the circuit
    time.sleep(2.1)
    ok = live.chat(hold(30, "breaker closed"), sid).json()
    assert ok["reply"]["skill"] == "hold" and ok["timed_out"] is False
    health = live.client.get("/healthz").json()
    assert health["status"] == "ok" and health["degraded_skills"] == []
    _wait_idle(live)
    skills = [t.skill for t in service_bot.store.turns(sid)]
    assert skills == ["qa"] + ["timeout"] * (i + 1) + ["fallback", "qa", "hold"]


def test_breaker_half_open_reopens_on_another_timeout():
    from assistant.server import SkillBreaker

    now = [0.0]
    b = SkillBreaker(3, 10.0, clock=lambda: now[0])
    for _ in range(2):
        b.timed_out("qa")
    b.succeeded("qa")  # not consecutive any more
    b.timed_out("qa")
    assert b.allow("qa") and b.open_skills() == []
    b.timed_out("qa")
    b.timed_out("qa")
    assert not b.allow("qa") and b.open_skills() == ["qa"]
    now[0] = 10.5
    assert b.allow("qa")  # half-open: one try
    b.timed_out("qa")
    assert not b.allow("qa")
    now[0] = 21.0
    b.succeeded("qa")
    assert b.allow("qa") and b.open_skills() == []


# -- F8: slow clients ---------------------------------------------------------------------
def test_shipped_uvicorn_config_bounds_slow_clients():
    from assistant.server import GuardedH11Protocol, ServerSettings, uvicorn_options

    opts = uvicorn_options(ServerSettings(headers_timeout_s=7))
    assert opts["limit_concurrency"] == ServerSettings().limit_concurrency > 0
    assert opts["timeout_keep_alive"] == ServerSettings().timeout_keep_alive > 0
    assert opts["http"] is GuardedH11Protocol and GuardedH11Protocol.headers_timeout_s == 7


def _keepalive_conn(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = s.recv(4096)
        assert chunk, "closed before the response"
        data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    return s


def _slow_upload(port: int, key: str, results: list[str], stop: threading.Event) -> None:
    """POST /v1/chat whose 60-byte body comes at 1 byte a second."""
    body = b'{"message": "' + b"x" * 44 + b'"}'
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        s.sendall(
            b"POST /v1/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"X-API-Key: {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        s.settimeout(1.0)
        for i in range(len(body)):
            if stop.is_set():
                break
            try:
                s.sendall(body[i : i + 1])
            except OSError:
                break
            try:
                got = s.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            results.append(got.split(b"\r\n", 1)[0].decode("latin-1") if got else "closed")
            return
        results.append("no answer")
    finally:
        s.close()


def test_idle_and_slow_clients_do_not_starve_health_or_chat(service_bot):
    for live in _serve(service_bot, headers_timeout_s=3.0, body_timeout_s=3.0):
        port = int(live.base.rsplit(":", 1)[1])
        idle = [_keepalive_conn(port) for _ in range(50)]
        silent = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(10)]
        stop = threading.Event()
        slow_results: list[str] = []
        slow = [
            threading.Thread(target=_slow_upload, args=(port, live.widget, slow_results, stop))
            for _ in range(10)
        ]
        try:
            for th in slow:
                th.start()
            time.sleep(0.5)  # the uploads are under way
            lat = []
            with httpx.Client(base_url=live.base, timeout=10) as fresh:
                for _ in range(10):
                    t = time.perf_counter()
                    assert fresh.get("/healthz").status_code == 200
                    lat.append(time.perf_counter() - t)
                r = fresh.post(
                    "/v1/chat",
                    json={"message": "How do I track my order?"},
                    headers={"X-API-Key": live.widget},
                )
            assert r.status_code == 200 and r.json()["reply"]["skill"] == "qa"
            print(f"healthz under slow clients: max {max(lat) * 1000:.1f} ms")
            for th in slow:
                th.join(timeout=15)
            # the 1-byte-a-second uploads were cut off by the body deadline
            assert slow_results == ["HTTP/1.1 408 Request Timeout"] * 10, slow_results
            # connections that never sent a request were closed by the head deadline
            for s in silent:
                s.settimeout(5)
                assert s.recv(1) == b""
        finally:
            stop.set()
            for s in idle + silent:
                s.close()


# -- the store's side of it: give up a turn, evict its lock, refuse its late reply ----------
def test_abandoned_turn_store_semantics(tmp_path):
    from assistant.sessions import SessionStore, TurnAbandonedError, TurnTicket

    store = SessionStore(tmp_path / "s.db")
    store.create("s1")
    entered, release_skill = threading.Event(), threading.Event()
    outcome: list[str] = []

    def hung_turn(ticket: TurnTicket) -> None:
        with store.track(ticket), store.lock("s1"):
            entered.set()
            release_skill.wait(10)  # the "skill" hangs
            try:
                store.append("s1", "late question", "late answer")
                outcome.append("stored")
            except TurnAbandonedError:
                outcome.append("refused")

    ticket = TurnTicket("s1")
    th = threading.Thread(target=hung_turn, args=(ticket,))
    th.start()
    assert entered.wait(10)
    assert not store.lock("s1").acquire(timeout=0.2)  # held by the hung turn
    turn = store.abandon_turn(ticket, "late question", "timed out", idempotency_key="k1")
    assert turn is not None and turn.n == 1 and turn.skill == "timeout"
    assert turn.data["status"] == "failed_timeout"
    with store.lock("s1"):  # evicted: the next turn gets the session at once
        store.append("s1", "next question", "next answer")
    release_skill.set()
    th.join(10)
    assert outcome == ["refused"]
    assert [(t.n, t.user_text) for t in store.turns("s1")] == [
        (1, "late question"),
        (2, "next question"),
    ]
    # a turn stored just before the timeout is not given up twice
    done = TurnTicket("s1")
    with store.track(done):
        store.append("s1", "quick", "answer")
    assert store.abandon_turn(done, "quick", "timed out") is None
    assert len(store.turns("s1")) == 3
    store.close()


def test_timeout_while_every_turn_thread_is_busy_still_checks_the_key(service_bot):
    """A turn given up before it even started must not write into someone else's session."""
    _warm(service_bot)
    for live in _serve(service_bot, turn_timeout_s=1.0, turn_threads=1):
        sid = live.chat("How do I track my order?").json()["session_id"]
        hung = live.chat(hold(5000, "hog the only thread"), sid).json()
        assert hung["timed_out"] is True  # the one turn thread is still asleep
        other = live.service.keys.create("widget", name="someone else")[1]
        r = live.client.post(
            "/v1/chat",
            json={"message": "How do I track my order?", "session_id": sid},
            headers={"X-API-Key": other},
        )
        assert r.status_code == 404, r.text
        mine = live.chat("How long does delivery take?", sid).json()
        assert mine["timed_out"] is True and mine["turn"] == 3  # queued, given up, stored
        _wait_idle(live)
        assert [t.skill for t in service_bot.store.turns(sid)] == ["qa", "timeout", "timeout"]
