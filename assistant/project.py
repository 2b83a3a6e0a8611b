"""Where a bot project keeps its content and its state.

A bot project is a directory with ``llmos.yaml``, ``intents.yaml``, ``knowledge/`` (the
documents, FAQ files and triples the user gives it) and ``models/`` (what training writes).
The built-in demo bot ships inside the package, which may be read-only, so its state (index,
sessions, trained models) lives under ``$LLMOS_HOME/demo`` (default ``~/.llmos/demo``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import ProjectError

DEMO_ROOT = Path(__file__).resolve().parent / "demo"


def llmos_home() -> Path:
    return Path(os.environ.get("LLMOS_HOME") or Path.home() / ".llmos").expanduser()


@dataclass(frozen=True)
class Project:
    """Paths of one bot project. ``root`` holds content, ``state`` what llmos writes."""

    root: Path
    state: Path
    is_demo: bool = False

    @property
    def config_file(self) -> Path:
        return self.root / "llmos.yaml"

    @property
    def intents_file(self) -> Path:
        return self.root / "intents.yaml"

    @property
    def knowledge_dir(self) -> Path:
        return self.root / "knowledge"

    @property
    def data_dir(self) -> Path:
        return self.state / "data"

    @property
    def models_dir(self) -> Path:
        return self.state / "models"

    @property
    def knowledge_store(self) -> Path:
        """Index, chunk metadata and graph written by ingestion."""
        return self.data_dir / "knowledge"

    @property
    def sessions_db(self) -> Path:
        return self.data_dir / "sessions.db"

    @property
    def exports_dir(self) -> Path:
        """Transcripts the user exported from the chat (removed with their session)."""
        return self.state / "exports"

    def model_dir(self, kind: str) -> Path:
        """``models/router``, ``models/lm``, ``models/gnn``, ``models/translator-en-de`` ..."""
        return self.models_dir / kind

    def ensure_dirs(self) -> None:
        for d in (self.data_dir, self.models_dir):
            d.mkdir(parents=True, exist_ok=True)


def demo_project() -> Project:
    return Project(root=DEMO_ROOT, state=llmos_home() / "demo", is_demo=True)


def resolve_project(path: str | Path | None = None) -> Project:
    """``--project DIR`` if given; else a bot project in the current directory; else the demo."""
    if path is not None and str(path) != "":
        root = Path(path).expanduser().resolve()
        if not root.is_dir():
            raise ProjectError(f"project directory not found: {path}")
        if not (root / "llmos.yaml").is_file():
            raise ProjectError(
                f"{path} is not a bot project (no llmos.yaml); create one with: llmos init {path}"
            )
        if root == DEMO_ROOT.resolve():
            return demo_project()  # the installed package stays read-only
        return Project(root=root, state=root)
    cwd = Path.cwd()
    if (cwd / "llmos.yaml").is_file():
        if cwd.resolve() == DEMO_ROOT.resolve():
            return demo_project()
        return Project(root=cwd.resolve(), state=cwd.resolve())
    return demo_project()
