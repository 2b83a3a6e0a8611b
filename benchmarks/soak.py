"""Soak: a real ``llmos serve`` on 127.0.0.1 at a steady request rate for a long time.

    .venv/bin/python benchmarks/soak.py [--quick] [--minutes 60] [--rate 20]

RELIABILITY F6: the NIGHTLY tier runs 5 minutes, the RELEASE tier 60 minutes at the same rate.
Why a soak and not another load level: leaks, growing sessions, lock build-up and slow drift only
show after many thousands of turns, and ``serve_load.py`` measures throughput, not stability.

* The server is the demo bot (``python -m assistant.cli serve``) in its own process with a fresh
  LLMOS_HOME, exactly as ``serve_load.py`` starts it (its helpers are reused).
* Open loop: operations start on a fixed schedule (``--rate`` per second) whether or not earlier
  ones have finished, so a slow server builds a queue instead of slowing the client down. The
  mix, per F6: a conversation opens with a first message (the server creates the session), goes
  on for 2 to 5 more FAQ questions, and ends by fetching its transcript.
* Per minute: requests, p50/p99 latency, errors, server RSS. At the end: every acknowledged turn
  must be stored exactly once (``serve_load.check_turns``), and every fetched transcript must
  hold the turns acknowledged before it.
* Side by side: the first window after warm-up against the last window (drift), RSS growth over
  the run (F6 target < 10 %), error rate (< 0.1 %), p99 for non-generative routes (< 250 ms).

Writes benchmarks/results/soak.json (and a per-minute series). Harness caps: loopback only,
at most ``MAX_REQUESTS`` requests and ``MAX_MINUTES`` minutes whatever the flags say.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

from serve_load import (  # noqa: E402
    FAQ,
    HOST,
    RESULTS,
    check_turns,
    demo_with_key,
    free_port,
    pct,
    questions,
    rss_mb,
    start_server,
    wait_healthy,
)

MAX_MINUTES = 120.0
MAX_REQUESTS = 200_000
MAX_IN_FLIGHT = 256  # an open loop against a stalled server must not grow without bound


class Window:
    """Figures of one reporting interval."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.lat_chat: list[float] = []
        self.lat_read: list[float] = []
        self.errors: list[str] = []
        self.dropped = 0  # schedule slots skipped because MAX_IN_FLIGHT was reached

    def summary(self, minute: int, rss: float) -> dict[str, Any]:
        lat = self.lat_chat + self.lat_read
        return {
            "minute": minute,
            "requests": len(lat) + len(self.errors),
            "chat": len(self.lat_chat),
            "transcripts": len(self.lat_read),
            "errors": len(self.errors),
            "error_kinds": dict(Counter(self.errors)),
            "dropped_slots": self.dropped,
            "p50_ms": round(pct(lat, 50) * 1000, 1),
            "p99_ms": round(pct(lat, 99) * 1000, 1),
            "chat_p99_ms": round(pct(self.lat_chat, 99) * 1000, 1),
            "rss_mb": round(rss, 1),
        }


async def soak(
    base: str, key: str, qs: list[str], rate: float, seconds: float, seed: int, pid: int
) -> dict[str, Any]:
    import httpx

    rng = random.Random(seed)
    run = f"soak{seed:x}{random.randrange(1 << 32):08x}"
    acked: dict[str, list[tuple[int, str]]] = {}
    transcript_gaps = 0
    windows: list[dict[str, Any]] = []
    win = Window(time.perf_counter())
    all_chat: list[float] = []
    all_read: list[float] = []
    errors_total = 0
    conv_no = 0
    headers = {"X-API-Key": key}
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=64)
    pending: set[asyncio.Task[None]] = set()

    async def timed(coro: Any) -> tuple[float, Any]:
        t = time.perf_counter()
        r = await coro
        return time.perf_counter() - t, r

    async def conversation(client: httpx.AsyncClient, n: int, w_ref: list[Window]) -> None:
        """One customer: several questions, spaced on the global schedule, then the transcript."""
        nonlocal errors_total, transcript_gaps
        crng = random.Random(seed * 7919 + n)
        sid: str | None = None
        mine: list[tuple[int, str]] = []
        for k in range(crng.randint(3, 6)):
            q = crng.choice(qs)
            body = {"message": q, "session_id": sid, "idempotency_key": f"{run}-{n}-{k}"}
            try:
                dt, r = await timed(client.post("/v1/chat", json=body, headers=headers))
            except httpx.HTTPError as exc:
                w_ref[0].errors.append(type(exc).__name__)
                errors_total += 1
                return
            if r.status_code != 200 or r.json().get("timed_out"):
                w_ref[0].errors.append("timed_out" if r.status_code == 200 else str(r.status_code))
                errors_total += 1
                return
            out = r.json()
            sid = out["session_id"]
            mine.append((out["turn"], q))
            acked.setdefault(sid, []).append((out["turn"], q))
            w_ref[0].lat_chat.append(dt)
            all_chat.append(dt)
            await asyncio.sleep(crng.expovariate(rate / 4))  # think time: the customer reads
        try:
            dt, r = await timed(client.get(f"/v1/sessions/{sid}", headers=headers))
        except httpx.HTTPError as exc:
            w_ref[0].errors.append(type(exc).__name__)
            errors_total += 1
            return
        if r.status_code != 200:
            w_ref[0].errors.append(str(r.status_code))
            errors_total += 1
            return
        w_ref[0].lat_read.append(dt)
        all_read.append(dt)
        got = {(t["n"], t["user"]) for t in r.json()["turns"]}
        transcript_gaps += sum(1 for t in mine if t not in got)

    async def guarded(client: httpx.AsyncClient, n: int, w_ref: list[Window]) -> None:
        """A harness bug (bad JSON, a missing field) counts as an error, never vanishes."""
        nonlocal errors_total
        try:
            await conversation(client, n, w_ref)
        except Exception as exc:  # reported in the figures
            w_ref[0].errors.append(f"harness:{type(exc).__name__}")
            errors_total += 1

    # A conversation sends about 5.5 requests; start conversations so requests arrive at `rate`.
    conv_rate = rate / 5.5
    w_ref = [win]
    t0 = time.perf_counter()
    next_start = t0
    minute = 0
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        while time.perf_counter() - t0 < seconds:
            now = time.perf_counter()
            if now >= next_start:
                next_start += rng.expovariate(conv_rate)
                if len(pending) >= MAX_IN_FLIGHT:
                    w_ref[0].dropped += 1
                else:
                    conv_no += 1
                    task = asyncio.create_task(guarded(client, conv_no, w_ref))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
            if now - w_ref[0].start >= 60:
                minute += 1
                windows.append(w_ref[0].summary(minute, rss_mb(pid)))
                s = windows[-1]
                print(
                    f"  min {minute:>3}  {s['requests'] / 60:5.1f} req/s  p50 {s['p50_ms']:6.1f} ms"
                    f"  p99 {s['p99_ms']:7.1f} ms  errors {s['errors']}  rss {s['rss_mb']:.0f} MB"
                    f"  in flight {len(pending)}  load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
                w_ref[0] = Window(now)
            await asyncio.sleep(max(0.0, min(next_start - time.perf_counter(), 0.05)))
        if pending:
            await asyncio.wait(pending, timeout=120)
    wall = time.perf_counter() - t0
    total = len(all_chat) + len(all_read) + errors_total
    return {
        "wall_s": round(wall, 1),
        "conversations": conv_no,
        "requests": total,
        "rps": round(total / wall, 2),
        "chat_turns": len(all_chat),
        "transcripts": len(all_read),
        "errors": errors_total,
        "error_kinds": dict(
            sum((Counter(w["error_kinds"]) for w in windows), Counter(w_ref[0].errors))
        ),
        "error_rate": round(errors_total / max(total, 1), 5),
        "transcript_gaps": transcript_gaps,
        "p50_ms": round(pct(all_chat + all_read, 50) * 1000, 1),
        "p99_ms": round(pct(all_chat + all_read, 99) * 1000, 1),
        "chat_p99_ms": round(pct(all_chat, 99) * 1000, 1),
        "transcript_p99_ms": round(pct(all_read, 99) * 1000, 1),
        "windows": windows,
        "_acked": acked,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 minutes (a smoke run)")
    ap.add_argument("--minutes", type=float, default=60.0, help="RELEASE 60, NIGHTLY 5")
    ap.add_argument("--rate", type=float, default=20.0, help="requests per second (F6: 20)")
    ap.add_argument("--threads", type=int, default=4, help="server turn threads")
    ap.add_argument("--data", type=Path, default=FAQ, help="FAQ csv with a question column")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    args = ap.parse_args()

    minutes = min(2.0 if args.quick else args.minutes, MAX_MINUTES)
    if args.rate <= 0 or args.rate * minutes * 60 > MAX_REQUESTS:
        raise SystemExit(f"rate x duration must stay within {MAX_REQUESTS} requests")
    qs = questions(args.data)
    home = Path(tempfile.mkdtemp(prefix="llmos-soak-"))
    proj, key = demo_with_key(home, "soak")

    port = free_port()
    base = f"http://{HOST}:{port}"
    proc = start_server(home, port, 1, args.threads)
    try:
        startup = wait_healthy(base, proc)
        print(f"server ready in {startup:.1f}s on {base}; {minutes:g} min at {args.rate:g} req/s")
        rss_start = rss_mb(proc.pid)
        res = asyncio.run(soak(base, key, qs, args.rate, minutes * 60, args.seed, proc.pid))
        rss_end = rss_mb(proc.pid)
        health = __import__("httpx").get(base + "/healthz", timeout=10).json()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    acked = res.pop("_acked")
    res.update(check_turns(proj.sessions_db, acked))
    wins = res["windows"]
    # RSS growth is measured from the end of the first window: start-up allocations
    # (model, index, caches) are not a leak.
    rss_ref = wins[0]["rss_mb"] if wins else rss_start
    res.update(
        {
            "minutes": minutes,
            "target_rate": args.rate,
            "server_startup_s": round(startup, 1),
            "rss_mb_start": round(rss_start, 1),
            "rss_mb_after_first_minute": rss_ref,
            "rss_mb_end": round(rss_end, 1),
            "rss_growth_pct": round(100 * (rss_end - rss_ref) / rss_ref, 1),
            "healthz_end": health.get("status"),
            "load_avg_end": [round(x, 2) for x in os.getloadavg()],
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")

    first, last = (wins[0], wins[-1]) if wins else ({}, {})
    print()
    print(f"{'':28}{'first minute':>14}{'last minute':>14}{'whole run':>12}{'target':>12}")
    rows = [
        ("requests/s", "requests", res["rps"], f">= {0.95 * args.rate:g}"),
        ("p50 ms", "p50_ms", res["p50_ms"], ""),
        ("p99 ms", "p99_ms", res["p99_ms"], "< 250"),
        ("errors", "errors", res["errors"], "< 0.1 %"),
        ("server RSS MB", "rss_mb", res["rss_mb_end"], "< +10 %"),
    ]
    for label, k, whole, target in rows:
        a, b = first.get(k, float("nan")), last.get(k, float("nan"))
        if k == "requests":
            a, b = a / 60, b / 60
        print(f"{label:28}{a:>14.1f}{b:>14.1f}{whole:>12}{target:>12}")
    print(
        f"\nturns acknowledged {res['chat_turns']}, lost {res['lost']}, duplicated "
        f"{res['duplicated']}, transcript gaps {res['transcript_gaps']}; error rate "
        f"{100 * res['error_rate']:.3f} %; RSS growth {res['rss_growth_pct']} %; "
        f"/healthz at the end: {res['healthz_end']}"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
