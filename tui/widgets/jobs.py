"""A progress panel for long work (ingest, training): bar with ETA, rate, loss sparkline."""

from __future__ import annotations

import time
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, ProgressBar, Sparkline

MAX_POINTS = 120


class JobPanel(Vertical):
    """Shows one running job; the app removes it when the job ends."""

    def __init__(self, title: str, unit: str = "items", loss: bool = False) -> None:
        super().__init__(classes="job")
        self.title = title
        self.unit = unit
        self.show_loss = loss
        self.losses: list[float] = []
        self.started = time.monotonic()
        self.done = 0
        self.total: int | None = None

    def compose(self) -> ComposeResult:
        yield Label(f"{self.title} — Esc cancels", classes="job-title", markup=False)
        yield ProgressBar(total=None, show_eta=True, classes="job-bar")
        yield Label("starting…", classes="job-info", markup=False)
        if self.show_loss:
            yield Sparkline([], classes="job-loss")

    def advance(self, done: int, total: int, info: dict[str, Any]) -> None:
        self.done, self.total = done, total
        self.query_one(ProgressBar).update(total=max(total, 1), progress=done)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = done / elapsed
        parts = [f"{done}/{total} {self.unit}", f"{rate:.1f}/s"]
        if rate > 0 and total > done:
            parts.append(f"ETA {_fmt((total - done) / rate)}")
        loss = info.get("loss")
        if isinstance(loss, int | float):
            self.losses.append(float(loss))
            del self.losses[:-MAX_POINTS]
            parts.append(f"loss {loss:.3f}")
            if self.show_loss:
                self.query_one(Sparkline).data = list(self.losses)
        path = info.get("path")
        if path:
            parts.append(str(path).rsplit("/", 1)[-1][:30])
        self.query_one(".job-info", Label).update(" · ".join(parts))


def _fmt(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
