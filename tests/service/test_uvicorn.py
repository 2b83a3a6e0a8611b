"""The service behind a real uvicorn on 127.0.0.1: HTTP, streaming, CORS, limits, and the
``llmos serve`` / ``llmos keys`` commands in subprocesses (slow)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.service.conftest import assert_loopback, free_port, hold

REPO = Path(__file__).resolve().parents[2]


def test_live_server_is_on_loopback(live_server):
    base = live_server[0]
    host = urlsplit(base).hostname
    assert host is not None
    assert_loopback(host)
    with pytest.raises(RuntimeError):
        assert_loopback("example.com")


def test_health_chat_and_transcript_over_http(live_server):
    base, admin, widget, _agent = live_server
    with httpx.Client(base_url=base, timeout=30) as c:
        assert c.get("/healthz").json()["status"] == "ok"
        r = c.post(
            "/v1/chat",
            json={"message": "How do I track my order?"},
            headers={"X-API-Key": widget, "Origin": base},
        )
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == base
        sid = r.json()["session_id"]
        t = c.get(f"/v1/sessions/{sid}", headers={"X-API-Key": widget}).json()
        assert [x["n"] for x in t["turns"]] == [1]
        assert c.get("/v1/stats", headers={"X-API-Key": admin}).status_code == 200
        assert c.get("/v1/stats").status_code == 401
        spec = c.get("/openapi.json").json()
        assert "/v1/chat" in spec["paths"] and "/v1/tickets/{ticket_id}/reply" in spec["paths"]
        assert c.get("/docs").status_code == 404  # off unless --docs


def test_stream_arrives_incrementally(live_server):
    base, _admin, widget, _agent = live_server
    seen: list[tuple[float, str]] = []
    buf = ""
    t0 = time.perf_counter()
    with (
        httpx.Client(base_url=base, timeout=30) as c,
        c.stream(
            "POST",
            "/v1/chat/stream",
            json={"message": hold(800, "live stream")},
            headers={"X-API-Key": widget},
        ) as r,
    ):
        assert r.status_code == 200
        for text in r.iter_text():
            buf += text
            while "\n\n" in buf:
                block, buf = buf.split("\n\n", 1)
                seen.append((time.perf_counter() - t0, block.split("\n", 1)[0]))
    names = [n for _, n in seen]
    assert names[0] == "event: start" and names[-1] == "event: done"
    first_chunk = next(t for t, n in seen if n == "event: chunk")
    done = seen[-1][0]
    # the first chunk came before the skill's wait was over
    assert done - first_chunk > 0.4


def test_body_limit_and_preflight_over_http(live_server):
    base, _admin, widget, _agent = live_server
    with httpx.Client(base_url=base, timeout=30) as c:
        r = c.post(
            "/v1/chat",
            content=b'{"message": "' + b"x" * 70_000 + b'"}',
            headers={"X-API-Key": widget, "Content-Type": "application/json"},
        )
        assert r.status_code == 413
        pre = {"Origin": base, "Access-Control-Request-Method": "POST"}
        r = c.options("/v1/chat", headers=pre)
        assert r.status_code == 204 and r.headers["access-control-allow-origin"] == base
        r = c.options("/v1/chat", headers={**pre, "Origin": "http://evil.example"})
        assert r.status_code == 403
        assert c.get("/healthz").status_code == 200


def test_demo_page_key_works_from_the_servers_own_origin(live_server):
    base, _admin, _widget, _agent = live_server
    with httpx.Client(base_url=base, timeout=30) as c:
        page = c.get("/")
        if page.status_code == 404:
            pytest.skip("assistant/static/index.html is not installed yet")
        m = next(iter(re.findall(r"llmos_wk_[A-Za-z0-9_-]{43}", page.text)), None)
        assert m, "the demo page carries a widget key"
        r = c.post(
            "/v1/chat",
            json={"message": "How do I track my order?"},
            headers={"X-API-Key": m, "Origin": base},
        )
        assert r.status_code == 200
        r = c.post(
            "/v1/chat",
            json={"message": "hi"},
            headers={"X-API-Key": m, "Origin": "http://evil.example"},
        )
        assert r.status_code == 403


# -- the commands, in real processes ------------------------------------------------------
def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "LLMOS_HOME": str(home),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",
        }
    )
    return env


def _llmos(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "assistant.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def _wait_healthy(base: str, proc: subprocess.Popen[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("server did not become healthy")


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_llmos_serve_and_keys_commands(tmp_path, workers):
    env = _env(tmp_path / "home")
    made = _llmos("keys", "create", "--role", "widget", "--origin", "http://127.0.0.1:1", env=env)
    assert made.returncode == 0, made.stderr
    widget = made.stdout.strip().splitlines()[-1]
    assert widget.startswith("llmos_wk_")
    admin = _llmos("keys", "create", "--role", "admin", "--rate", "5/s", env=env)
    admin_key = admin.stdout.strip().splitlines()[-1]
    listed = _llmos("keys", "list", env=env).stdout
    assert widget not in listed and admin_key not in listed and "widget" in listed

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "assistant.cli", "serve", "--port", str(port)]
        + (["--workers", str(workers)] if workers > 1 else []),
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_healthy(base, proc)
        # bound to loopback only
        with pytest.raises(OSError), socket.create_connection(("::1", port), timeout=1):
            pass
        with httpx.Client(base_url=base, timeout=30) as c:
            r = c.post(
                "/v1/chat",
                json={"message": "How do I track my order?"},
                headers={"X-API-Key": widget},
            )
            assert r.status_code == 200 and r.json()["reply"]["skill"] == "qa"
            assert c.get("/v1/stats", headers={"X-API-Key": admin_key}).json()["turns"] >= 1
            key_id = re.search(r"#(\d+)", made.stdout).group(1)
            revoked = _llmos("keys", "revoke", key_id, env=env)
            assert revoked.returncode == 0, revoked.stderr
            r = c.post("/v1/chat", json={"message": "hello"}, headers={"X-API-Key": widget})
            assert r.status_code == 401
            page = c.get("/")
            if page.status_code == 200:  # the demo key is shared by every worker
                demo = re.findall(r"llmos_wk_[A-Za-z0-9_-]{43}", page.text)[0]
                for _ in range(4):
                    r = c.post(
                        "/v1/chat",
                        json={"message": "How do I track my order?"},
                        headers={"X-API-Key": demo, "Origin": base},
                    )
                    assert r.status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_access_log_never_shows_a_key():
    """RELIABILITY H1: a key sent in a query string is not written to the logs."""
    import logging

    from assistant.http_asgi import RedactKeys, log_config

    cfg = log_config()
    assert cfg["filters"]["redact_keys"]["()"] == "assistant.http_asgi.RedactKeys"
    assert all("redact_keys" in h["filters"] for h in cfg["handlers"].values())
    key = "llmos_wk_" + "Q" * 43
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", f"/v1/stats?api_key={key}", "1.1", 401),
        None,
    )
    assert RedactKeys().filter(record)
    line = record.getMessage()
    assert key not in line and "llmos_[redacted]" in line and "/v1/stats" in line
