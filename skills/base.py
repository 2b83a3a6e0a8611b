"""The skill API: what a skill declares, what it receives, and what it returns.

A skill is a class with a ``name``, a ``description`` and ``examples`` (utterances the router
learns from), the ``slots`` it needs, and ``handle(request, services)``: a generator that
yields text chunks as they become available and ends by yielding one :class:`Reply`. Every
skill can therefore stream, and callers that want a single answer just take the last item.

    from skills import Skill, Reply, register_skill

    @register_skill
    class EchoSkill(Skill):
        name = "echo"
        description = "Repeats what you said."
        examples = ["echo hello", "say it back to me"]

        def handle(self, request, services):
            yield request.text
            yield Reply(text=request.text, skill=self.name)

Skills never build models themselves: they get a retriever, the language model, the
translator, and so on from the :class:`Services` object that the assistant hands them, so
tests can pass fakes.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


@dataclass
class Source:
    """Where a piece of an answer comes from: a document span, an FAQ entry or a graph path."""

    kind: str  # "document" | "faq" | "graph" | "session" | "memory"
    title: str
    ref: str = ""  # file path or identifier the user can open
    span: tuple[int, int] | None = None  # character offsets in the source text
    page: int | None = None
    snippet: str = ""
    score: float = 0.0
    path: list[str] = field(default_factory=list)  # graph path: entity, relation, entity, ...

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["span"] = list(self.span) if self.span else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Source:
        span = d.get("span")
        return cls(
            kind=str(d.get("kind", "document")),
            title=str(d.get("title", "")),
            ref=str(d.get("ref", "")),
            span=(int(span[0]), int(span[1])) if span else None,
            page=d.get("page"),
            snippet=str(d.get("snippet", "")),
            score=float(d.get("score", 0.0)),
            path=[str(p) for p in d.get("path", [])],
        )

    def label(self) -> str:
        """One line a person can read: ``refunds.md, chars 120-340`` or a graph path."""
        if self.path:
            return " ".join(self.path)
        where = self.title or self.ref
        if self.page is not None:
            where += f", page {self.page}"
        if self.span:
            where += f", chars {self.span[0]}-{self.span[1]}"
        return where


@dataclass
class Reply:
    """The final answer of a turn. ``skill`` and ``confidence`` are always filled in."""

    text: str
    sources: list[Source] = field(default_factory=list)
    skill: str = ""
    confidence: float = 1.0
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "sources": [s.to_dict() for s in self.sources],
            "skill": self.skill,
            "confidence": round(float(self.confidence), 4),
            "data": self.data,
        }


@dataclass
class Slot:
    """A piece of information a skill needs before it can act (e.g. a target language)."""

    name: str
    prompt: str  # the question asked when the slot is missing
    required: bool = True


@dataclass
class SessionView:
    """Read-only view of the conversation so far, enough for skills to resolve referents."""

    session_id: str
    history: list[tuple[str, str]] = field(default_factory=list)  # (role, text), oldest first
    last_reply: str | None = None
    last_user_text: str | None = None
    last_document: str | None = None
    last_skill: str | None = None
    #: What each skill asked to remember for this session (``Reply.data["memory"]``), by skill name.
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class SkillRequest:
    """What the dialogue manager hands a skill for one turn."""

    text: str  # the user's message as typed
    slots: dict[str, str] = field(default_factory=dict)
    referent: str | None = None  # the text "that"/"it" points to, when the router resolved one
    referent_kind: str | None = None  # "last_reply" | "last_user_text" | "last_document"
    confidence: float = 1.0  # the router's confidence that this skill is right
    intent: str = ""
    session: SessionView = field(default_factory=lambda: SessionView(session_id=""))
    #: Work the dialogue manager already did for this skill (e.g. a knowledge answer it probed).
    extras: dict[str, Any] = field(default_factory=dict)


class Services:
    """What the assistant lends skills. Attributes are ``None`` when a capability is absent.

    Attributes are filled by the assistant (``assistant/api.py``); skills only read them.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.embedder: Any = None  # knowledge.embed.Embedder
        self.knowledge: Any = None  # knowledge base: search/answer over ingested documents
        self.generator: Any = None  # lm.generate.Generator, when a language model is loaded
        self.translator: Any = None
        self.summarizer: Any = None
        self.handoff: Any = None  # callable(session_id, reason) -> ticket id
        self.config: Any = None  # the bot's validated config
        self.capabilities: list[str] = []  # one-line descriptions of what the bot can do
        self.phrasebook_path: Any = None  # translation memory (TSV with language-code columns)
        for k, v in kwargs.items():
            setattr(self, k, v)


class SkillError(Exception):
    """A skill failed in a way the user should hear about politely."""


class Skill:
    """Base class for skills. Subclasses set the class attributes and implement ``handle``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    examples: ClassVar[list[str]] = []
    slots: ClassVar[list[Slot]] = []
    #: A short phrase for "here is what I can do" lists; the description when empty.
    capability: ClassVar[str] = ""
    #: Skills that are only reached through dialogue policy (fallback, clarify) set this False
    #: so the router does not learn a class for them.
    routable: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if inspect.isabstract(cls) or cls.__dict__.get("_abstract", False):
            return
        for attr in ("name", "description"):
            value = getattr(cls, attr, "")
            if not isinstance(value, str) or not value.strip():
                raise TypeError(f"Skill {cls.__name__} must define a non-empty `{attr}` string")
        if not cls.name.replace("_", "").replace("-", "").isalnum():
            raise TypeError(f"Skill {cls.__name__}: name {cls.name!r} must be alphanumeric")
        if not isinstance(cls.examples, list) or not all(isinstance(e, str) for e in cls.examples):
            raise TypeError(f"Skill {cls.__name__}: `examples` must be a list of strings")
        handle = cls.__dict__.get("handle") or getattr(cls, "handle", None)
        if handle is None or handle is Skill.handle:
            raise TypeError(f"Skill {cls.__name__} must implement handle(request, services)")
        params = list(inspect.signature(handle).parameters)
        if len(params) != 3:
            raise TypeError(
                f"Skill {cls.__name__}.handle must take (self, request, services), "
                f"not ({', '.join(params)})"
            )

    def setup(self, services: Services) -> None:
        """Load heavy resources lazily, once, before the first ``handle`` call."""

    def handle(self, request: SkillRequest, services: Services) -> Iterator[str | Reply]:
        raise NotImplementedError

    def reply(self, text: str, confidence: float = 1.0, **kwargs: Any) -> Reply:
        """Build a Reply already stamped with this skill's name."""
        return Reply(text=text, skill=self.name, confidence=confidence, **kwargs)
