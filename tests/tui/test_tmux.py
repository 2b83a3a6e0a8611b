"""Smoke test: the real ``llmos chat`` in a real terminal (tmux), read back with capture-pane."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

LLMOS = Path(sys.executable).parent / "llmos"

# Not marked slow: about 40 s here (mostly MiniLM loading); under heavy load it took ~2 min.
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def _capture(name: str) -> str:
    return subprocess.run(
        ["tmux", "capture-pane", "-p", "-t", name], capture_output=True, text=True, check=False
    ).stdout


def _wait_screen(name: str, pattern: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = _capture(name)
        if re.search(pattern, screen):
            return screen
        time.sleep(0.5)
    raise AssertionError(f"{pattern!r} did not appear; screen:\n{screen}")


def test_llmos_chat_answers_in_tmux(tmp_path):
    from assistant.scaffold import scaffold

    project = scaffold(tmp_path / "bot")
    name = f"llmos-{uuid.uuid4().hex[:8]}"
    cmd = (
        f"env LLMOS_HOME={shlex.quote(str(tmp_path / 'home'))} TERM=xterm-256color "
        f"{shlex.quote(str(LLMOS))} chat --project {shlex.quote(str(project))}"
    )
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", name, "-x", "100", "-y", "30", cmd], check=True
    )
    try:
        t0 = time.monotonic()
        _wait_screen(name, r"loading models|ready", 30)  # the first frame, before models load
        first_frame = time.monotonic() - t0
        subprocess.run(["tmux", "send-keys", "-t", name, "hello", "Enter"], check=True)
        screen = _wait_screen(name, r"smalltalk · \d+%", 400)  # queued, answered once loaded
        assert "you" in screen and "hello" in screen
        assert first_frame < 30
        subprocess.run(["tmux", "send-keys", "-t", name, "C-q"], check=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            alive = subprocess.run(["tmux", "has-session", "-t", name], capture_output=True)
            if alive.returncode != 0:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("llmos chat did not quit on Ctrl+Q")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, check=False)
