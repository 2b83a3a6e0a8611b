"""Disk full at the HTTP level (RELIABILITY A3 over HTTP).

A real server (uvicorn on 127.0.0.1, the demo assistant) runs with its whole data directory
on a small tmpfs (the demo state plus 16 MiB) in a private mount namespace (``unshare``, as
in test_disk_full.py). This file is also that server's driver: run as a script inside the
namespace it copies a built demo state onto the tmpfs, serves it, and obeys one-line
commands on stdin (``fill``,
``free``, ``check SID``, ``quit``), answering each with a JSON line. The test talks HTTP to
the server from outside (the network namespace is shared) and asserts that:

- the turn that meets the full disk gets 503 with a one-line JSON error and Retry-After;
- ``/healthz`` still answers 200, with ``storage: "full"`` and ``status: "degraded"``;
- every acknowledged turn is stored, nothing else (no half-written turn), integrity ok;
- once space is freed the next turn succeeds, with no restart, and health is ``ok`` again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HEADROOM = 16 * 1024 * 1024  # free space on the tmpfs after the demo state is copied in


def _state_bytes(source: Path) -> int:
    """Bytes of the demo state the driver copies (the built models and the knowledge base)."""
    skip = ("sessions.db", "keys")
    return sum(
        p.stat().st_size for p in source.rglob("*") if p.is_file() and not p.name.startswith(skip)
    )


# -- the driver, inside the mount namespace ----------------------------------------------------
def _driver(mnt: Path, port: int, source: Path) -> None:  # pragma: no cover - subprocess
    sys.path.insert(0, str(REPO))
    import threading

    import uvicorn

    from assistant.api import Assistant
    from assistant.project import DEMO_ROOT, Project
    from assistant.server import ServerSettings, create_app, uvicorn_options
    from tests.reliability._diskfull import Ballast

    def say(**obj: Any) -> None:
        print(json.dumps(obj, default=str), flush=True)

    st = os.statvfs(mnt)
    if st.f_blocks * st.f_frsize > _state_bytes(source) + 2 * HEADROOM:
        say(refused=f"{mnt} is not a small filesystem")
        return
    state = mnt / "state"
    shutil.copytree(source, state, ignore=shutil.ignore_patterns("sessions.db*", "keys*"))
    bot = Assistant(
        Project(root=DEMO_ROOT, state=state, is_demo=True),
        entry_points=False,
        language_model=False,
    )
    settings = ServerSettings(port=port, demo_key=False, storage_retry_after_s=7)
    app = create_app(bot, settings=settings)
    app.state.keys.create_ephemeral(
        "widget", name="diskfull", rate_per_min=1e6, secret=os.environ["LLMOS_TEST_WIDGET_KEY"]
    )
    opts = uvicorn_options(settings, "warning")
    opts.update(host="127.0.0.1", log_config=None)
    server = uvicorn.Server(uvicorn.Config(app, **opts))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    while not server.started:
        time.sleep(0.05)
    ballast = Ballast(mnt / "ballast")
    say(ready=True, pid=os.getpid())
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "fill":
            ballast.fill(leave=int(arg))
            say(filled=len(ballast.files), free=os.statvfs(mnt).f_bavail * st.f_frsize)
        elif cmd == "free":
            ballast.free()
            say(freed=True)
        elif cmd == "check":
            turns = bot.store.turns(arg)
            say(
                turns=[[t.n, t.user_text, t.skill] for t in turns],
                integrity=bot.store.integrity_check(),
            )
        elif cmd == "quit":
            break
    server.should_exit = True
    th.join(timeout=10)
    bot.close()
    say(bye=True)


if __name__ == "__main__":
    _driver(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
    sys.exit(0)


# -- the test ----------------------------------------------------------------------------------
import httpx  # noqa: E402
import pytest  # noqa: E402


class Driver:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def read(self, timeout: float = 240) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                if "mount" in err or "unshare" in err:
                    pytest.skip(f"cannot mount a small tmpfs here: {err.strip()[:200]}")
                raise AssertionError(f"the server driver ended: {err[-3000:]}")
            if line.startswith("{"):
                return json.loads(line)
        raise AssertionError("the server driver did not answer")

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()


def test_full_disk_over_http_is_a_503_and_recovers_without_restart(demo_bot) -> None:
    from assistant.keys import generate_secret
    from tests.service.conftest import free_port

    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs util-linux unshare to mount a small tmpfs")
    key = generate_secret("widget")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    mnt = tempfile.mkdtemp(prefix="llmos-httpfs-")
    # sized to the demo state (its models and knowledge base) plus a little room to fill
    size = (_state_bytes(demo_bot.project.state) + HEADROOM) // 1024 + 1024
    inner = f'mount -t tmpfs -o size={size}k tmpfs "$0" && exec "$1" "$2" "$0" "$3" "$4"'
    flags = ["-m"] if os.geteuid() == 0 else ["-Urm"]
    cmd = [unshare, *flags, "sh", "-c", inner, mnt, sys.executable, __file__, str(port)]
    cmd.append(str(demo_bot.project.state))
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=dict(os.environ, LLMOS_TEST_WIDGET_KEY=key, OMP_NUM_THREADS="1"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    drv = Driver(proc)
    try:
        first = drv.read()
        if "refused" in first:
            pytest.skip(first["refused"])
        assert first.get("ready"), first
        c = httpx.Client(base_url=base, timeout=60, headers={"X-API-Key": key})
        r = c.post("/v1/chat", json={"message": "How do I track my order?"})
        assert r.status_code == 200, r.text
        sid = r.json()["session_id"]
        acked = ["How do I track my order?"]
        assert c.get("/healthz").json()["storage"] == "ok"

        filled = drv.ask("fill 98304")  # about 96 KiB left
        assert filled["filled"] > 0, filled
        failure: httpx.Response | None = None
        for i in range(400):
            text = f"How long does delivery take? (message {i}) " + " ".join(["padding"] * 180)
            r = c.post(
                "/v1/chat", json={"message": text, "session_id": sid, "idempotency_key": f"k{i}"}
            )
            if r.status_code != 200:
                failure = r
                break
            assert r.json()["turn"] == len(acked) + 1
            acked.append(text)
        assert failure is not None, "the disk never filled up"
        assert failure.status_code == 503, failure.text
        assert failure.headers["retry-after"] == "7"
        assert failure.headers["content-type"].startswith("application/json")
        assert "\n" not in failure.text and set(failure.json()) == {"error"}
        assert "full" in failure.json()["error"]
        assert "Traceback" not in failure.text and "sqlite" not in failure.text.lower()

        health = c.get("/healthz")
        assert health.status_code == 200
        assert health.json()["storage"] == "full" and health.json()["status"] == "degraded"
        # a new conversation cannot start either: the same clear answer, never a 500
        r = c.post("/v1/chat", json={"message": "How do I track my order?"})
        assert r.status_code in (200, 503), r.text

        check = drv.ask(f"check {sid}")
        assert check["integrity"] == "ok"
        stored = check["turns"]
        assert [t[1] for t in stored] == acked  # every acknowledged turn, nothing more
        assert [t[0] for t in stored] == list(range(1, len(acked) + 1))

        assert drv.ask("free") == {"freed": True}
        r = c.post(
            "/v1/chat",
            json={"message": "How do I track my order?", "session_id": sid},
        )
        assert r.status_code == 200, r.text
        assert r.json()["turn"] == len(acked) + 1
        health = c.get("/healthz").json()
        assert health["storage"] == "ok" and health["status"] == "ok"
        after = drv.ask(f"check {sid}")
        assert after["integrity"] == "ok" and len(after["turns"]) == len(acked) + 1
        c.close()
        assert drv.ask("quit") == {"bye": True}
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        shutil.rmtree(mnt, ignore_errors=True)
