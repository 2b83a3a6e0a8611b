"""Auth, roles, CORS, rate limits, body limits and the turn timeout (RELIABILITY F1, F4, F5,
F7, F9), in-process against the real assistant."""

from __future__ import annotations

import re
import threading
import time

import pytest

from tests.service.conftest import hold

PUBLIC = {"/healthz", "/openapi.json", "/", "/widget.js"}


def _routes(app) -> list[tuple[str, str]]:
    out = []
    for r in app.routes:
        for m in sorted(getattr(r, "methods", None) or ()):
            if m in {"HEAD", "OPTIONS"}:
                continue
            out.append((m, r.path))
    return out


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path).replace("/v1/sessions/1", "/v1/sessions/abc123")


def test_every_route_but_the_allowlist_needs_a_key(api):
    """A meta-test: a new route without an auth dependency fails here."""
    routes = _routes(api.app)
    assert {p for _, p in routes} >= {
        "/v1/chat",
        "/v1/chat/stream",
        "/v1/sessions/{session_id}",
        "/v1/tickets",
        "/v1/documents",
        "/v1/stats",
    }
    wrong = "llmos_wk_" + "A" * 43
    for method, path in routes:
        if path in PUBLIC:
            continue
        for headers in ({}, {"X-API-Key": ""}, {"X-API-Key": wrong}):
            r = api.client.request(method, _fill(path), headers=headers, json={})
            assert r.status_code == 401, (method, path, headers, r.status_code)
            assert set(r.json()) == {"error"}


def test_key_only_counts_in_the_header(api):
    sid = api.chat("How do I track my order?").json()["session_id"]
    url = f"/v1/sessions/{sid}"
    assert api.client.get(url, headers=api.h(api.widget)).status_code == 200
    assert api.client.get(f"{url}?api_key={api.widget}").status_code == 401
    assert api.client.get(f"{url}?X-API-Key={api.widget}").status_code == 401
    r = api.client.get(url, headers={"Cookie": f"X-API-Key={api.widget}; api_key={api.widget}"})
    assert r.status_code == 401
    assert api.client.get(url, headers=api.h(api.widget.upper())).status_code == 401
    assert api.client.get(url, headers=api.h(api.widget[:-1])).status_code == 401
    assert api.client.get(url, headers=api.h(api.widget + "x")).status_code == 401


def test_revoked_key_is_refused_from_the_next_request(api):
    key, secret = api.keys.create("widget", origins=[api.origin])
    assert api.chat("How do I track my order?", key=secret).status_code == 200
    api.keys.revoke(key.id)
    r = api.chat("How do I track my order?", key=secret)
    assert r.status_code == 401 and "revoked" in r.json()["error"]


@pytest.mark.parametrize(
    ("role", "method", "path", "status"),
    [
        ("widget", "GET", "/v1/tickets", 403),
        ("widget", "POST", "/v1/tickets/1/claim", 403),
        ("widget", "POST", "/v1/documents", 403),
        ("widget", "GET", "/v1/stats", 403),
        ("agent", "GET", "/v1/stats", 403),
        ("agent", "POST", "/v1/documents", 403),
        ("agent", "GET", "/v1/tickets", 200),
        ("admin", "GET", "/v1/tickets", 200),
        ("admin", "GET", "/v1/stats", 200),
    ],
)
def test_roles(api, role, method, path, status):
    key = {"widget": api.widget, "agent": api.agent, "admin": api.admin}[role]
    body = {"agent": "Dana"} if method == "POST" else None
    r = api.client.request(method, path, headers=api.h(key), json=body)
    assert r.status_code == status, r.text


def test_agent_and_admin_keys_may_chat(api):
    assert api.chat("How do I track my order?", key=api.agent).status_code == 200
    assert api.chat("How do I track my order?", key=api.admin).status_code == 200


def test_cors_for_widget_keys(api):
    ok = api.chat("How do I track my order?")  # no Origin: server-to-server, allowed
    assert ok.status_code == 200 and "access-control-allow-origin" not in ok.headers
    body = {"message": "How do I track my order?"}
    r = api.client.post("/v1/chat", json=body, headers=api.h(api.widget, Origin=api.origin))
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == api.origin
    assert "Origin" in r.headers["vary"]
    for bad in ("https://evil.example", "null", "https://shop.example.evil.example"):
        r = api.client.post("/v1/chat", json=body, headers=api.h(api.widget, Origin=bad))
        assert r.status_code == 403, bad
        assert "access-control-allow-origin" not in r.headers
    # an origin that another widget key allows is still refused for this key
    api.keys.create("widget", origins=["https://other.example"])
    r = api.client.post(
        "/v1/chat", json=body, headers=api.h(api.widget, Origin="https://other.example")
    )
    assert r.status_code == 403


def test_cors_preflight(api):
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}
    r = api.client.options("/v1/chat", headers={"Origin": api.origin, **pre})
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == api.origin
    assert "X-API-Key" in r.headers["access-control-allow-headers"]
    assert "POST" in r.headers["access-control-allow-methods"]
    for bad in ("https://evil.example", "null"):
        r = api.client.options("/v1/chat", headers={"Origin": bad, **pre})
        assert r.status_code == 403
        assert "access-control-allow-origin" not in r.headers


def test_rate_limit_429_with_retry_after_then_recovers(api, service_bot):
    _key, secret = api.keys.create("widget", rate_per_min=60)
    other = api.keys.create("widget", rate_per_min=60)[1]
    sid = api.chat("How do I track my order?", key=secret).json()["session_id"]
    url = f"/v1/sessions/{sid}"
    codes = [api.client.get(url, headers=api.h(secret)).status_code for _ in range(80)]
    # a bucket of 60 (one minute's worth), one spent on the chat above, ±1 for refill
    assert 58 <= codes.count(200) <= 61 and codes.count(429) == 80 - codes.count(200)
    r = api.client.get(url, headers=api.h(secret))
    assert r.status_code == 429
    retry = int(r.headers["retry-after"])
    assert 1 <= retry <= 2
    turns_before = len(service_bot.store.turns(sid))
    assert api.chat("How long does delivery take?", sid, key=secret).status_code == 429
    assert len(service_bot.store.turns(sid)) == turns_before  # refused: no turn
    # another key is unaffected
    assert api.chat("How do I track my order?", key=other).status_code == 200
    time.sleep(retry + 0.1)
    assert api.client.get(url, headers=api.h(secret)).status_code == 200


def test_wrong_keys_are_rate_limited_per_client(make_api):
    api = make_api(unauthenticated_rate_per_min=5)
    bad = {"X-API-Key": "llmos_adm_" + "B" * 43}
    codes = [api.client.get("/v1/stats", headers=bad).status_code for _ in range(8)]
    assert codes[:5] == [401] * 5 and codes[5:] == [429] * 3
    # a valid key from the same client still works
    assert api.client.get("/v1/stats", headers=api.h(api.admin)).status_code == 200


def test_body_limits(make_api):
    api = make_api(max_body_bytes=4096, max_upload_bytes=20_000)
    big = {"message": "x" * 5000}
    r = api.client.post("/v1/chat", json=big, headers=api.h(api.widget))
    assert r.status_code == 413 and "too large" in r.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(10):
            yield b" " * 1000

    r = api.client.post(
        "/v1/chat",
        content=chunks(),
        headers=api.h(api.widget, **{"Content-Type": "application/json"}),
    )
    assert r.status_code == 413
    # uploads have their own, larger limit
    doc = {"name": "limits.txt", "text": "The limit test document. " * 300}
    r = api.client.post("/v1/documents", json=doc, headers=api.h(api.admin))
    assert r.status_code == 200, r.text
    r = api.client.post(
        "/v1/documents", files=[("files", ("big.txt", b"y" * 30_000))], headers=api.h(api.admin)
    )
    assert r.status_code == 413
    # and the server still serves
    assert api.chat("How do I track my order?").status_code == 200


def test_slow_turn_gets_a_polite_reply_and_is_stored_as_timed_out(make_api, service_bot):
    """F7 in-process (tests/service/test_hardening.py has it over real uvicorn)."""
    api = make_api(turn_timeout_s=0.5)
    sid = api.chat("How do I track my order?").json()["session_id"]
    health: list[float] = []
    stop = threading.Event()

    def probe():
        while not stop.is_set():
            t = time.perf_counter()
            assert api.client.get("/healthz").status_code == 200
            health.append(time.perf_counter() - t)
            time.sleep(0.05)

    th = threading.Thread(target=probe)
    th.start()
    t0 = time.perf_counter()
    r = api.chat(hold(2500, "timeout-case"), sid, idempotency_key="slow-1")
    waited = time.perf_counter() - t0
    stop.set()
    th.join()
    assert r.status_code == 200
    body = r.json()
    assert body["timed_out"] is True and body["turn"] == 2
    assert "taking too long" in body["reply"]["text"]
    assert waited < 2.5  # answered before the skill finished
    assert health, "healthz was not answered while the turn ran"
    # stored at once as a timeout turn; the skill's late reply is never stored
    deadline = time.monotonic() + 20
    while api.service.in_flight and time.monotonic() < deadline:
        time.sleep(0.1)
    turns = service_bot.store.turns(sid)
    assert [(t.n, t.skill) for t in turns] == [(1, "qa"), (2, "timeout")]
    assert turns[1].data["status"] == "failed_timeout"
    # a retry with the same idempotency key replays the stored outcome, not a third turn
    again = api.chat(hold(2500, "timeout-case"), sid, idempotency_key="slow-1").json()
    assert again["turn"] == 2 and again["replayed"] is True and again["timed_out"] is True
    assert len(service_bot.store.turns(sid)) == 2


def test_stream_timeout_ends_with_a_polite_done_event(make_api):
    from tests.service.conftest import parse_sse

    api = make_api(turn_timeout_s=0.3)
    r = api.client.post(
        "/v1/chat/stream", json={"message": hold(1500, "stream")}, headers=api.h(api.widget)
    )
    events = parse_sse(r.text)
    assert events[0][0] == "start" and events[-1][0] == "done"
    assert events[-1][1]["timed_out"] is True
