"""Fixtures for the crash, disk-full and hostile-input tests (RELIABILITY.md A1-A3, C, E1)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


class SessionClock:
    """``time`` for the session store: a fixed ``now`` (rows of one phase share a timestamp)
    or the real clock, shifted by ``offset`` (sessions made "days ago")."""

    def __init__(self) -> None:
        self.now: float | None = None
        self.offset = 0.0

    def time(self) -> float:
        return (time.time() if self.now is None else self.now) + self.offset

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SessionClock:
    from assistant import sessions, sqlite_tx

    c = SessionClock()
    monkeypatch.setattr(sessions, "time", c)
    monkeypatch.setattr(sqlite_tx, "time", c)
    return c


@pytest.fixture
def seed() -> int:
    """A random seed, printed (shown on failure); replay with LLMOS_RELIABILITY_SEED=<seed>."""
    value = int(os.environ.get("LLMOS_RELIABILITY_SEED") or random.randrange(2**31))
    print(f"seed={value} (replay: LLMOS_RELIABILITY_SEED={value})")
    return value


def run_on_small_fs(scenario: str, size: str = "4m", timeout: float = 240) -> dict[str, Any]:
    """Run ``_diskfull.py SCENARIO`` on a fresh ``size`` tmpfs in a private mount namespace.

    Skips (with the reason) where a tmpfs cannot be mounted: no ``unshare``, or a container
    that forbids mount namespaces even to root / to user namespaces.
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs util-linux unshare to mount a small tmpfs")
    mnt = tempfile.mkdtemp(prefix="llmos-fs-")
    try:
        script = REPO / "tests" / "reliability" / "_diskfull.py"
        inner = f'mount -t tmpfs -o size={size} tmpfs "$0" && exec "$1" "$2" "$3" "$0"'
        flags = ["-m"] if os.geteuid() == 0 else ["-Urm"]
        cmd = [unshare, *flags, "sh", "-c", inner, mnt, sys.executable, str(script), scenario]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            if "mount" in proc.stderr or "unshare" in proc.stderr:
                pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip()[:200]}")
            raise AssertionError(f"scenario {scenario} printed nothing: {proc.stderr[-3000:]}")
        result = json.loads(lines[-1])
        if "refused" in result:
            pytest.skip(result["refused"])
        assert "crashed" not in result, result.get("crashed")
        return result
    finally:
        shutil.rmtree(mnt, ignore_errors=True)


@pytest.fixture(scope="module")
def fault() -> Iterator[Any]:
    """The SQLite fault-injecting VFS (``_faultvfs``), installed as the default for one test
    module; skipped where the stdlib ``sqlite3`` cannot be reached through ctypes."""
    from tests.reliability._faultvfs import FaultVfsUnavailable, install

    try:
        f = install()
    except FaultVfsUnavailable as exc:
        pytest.skip(str(exc))
    yield f
    f.disarm()
    f.set_root(None)
    f.restore_default()  # later tests' connections use the plain default VFS again
