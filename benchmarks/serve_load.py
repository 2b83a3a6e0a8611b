"""HTTP service load: FAQ questions against a real ``llmos serve`` on 127.0.0.1.

    .venv/bin/python benchmarks/serve_load.py [--quick] [--concurrency 1,8,32]
                                              [--requests N] [--duration S] [--workers K]

* The server is the demo bot started with ``python -m assistant.cli serve`` in its own process
  (a fresh LLMOS_HOME unless ``--home``), with a widget key whose rate limit is out of the way.
* At each concurrency level C, C virtual customers each hold one conversation and ask FAQ
  questions from ``assistant/demo/knowledge/faq.csv`` back to back (httpx.AsyncClient, one
  connection each, an idempotency key per message). A level stops after ``--requests``
  requests or ``--duration`` seconds, whichever comes first; the harness caps both
  (MAX_REQUESTS, MAX_SECONDS) whatever the flags say, and refuses non-loopback targets.
* Reported per level: answered requests/s, p50/p90/p99 latency, errors, timeouts, server RSS
  (before/after), and lost turns: afterwards every acknowledged turn must be in the session
  store exactly once, with the acknowledged number and text.
* Baseline, side by side in the same run: the same questions through ``Assistant.chat`` in
  this process, one after another (no HTTP): the floor the HTTP layer adds to.

Writes benchmarks/results/serve_load.json. The machine has 2 cores shared with other work:
the load average is recorded with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
FAQ = REPO / "assistant" / "demo" / "knowledge" / "faq.csv"
MAX_REQUESTS = 20_000  # per level, whatever --requests says
MAX_SECONDS = 120.0  # per level, whatever --duration says
HOST = "127.0.0.1"


def questions(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as f:
        return [row["question"] for row in csv.DictReader(f) if row.get("question")]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def rss_mb(pid: int) -> float:
    import psutil

    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            total += child.memory_info().rss
        return total / 2**20
    except psutil.Error:
        return float("nan")


# -- the server ---------------------------------------------------------------------------
def demo_with_key(home: Path, name: str) -> tuple[Any, str]:
    """The demo project under ``LLMOS_HOME=home`` and a widget key whose rate limit is out of
    the way (the harness measures the server, not the limiter): ``(project, key)``."""
    home.mkdir(parents=True, exist_ok=True)
    os.environ["LLMOS_HOME"] = str(home)
    sys.path.insert(0, str(REPO))
    from assistant.keys import KeyStore
    from assistant.project import demo_project

    proj = demo_project()
    proj.ensure_dirs()
    ks = KeyStore.for_project(proj)
    key = ks.create("widget", name=name, rate_per_min=10_000_000)[1]
    ks.close()
    return proj, key


def start_server(home: Path, port: int, workers: int, threads: int) -> subprocess.Popen[str]:
    assert HOST in {"127.0.0.1", "::1", "localhost"}, "load tests run on loopback only"
    env = {
        **os.environ,
        "LLMOS_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [sys.executable, "-m", "assistant.cli", "serve", "--host", HOST, "--port", str(port)]
    cmd += ["--threads", str(threads)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    log = open(home / "server.log", "w")  # noqa: SIM115 - lives as long as the server
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def wait_healthy(base: str, proc: subprocess.Popen[str], timeout: float = 600) -> float:
    import httpx

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; see its log")
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit("server did not become healthy")


# -- one load level -----------------------------------------------------------------------
async def run_level(
    base: str, key: str, qs: list[str], concurrency: int, max_requests: int, max_s: float, seed: int
) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    timeouts = 0
    acked: dict[str, list[tuple[int, str]]] = {}
    sent = 0
    deadline = time.perf_counter() + max_s
    run = f"{seed:x}{random.randrange(1 << 32):08x}"  # idempotency keys unique to this run

    async def customer(i: int) -> None:
        nonlocal sent, timeouts
        rng = random.Random(seed * 1000 + i)
        sid: str | None = None
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
            k = 0
            while sent < max_requests and time.perf_counter() < deadline:
                sent += 1
                k += 1
                q = rng.choice(qs)
                body = {"message": q, "session_id": sid, "idempotency_key": f"{run}-c{i}-m{k}"}
                t = time.perf_counter()
                try:
                    r = await client.post("/v1/chat", json=body, headers={"X-API-Key": key})
                except httpx.HTTPError as exc:
                    errors.append(type(exc).__name__)
                    continue
                dt = time.perf_counter() - t
                if r.status_code != 200:
                    errors.append(str(r.status_code))
                    continue
                out = r.json()
                if out["timed_out"]:
                    timeouts += 1
                    continue
                latencies.append(dt)
                sid = out["session_id"]
                acked.setdefault(sid, []).append((out["turn"], q))

    t0 = time.perf_counter()
    await asyncio.gather(*(customer(i) for i in range(concurrency)))
    wall = time.perf_counter() - t0
    return {
        "concurrency": concurrency,
        "requests": sent,
        "answered": len(latencies),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "timeouts": timeouts,
        "wall_s": round(wall, 3),
        "rps": round(len(latencies) / wall, 1) if wall else 0.0,
        "p50_ms": round(pct(latencies, 50) * 1000, 1),
        "p90_ms": round(pct(latencies, 90) * 1000, 1),
        "p99_ms": round(pct(latencies, 99) * 1000, 1),
        "_acked": acked,
    }


def check_turns(db: Path, acked: dict[str, list[tuple[int, str]]]) -> dict[str, int]:
    """Every acknowledged turn is stored once, with its number and text; nothing else is."""
    from assistant.sessions import SessionStore

    store = SessionStore(db)
    lost = dup = extra = 0
    try:
        for sid, turns in acked.items():
            stored = store.turns(sid)
            by_n: dict[int, list[str]] = {}
            for t in stored:
                by_n.setdefault(t.n, []).append(t.user_text)
            for n, text in turns:
                got = by_n.get(n, [])
                if text not in got:
                    lost += 1
                elif len(got) > 1:
                    dup += 1
            extra += max(0, len(stored) - len(turns))
    finally:
        store.close()
    return {"lost": lost, "duplicated": dup, "unacknowledged_extra": extra}


# -- the baseline -------------------------------------------------------------------------
def baseline(home: Path, qs: list[str], n: int, max_s: float, seed: int) -> dict[str, Any]:
    os.environ["LLMOS_HOME"] = str(home)
    from assistant.api import Assistant

    bot = Assistant.demo(entry_points=False, language_model=False)
    rng = random.Random(seed)
    try:
        for q in qs[:5]:  # warm-up
            bot.chat(q)
        sid = bot.new_session()
        lat: list[float] = []
        t0 = time.perf_counter()
        while len(lat) < n and time.perf_counter() - t0 < max_s:
            q = rng.choice(qs)
            t = time.perf_counter()
            bot.chat(q, sid)
            lat.append(time.perf_counter() - t)
            if len(lat) % 200 == 0:
                sid = bot.new_session()  # keep sessions the size the HTTP run has
        wall = time.perf_counter() - t0
    finally:
        bot.close()
    return {
        "answered": len(lat),
        "wall_s": round(wall, 3),
        "rps": round(len(lat) / wall, 1),
        "p50_ms": round(pct(lat, 50) * 1000, 2),
        "p90_ms": round(pct(lat, 90) * 1000, 2),
        "p99_ms": round(pct(lat, 99) * 1000, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="300 requests or 20 s per level")
    ap.add_argument("--concurrency", default="1,8,32", help="comma-separated levels")
    ap.add_argument("--requests", type=int, default=None, help="per level (cap 20000)")
    ap.add_argument("--duration", type=float, default=None, help="seconds per level (cap 120)")
    ap.add_argument("--workers", type=int, default=1, help="server worker processes")
    ap.add_argument("--threads", type=int, default=4, help="server turn threads per worker")
    ap.add_argument("--data", type=Path, default=FAQ, help="FAQ csv with a question column")
    ap.add_argument("--home", type=Path, default=None, help="LLMOS_HOME to reuse (default: temp)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--no-baseline", action="store_true", help="skip the in-process loop")
    ap.add_argument("--out", type=Path, default=RESULTS / "serve_load.json")
    args = ap.parse_args()

    n_req = min(args.requests or (300 if args.quick else 2000), MAX_REQUESTS)
    dur = min(args.duration or (20.0 if args.quick else 60.0), MAX_SECONDS)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if any(c < 1 or c > 256 for c in levels):
        raise SystemExit("concurrency levels must be 1..256")
    qs = questions(args.data)
    home = args.home or Path(tempfile.mkdtemp(prefix="llmos-serve-load-"))
    proj, key = demo_with_key(home, "serve_load")

    port = free_port()
    base = f"http://{HOST}:{port}"
    load_before = os.getloadavg()
    proc = start_server(home, port, args.workers, args.threads)
    results: dict[str, Any] = {}
    try:
        startup = wait_healthy(base, proc)
        print(f"server ready in {startup:.1f}s on {base} (LLMOS_HOME {home})")
        rss0 = rss_mb(proc.pid)
        asyncio.run(run_level(base, key, qs, 4, 40, 30, args.seed))  # warm-up, not reported
        levels_out = []
        all_acked: dict[str, list[tuple[int, str]]] = {}
        for c in levels:
            before = rss_mb(proc.pid)
            r = asyncio.run(run_level(base, key, qs, c, n_req, dur, args.seed + c))
            r["rss_mb_before"] = round(before, 1)
            r["rss_mb_after"] = round(rss_mb(proc.pid), 1)
            acked = r.pop("_acked")
            r.update(check_turns(proj.sessions_db, acked))
            all_acked.update(acked)
            levels_out.append(r)
            print(
                f"  c={c:<3} {r['rps']:>7.1f} req/s  p50 {r['p50_ms']:>7.1f} ms  "
                f"p99 {r['p99_ms']:>7.1f} ms  errors {r['errors']}  lost {r['lost']}",
                flush=True,
            )
        rss_end = rss_mb(proc.pid)
        results = {
            "server_startup_s": round(startup, 1),
            "rss_mb_start": round(rss0, 1),
            "rss_mb_end": round(rss_end, 1),
            "levels": levels_out,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    base_r = (
        {"answered": 0, "rps": float("nan"), "p50_ms": float("nan"), "p99_ms": float("nan")}
        if args.no_baseline
        else baseline(home, qs, n_req, dur, args.seed)
    )
    load_after = os.getloadavg()

    print()
    print(
        f"{'':>22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'lost':>5} {'RSS MB':>8}"
    )
    print(
        f"{'in-process chat loop':>22} {base_r['rps']:>8.1f} {base_r['p50_ms']:>8.2f} "
        f"{base_r['p99_ms']:>8.2f} {0:>7} {'-':>5} {'-':>8}"
    )
    for r in results["levels"]:
        print(
            f"{'HTTP c=' + str(r['concurrency']):>22} {r['rps']:>8.1f} {r['p50_ms']:>8.1f} "
            f"{r['p99_ms']:>8.1f} {r['errors']:>7} {r['lost']:>5} {r['rss_mb_after']:>8.1f}"
        )
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (2 cores)")
    out = {
        "benchmark": "serve_load",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": args.quick,
        "requests_per_level": n_req,
        "seconds_per_level": dur,
        "workers": args.workers,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "baseline_in_process": base_r,
        **results,
        "targets": {"rps": 100, "p99_ms": 200, "errors": 0, "lost": 0},
        "total_answered": sum(r["answered"] for r in results["levels"]),
        "median_rps": statistics.median([r["rps"] for r in results["levels"]]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
