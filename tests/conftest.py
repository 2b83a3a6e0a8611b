"""Shared fixtures: an isolated LLMOS_HOME, the real MiniLM encoder (loaded once), bot projects."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session", autouse=True)
def llmos_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep the demo's state (index, sessions, models) out of the user's ~/.llmos."""
    home = tmp_path_factory.mktemp("llmos_home")
    os.environ["LLMOS_HOME"] = str(home)
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    return home


@pytest.fixture(scope="session")
def embedder():
    """The real MiniLM encoder, shared by every test that needs it."""
    from knowledge.embed import shared_embedder

    emb = shared_embedder()
    emb.load()
    return emb


@pytest.fixture
def fake_embedder():
    from tests.fakes import FakeEmbedder

    return FakeEmbedder()


@pytest.fixture(scope="session")
def demo_bot(embedder, llmos_home):
    """The built-in demo assistant through the real encoder, router, knowledge and SQLite."""
    from assistant import Assistant

    bot = Assistant.demo(embedder=embedder, entry_points=False, language_model=False)
    yield bot
    bot.close()


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """A fresh bot project made by `llmos init`."""
    from assistant.scaffold import scaffold

    return scaffold(tmp_path / "bot")


@pytest.fixture
def demo_copy(tmp_path: Path) -> Path:
    """A writable copy of the demo project (content only)."""
    from assistant.project import DEMO_ROOT

    dst = tmp_path / "demo"
    shutil.copytree(DEMO_ROOT, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: router training is many small ops, which a second
    thread only slows down on these 2 cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def router_fits(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, bool]]:
    """Every ``IntentRouter.train`` call of the test, as the settings it trained with (the real
    training runs): proves a command trains once, and with which settings."""
    from assistant.router import IntentRouter

    fits: list[dict[str, bool]] = []
    real_train = IntentRouter.train

    def counted(self: IntentRouter, examples: list) -> dict:
        fits.append(
            {"selftrain": self.selftrain is not None, "finetune": self.finetune is not None}
        )
        return real_train(self, examples)

    monkeypatch.setattr(IntentRouter, "train", counted)
    return fits
