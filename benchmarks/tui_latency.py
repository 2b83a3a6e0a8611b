"""Terminal UI latency: first frame, first answer after start, keystroke echo while streaming.

    .venv/bin/python benchmarks/tui_latency.py [--quick] [--runs N]

* first frame: a fresh Python process starts, imports ``tui.app`` and mounts ``ChatApp`` (headless
  ``run_test``); measured from process start. Baseline, side by side: the same process building
  the ``Assistant`` first and only then showing the UI (what a UI that loads before drawing does).
* first answer: in that process "hello" is sent right after the first frame (it waits in the
  queue while the real assistant loads: MiniLM, router, SQLite), time until the reply is shown.
* keystroke -> echo: while a scripted reply streams 20 chunks/s into the chat, time from a key
  event entering the app (the driver's path) until the prompt holds the character; baseline: the
  same on an idle app.

The project is a fresh ``llmos init`` project (knowledge on). Writes benchmarks/results/tui_latency.json.
Timings come from a 2-core CPU shared with other busy processes: expect noise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


# -- child process: one start-up measurement ----------------------------------------------
def _child(project: str, mode: str) -> None:
    t0 = time.perf_counter()
    sys.path.insert(0, str(REPO))
    from tui.app import ChatApp

    out: dict[str, float] = {}

    async def main() -> None:
        if mode == "eager":  # baseline: build the assistant, then draw
            from assistant.api import Assistant

            bot = Assistant.from_project(project)
            app = ChatApp(assistant=bot)
        else:
            app = ChatApp(project)
        async with app.run_test(size=(100, 30)) as pilot:
            out["first_frame_s"] = app.marks["mounted"] - t0
            app.prompt.load_text("hello")
            await pilot.press("enter")
            deadline = time.monotonic() + 600
            while "last_reply" not in app.marks and time.monotonic() < deadline:
                await pilot.pause(0.02)
            out["first_answer_s"] = app.marks.get("last_reply", float("nan")) - t0
            out["ready_s"] = app.marks.get("ready", float("nan")) - t0
            if app.bot is not None:
                app.bot.close()

    asyncio.run(main())
    print("RESULT " + json.dumps(out))


def _startup(project: Path, mode: str, home: Path) -> dict[str, float]:
    env = {
        **os.environ,
        "LLMOS_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    proc = subprocess.run(
        [sys.executable, __file__, "--_child", str(project), "--_mode", mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"child failed:\n{proc.stderr[-2000:]}")


# -- keystroke echo -------------------------------------------------------------------------
async def _echo_latency(n_keys: int, streaming: bool) -> list[float]:
    sys.path.insert(0, str(REPO))
    from textual import events

    from tests.tui.fakes import FakeAssistant
    from tui.app import ChatApp

    with tempfile.TemporaryDirectory() as tmp:
        bot = FakeAssistant(Path(tmp), delay=0.05, chunk=8)  # 20 chunks/s
        app = ChatApp(assistant=bot)
        lat: list[float] = []
        async with app.run_test(size=(100, 30)) as pilot:
            if streaming:
                app.prompt.load_text("tell me about delivery " * 3)
                await pilot.press("enter")
                while not bot.started.is_set():
                    await pilot.pause(0.01)
            for i in range(n_keys):
                if streaming and not app._replying:  # keep a reply streaming throughout
                    app.prompt.load_text("more about delivery please")
                    await pilot.press("enter")
                ch = "abcdefghij"[i % 10]
                before = app.prompt.text
                # the driver's path for a real key press (Pilot.press would also wait for the
                # whole app to go idle, which a streaming reply keeps from happening)
                t = time.perf_counter()
                app._driver.send_message(events.Key(ch, ch))
                while app.prompt.text == before:
                    await asyncio.sleep(0.0005)
                lat.append((time.perf_counter() - t) * 1000)
                await asyncio.sleep(0.03)
            app.bot.close()
        return lat


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one start-up run, 40 keystrokes")
    ap.add_argument("--runs", type=int, default=None, help="start-up runs per mode")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    ap.add_argument("--_mode", default="lazy", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        _child(args._child, args._mode)
        return
    runs = args.runs or (1 if args.quick else 3)
    n_keys = 40 if args.quick else 150

    sys.path.insert(0, str(REPO))
    from assistant.scaffold import scaffold

    startup: dict[str, list[dict[str, float]]] = {"lazy": [], "eager": []}
    with tempfile.TemporaryDirectory() as tmp:
        project = scaffold(Path(tmp) / "bot")
        home = Path(tmp) / "home"
        _startup(project, "lazy", home)  # warm-up: trains the router, ingests, fills caches
        for _ in range(runs):
            for mode in ("lazy", "eager"):
                startup[mode].append(_startup(project, mode, home))
    idle = asyncio.run(_echo_latency(n_keys, streaming=False))
    busy = asyncio.run(_echo_latency(n_keys, streaming=True))

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in startup[mode])

    rows = [
        ("first frame (s)", med("lazy", "first_frame_s"), med("eager", "first_frame_s")),
        (
            "first answer after start (s)",
            med("lazy", "first_answer_s"),
            med("eager", "first_answer_s"),
        ),
    ]
    print(
        f"\nllmos TUI latency ({runs} start-up run(s) per mode, median; 2-core shared CPU: noisy)"
    )
    print(f"{'metric':34} {'llmos (load in worker)':>24} {'baseline (load, then draw)':>28}")
    for name, a, b in rows:
        print(f"{name:34} {a:24.2f} {b:28.2f}")
    print(
        f"\n{'keystroke -> echo (ms)':34} {'while a reply streams':>24} {'baseline: idle app':>28}"
    )
    for label, q in (("median", 0.5), ("p95", 0.95), ("max", 1.0)):
        print(f"{'  ' + label:34} {_pct(busy, q):24.1f} {_pct(idle, q):28.1f}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "tui_latency",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "quick": args.quick,
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0],
            "note": "2-core CPU shared with other agents: timings are noisy",
        },
        "startup_runs": startup,
        "first_frame_s": {"llmos": rows[0][1], "baseline_eager": rows[0][2]},
        "first_answer_s": {"llmos": rows[1][1], "baseline_eager": rows[1][2]},
        "keystroke_echo_ms": {
            "streaming": {"median": _pct(busy, 0.5), "p95": _pct(busy, 0.95), "max": max(busy)},
            "idle": {"median": _pct(idle, 0.5), "p95": _pct(idle, 0.95), "max": max(idle)},
            "keys": n_keys,
        },
    }
    path = RESULTS / "tui_latency.json"
    tmp_path = path.with_suffix(".json.tmp")
    with open(tmp_path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp_path, path)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
