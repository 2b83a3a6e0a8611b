"""Slow clients and connection exhaustion (RELIABILITY F8) against a real ``llmos serve``.

    .venv/bin/python benchmarks/slow_clients.py [--quick] [--idle 200] [--slow 50]
                                                [--duration S] [--home DIR]

* The server is the demo bot started with ``python -m assistant.cli serve`` on 127.0.0.1 in
  its own process: the shipped uvicorn configuration (``limit_concurrency``,
  ``timeout_keep_alive``, a request-head deadline and a body deadline; see
  ``assistant.server.uvicorn_options``).
* Baseline, side by side in the same run: ``/healthz`` and a FAQ chat turn probed on an
  otherwise idle server.
* Then the F8 shape, bounded at 60 s whatever the flags say: ``--idle`` keep-alive
  connections that make one request and then sit idle, and ``--slow`` uploads that send a
  ``POST /v1/chat`` body at 1 byte a second. Both reconnect when the server cuts them off,
  as an attacker would, so the pressure stays on for the whole run. ``/healthz`` is probed
  about 20 times a second and a chat turn about once a second meanwhile.
* Reported: ``/healthz`` and chat p50/p99 (idle vs. under slow clients), errors, and what
  the attackers saw (server closes of idle connections, 408s to slow bodies).

Writes benchmarks/results/slow_clients.json. The machine has 2 cores shared with other work:
the load average is recorded with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serve_load
from serve_load import HOST, demo_with_key, free_port, pct, wait_healthy

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MAX_SECONDS = 60.0  # the attack phase, whatever --duration says
MAX_CONNECTIONS = 400  # idle + slow, whatever the flags say
QUESTION = "How do I track my order?"


def start_server(home: Path, port: int) -> subprocess.Popen[str]:
    """The real ``llmos serve`` on loopback, as serve_load starts it (1 worker, 4 threads)."""
    return serve_load.start_server(home, port, workers=1, threads=4)


# -- probes ---------------------------------------------------------------------------------
async def request(port: int, method: str, path: str, body: bytes = b"", key: str = "") -> int:
    """One request on a fresh connection (a new visitor), read to the end; its status."""
    r, w = await asyncio.open_connection(HOST, port)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n"
        if key:
            head += f"X-API-Key: {key}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        w.write(head.encode() + b"\r\n" + body)
        await w.drain()
        data = await asyncio.wait_for(r.read(), 30)
        return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    finally:
        w.close()


async def probe(port: int, key: str, seconds: float) -> dict[str, Any]:
    """``/healthz`` about 20/s and a chat turn about 1/s, each on a fresh connection, for
    ``seconds``; latency includes the connect, as a new visitor would see it."""
    health: list[float] = []
    chat: list[float] = []
    errors: list[str] = []
    end = time.perf_counter() + seconds
    chat_body = json.dumps({"message": QUESTION}).encode()

    async def loop(samples: list[float], every: float, what: str, call: Any) -> None:
        while time.perf_counter() < end:
            t = time.perf_counter()
            try:
                status = await call()
            except (OSError, TimeoutError) as exc:
                errors.append(f"{what} {type(exc).__name__}")
            else:
                if status == 200:
                    samples.append(time.perf_counter() - t)
                else:
                    errors.append(f"{what} {status}")
            await asyncio.sleep(max(0.0, every - (time.perf_counter() - t)))

    await asyncio.gather(
        loop(health, 0.05, "healthz", lambda: request(port, "GET", "/healthz")),
        loop(chat, 1.0, "chat", lambda: request(port, "POST", "/v1/chat", chat_body, key)),
    )
    return {
        "healthz_n": len(health),
        "healthz_p50_ms": round(pct(health, 50) * 1000, 2),
        "healthz_p99_ms": round(pct(health, 99) * 1000, 2),
        "chat_n": len(chat),
        "chat_p50_ms": round(pct(chat, 50) * 1000, 1),
        "chat_p99_ms": round(pct(chat, 99) * 1000, 1),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
    }


# -- attackers ------------------------------------------------------------------------------
async def idle_client(port: int, end: float, stats: dict[str, int]) -> None:
    """One request, then idle on the keep-alive connection; reconnect when cut off."""
    while time.perf_counter() < end:
        try:
            r, w = await asyncio.open_connection(HOST, port)
        except OSError:
            stats["connect_failed"] += 1
            await asyncio.sleep(0.5)
            continue
        stats["idle_opened"] += 1
        try:
            w.write(f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            await w.drain()
            while True:  # the response, then nothing until the server closes the connection
                left = end - time.perf_counter()
                if left <= 0:
                    return
                try:
                    data = await asyncio.wait_for(r.read(4096), left)
                except TimeoutError:
                    return
                if data == b"":
                    stats["idle_closed_by_server"] += 1
                    break
        except (OSError, TimeoutError):
            stats["idle_errors"] += 1
        finally:
            w.close()


async def slow_upload(port: int, key: str, end: float, stats: dict[str, int]) -> None:
    """A ``POST /v1/chat`` whose body comes at 1 byte a second; reconnect when answered."""
    body = json.dumps({"message": "x" * 980}).encode()
    head = (
        f"POST /v1/chat HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {key}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    while time.perf_counter() < end:
        try:
            r, w = await asyncio.open_connection(HOST, port)
        except OSError:
            stats["connect_failed"] += 1
            await asyncio.sleep(0.5)
            continue
        stats["slow_opened"] += 1
        try:
            w.write(head)
            await w.drain()
            for i in range(len(body)):
                if time.perf_counter() >= end:
                    return
                try:
                    got = await asyncio.wait_for(r.read(256), 1.0)
                except TimeoutError:
                    w.write(body[i : i + 1])
                    await w.drain()
                    continue
                status = got.split(b"\r\n", 1)[0].decode("latin-1") if got else "closed"
                key_ = "slow_408" if " 408 " in status else "slow_other_" + status[:40]
                stats[key_] = stats.get(key_, 0) + 1
                break
        except OSError:
            stats["slow_errors"] += 1
        finally:
            w.close()


async def attack(
    base: str, port: int, key: str, idle: int, slow: int, seconds: float
) -> dict[str, Any]:
    end = time.perf_counter() + seconds
    stats: dict[str, int] = {
        "idle_opened": 0,
        "idle_closed_by_server": 0,
        "idle_errors": 0,
        "slow_opened": 0,
        "slow_408": 0,
        "slow_errors": 0,
        "connect_failed": 0,
    }
    tasks = [asyncio.create_task(idle_client(port, end, stats)) for _ in range(idle)]
    tasks += [asyncio.create_task(slow_upload(port, key, end, stats)) for _ in range(slow)]
    await asyncio.sleep(min(3.0, seconds / 4))  # let the connections pile up first
    measured = await probe(port, key, max(1.0, end - time.perf_counter()))
    await asyncio.wait(tasks, timeout=15)
    for t in tasks:
        t.cancel()
    return {**measured, "attackers": stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10 s idle baseline, 20 s attack")
    ap.add_argument("--idle", type=int, default=200, help="idle keep-alive connections")
    ap.add_argument("--slow", type=int, default=50, help="1-byte-a-second uploads")
    ap.add_argument("--duration", type=float, default=None, help="attack seconds (cap 60)")
    ap.add_argument("--home", type=Path, default=None, help="LLMOS_HOME to reuse (default: temp)")
    ap.add_argument("--out", type=Path, default=RESULTS / "slow_clients.json")
    args = ap.parse_args()
    if args.idle < 0 or args.slow < 0 or args.idle + args.slow > MAX_CONNECTIONS:
        raise SystemExit(f"--idle + --slow must be 0..{MAX_CONNECTIONS}")
    seconds = min(args.duration or (20.0 if args.quick else 60.0), MAX_SECONDS)
    idle_s = 10.0 if args.quick else 20.0

    home = args.home or Path(tempfile.mkdtemp(prefix="llmos-slow-clients-"))
    _, key = demo_with_key(home, "slow_clients")
    from assistant.server import ServerSettings

    shipped = ServerSettings()

    port = free_port()
    base = f"http://{HOST}:{port}"
    load_before = os.getloadavg()
    proc = start_server(home, port)
    try:
        startup = wait_healthy(base, proc)
        print(f"server ready in {startup:.1f}s on {base} (LLMOS_HOME {home})", flush=True)
        asyncio.run(probe(port, key, 3.0))  # warm-up, not reported
        idle = asyncio.run(probe(port, key, idle_s))
        print(f"  idle server: healthz p99 {idle['healthz_p99_ms']} ms", flush=True)
        under = asyncio.run(attack(base, port, key, args.idle, args.slow, seconds))
        alive = proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    load_after = os.getloadavg()

    print()
    head = f"{'':>30} {'healthz p50':>11} {'p99 ms':>8} {'chat p50':>9} {'p99 ms':>8} {'errors':>7}"
    print(head)
    for name, r in (
        ("idle server (baseline)", idle),
        (f"{args.idle} idle + {args.slow} slow", under),
    ):
        print(
            f"{name:>30} {r['healthz_p50_ms']:>11.2f} {r['healthz_p99_ms']:>8.2f} "
            f"{r['chat_p50_ms']:>9.1f} {r['chat_p99_ms']:>8.1f} {r['errors']:>7}"
        )
    print(f"attackers: {under['attackers']}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (2 cores)")
    out = {
        "benchmark": "slow_clients",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": args.quick,
        "idle_connections": args.idle,
        "slow_uploads": args.slow,
        "attack_seconds": seconds,
        "baseline_seconds": idle_s,
        "server": {
            "limit_concurrency": shipped.limit_concurrency,
            "timeout_keep_alive": shipped.timeout_keep_alive,
            "headers_timeout_s": shipped.headers_timeout_s,
            "body_timeout_s": shipped.body_timeout_s,
            "startup_s": round(startup, 1),
            "alive_after": alive,
        },
        "cpu_count": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "baseline_idle": idle,
        "under_slow_clients": under,
        "targets": {"healthz_p99_ms": 500, "errors": 0},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
