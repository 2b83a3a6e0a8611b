"""Fixtures for the terminal UI tests: a scripted assistant and a real one on a tiny project."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tui.fakes import FakeAssistant


@pytest.fixture
def fake_bot(tmp_path: Path):
    bot = FakeAssistant(tmp_path / "fake")
    yield bot
    bot.release.set()
    bot.close()


@pytest.fixture(scope="module")
def real_bot(tmp_path_factory: pytest.TempPathFactory, embedder, llmos_home):
    """The real Assistant (router, dialogue manager, SQLite) on a project made by `llmos init`."""
    import torch

    from assistant.api import Assistant
    from assistant.scaffold import scaffold

    torch.set_num_threads(1)
    root = scaffold(tmp_path_factory.mktemp("tui") / "bot")
    bot = Assistant.from_project(
        root, embedder=embedder, knowledge=False, language_model=False, entry_points=False
    )
    yield bot
    bot.close()


async def wait_for(pilot, predicate, timeout: float = 20.0, step: float = 0.05) -> None:
    """Pump the app until ``predicate()`` holds (workers run in threads)."""
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError("condition not reached within the timeout")
        await pilot.pause(step)
        waited += step


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio through anyio's pytest plugin (no pytest-asyncio here)."""
    return "asyncio"
