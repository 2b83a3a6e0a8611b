"""Per-session order across worker processes (RELIABILITY B5, B1 in that mode).

Two real server processes (the shipped uvicorn configuration, ``tests/service/_worker.py``)
share one project state, as ``llmos serve --workers 2`` does. The session store's lock is
also a byte-range lock on a file beside the database, so a turn that arrives at one worker
while the other is answering the same session waits for it, and hammering one session
through both workers stores every turn once, numbered without gaps, each client's in order.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from assistant.keys import generate_secret
from tests.service.conftest import free_port, hold

REPO = Path(__file__).resolve().parents[2]
FAQ = [
    "How do I track my order?",
    "How long does delivery take?",
    "Can I change or cancel my order?",
]


def _wait_healthy(base: str, proc: subprocess.Popen[str], timeout: float = 240) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"worker exited: {out[-3000:]}")
        try:
            r = httpx.get(base + "/healthz", timeout=2)
            if r.status_code == 200:
                return int(r.json()["pid"])
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("worker did not become healthy")


@pytest.fixture(scope="module")
def workers(service_bot, tmp_path_factory) -> Iterator[tuple[list[str], str, Path]]:
    """``([base_a, base_b], widget_key, state_dir)``: two worker processes, one state."""
    state = tmp_path_factory.mktemp("workers") / "state"
    # the service bot's trained router and knowledge index, without its conversations
    shutil.copytree(service_bot.project.state, state, ignore=shutil.ignore_patterns("sessions.db*"))
    secret = generate_secret("widget")
    env = dict(os.environ, LLMOS_TEST_WIDGET_KEY=secret, OMP_NUM_THREADS="1")
    procs, bases = [], []
    try:
        for _ in range(2):
            port = free_port()
            bases.append(f"http://127.0.0.1:{port}")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.service._worker", str(state), str(port)],
                    cwd=REPO,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    start_new_session=True,
                )
            )
        pids = [_wait_healthy(b, p) for b, p in zip(bases, procs, strict=True)]
        assert len(set(pids)) == 2
        yield bases, secret, state
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _stored(state: Path, sid: str) -> list[tuple[int, str, str]]:
    from assistant.sessions import SessionStore

    store = SessionStore(state / "data" / "sessions.db")
    try:
        return [(t.n, t.user_text, t.skill) for t in store.turns(sid)]
    finally:
        store.close()


def _post(base: str, key: str, message: str, sid: str | None, idem: str | None = None):
    body = {"message": message, "session_id": sid, "idempotency_key": idem}
    return httpx.post(base + "/v1/chat", json=body, headers={"X-API-Key": key}, timeout=120)


def test_a_turn_at_the_other_worker_waits_for_the_one_in_progress(workers):
    (a, b), key, state = workers
    r = _post(a, key, FAQ[0], None)
    assert r.status_code == 200, r.text
    sid = r.json()["session_id"]
    out: dict[str, httpx.Response] = {}

    def slow() -> None:
        out["a"] = _post(a, key, hold(2000, "first, at worker A"), sid)

    th = threading.Thread(target=slow)
    th.start()
    time.sleep(0.8)  # worker A holds the session now
    t0 = time.perf_counter()
    out["b"] = _post(b, key, f"{FAQ[1]} (second, at worker B)", sid)
    waited = time.perf_counter() - t0
    th.join()
    assert out["a"].status_code == 200 and out["b"].status_code == 200
    assert out["a"].json()["turn"] == 2 and out["b"].json()["turn"] == 3
    assert waited > 0.5  # it waited for worker A's turn to end
    stored = _stored(state, sid)
    assert [(n, s) for n, _, s in stored] == [(1, "qa"), (2, "hold"), (3, "qa")]


def test_two_workers_hammering_one_session_store_each_turn_once_in_order(workers):
    (a, b), key, state = workers
    sid = _post(b, key, FAQ[2], None).json()["session_id"]
    clients, per_client = 4, 8

    def client(c: int) -> list[tuple[str, int]]:
        got = []
        for i in range(per_client):
            base = (a, b)[(c + i) % 2]
            text = hold(20 + 10 * i, f"c{c} m{i}") if i % 2 else f"{FAQ[i % 3]} c{c} m{i}"
            r = _post(base, key, text, sid, idem=f"c{c}-m{i}")
            assert r.status_code == 200, r.text
            body = r.json()
            assert not body["timed_out"] and "database is locked" not in body["reply"]["text"]
            got.append((text, body["turn"]))
        return got

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, range(clients)))
    stored = _stored(state, sid)
    total = 1 + clients * per_client
    assert [n for n, _, _ in stored] == list(range(1, total + 1))  # gap-free, once each
    by_n = {n: text for n, text, _ in stored}
    for got in results:
        assert all(by_n[n] == text for text, n in got)  # each reply is its own message's
        turns = [n for _, n in got]
        assert turns == sorted(turns)  # each client's messages in the order it sent them
    texts = [text for _, text, _ in stored[1:]]
    assert len(set(texts)) == len(texts) == clients * per_client
