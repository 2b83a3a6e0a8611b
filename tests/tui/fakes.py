"""A scripted assistant for deterministic UI tests and snapshots.

It has the same surface the TUI uses (stream, new_session, store, transcript, registry,
knowledge, ingest, train_router, config, project) and stores turns in the REAL SQLite
``SessionStore``, so session switching is exercised against real persistence. Replies are
scripted, ids are fixed ("s1", "s2", ...), and nothing shows a timestamp.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from assistant.errors import InputError
from assistant.project import Project
from assistant.sessions import SessionStore
from skills.base import Reply, Source

ANSWER = (
    "Delivery takes **3-5 working days**.\n\n"
    "- Standard: free over 50 EUR\n"
    "- Express: next day\n\n"
    "| option | price |\n|---|---|\n| standard | 4.95 |\n| express | 9.95 |\n\n"
    "```python\nprint('tracking')\n```\n"
)
SOURCES = [
    Source(kind="document", title="shipping-and-delivery.md", span=(120, 340)),
    Source(kind="graph", title="", path=["Lumo kettle", "made_by", "Juniper Home"]),
]


class FakeKnowledge:
    def __init__(self) -> None:
        self.docs = 3

    def stats(self) -> dict[str, int]:
        return {"documents": self.docs, "chunks": 42, "faq": 5, "entities": 17, "facts": 23}


class FakeAssistant:
    """Streams a scripted Markdown answer chunk by chunk (``delay`` seconds apart)."""

    def __init__(self, root: Path, *, delay: float = 0.0, chunk: int = 12) -> None:
        self.project = Project(root=root, state=root)
        self.project.ensure_dirs()
        self.store = SessionStore(self.project.sessions_db)
        self.config = SimpleNamespace(
            name="Test Bot",
            greeting="Hello! Ask me about deliveries.",
            keys={},
        )
        self.knowledge = FakeKnowledge()
        self.registry = SimpleNamespace(
            all=lambda: [
                SimpleNamespace(name="qa", description="Answers from documents."),
                SimpleNamespace(name="smalltalk", description="Greetings and thanks."),
            ]
        )
        self.router = SimpleNamespace(trained_at=1.0, example_intents=["a", "a", "b"])
        self.services = SimpleNamespace(generator=None)
        self.delay = delay
        self.chunk = chunk
        self.started = threading.Event()  # set when a reply starts streaming
        self.release = threading.Event()  # if ``hold``: the stream waits for this
        self.hold = False
        self.ingest_steps = 5
        self.ingest_delay = 0.0
        self._n = 0

    def new_session(self, title: str = "", session_id: str | None = None) -> str:
        self._n += 1
        return self.store.create(session_id or f"s{self._n}", title=title).id

    def stream(self, text: str, session_id: str | None = None) -> Iterator[str | Reply]:
        if "boom" in text:
            raise InputError("the message could not be understood (boom)")
        self.store.get(session_id)
        answer = ANSWER if "deliver" in text else f"You said: {text}"
        sources = SOURCES if "deliver" in text else []
        self.started.set()
        for i in range(0, len(answer), self.chunk):
            if self.hold and not self.release.wait(timeout=20):
                return
            if self.delay:
                time.sleep(self.delay)
            yield answer[i : i + self.chunk]
        self.store.append(
            session_id,
            text,
            answer,
            skill="qa",
            confidence=0.87,
            sources=[s.to_dict() for s in sources],
        )
        yield Reply(answer, sources=list(sources), skill="qa", confidence=0.87)

    def transcript(self, session_id: str) -> list[Any]:
        self.store.get(session_id)
        return self.store.turns(session_id)

    def redacted_transcript(self, session_id: str) -> list[Any]:
        from dataclasses import replace

        from assistant.pii import redact

        return [
            replace(t, user_text=redact(t.user_text), reply_text=redact(t.reply_text))
            for t in self.transcript(session_id)
        ]

    def ingest(self, paths: list[Any], show_progress: bool = False, on_progress: Any = None):
        for i in range(self.ingest_steps):
            time.sleep(self.ingest_delay)
            if on_progress:
                on_progress(i + 1, self.ingest_steps, {"path": f"doc{i}.md"})
        self.knowledge.docs += len(paths)
        return SimpleNamespace(
            added=[str(p) for p in paths],
            updated=[],
            unchanged=[],
            removed=[],
            errors=[],
            chunks=7,
            seconds=0.1,
        )

    def train_router(self, force: bool = False) -> dict[str, Any]:
        return {"examples": 3, "intents": 2, "seconds": 0.0}

    def close(self) -> None:
        self.store.close()
