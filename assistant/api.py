"""The Python API: one :class:`Assistant` per bot project.

    from assistant import Assistant

    bot = Assistant.demo()
    reply = bot.chat("how long does delivery take?")
    print(reply.text, reply.skill, reply.confidence, [s.label() for s in reply.sources])
    for chunk in bot.stream("summarize that", session_id=reply.data["session_id"]):
        ...  # str chunks, then the final Reply

The terminal UI and the HTTP service are thin layers over this class.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from assistant.config import BotConfig, IntentSpec, load_config, load_intents
from assistant.dialogue import DialogueManager, DialoguePolicy, validate_message
from assistant.errors import ConfigError, InputError, LlmosError, TicketStateError
from assistant.pii import install_logging_filter, redact, redact_obj
from assistant.project import Project, demo_project, resolve_project
from assistant.router import Example, IntentRouter
from assistant.sessions import SessionStore, Ticket, Turn
from skills.base import Reply, Services
from skills.registry import SkillRegistry

LOG = logging.getLogger(__name__)


class Assistant:
    """A bot project brought to life: config, skills, router, knowledge, sessions.

    Args:
        project: the bot project (see ``assistant.project``).
        embedder: a text encoder; the shared MiniLM encoder by default.
        entry_points: load third-party skills from the ``llmos.skills`` entry-point group.
        knowledge: open the knowledge base and ingest the project's sources.
        language_model: load the project's local language model if one is trained.
        train_router: bring the router up to date now (load it, or train it when its examples
            or settings changed). ``llmos train router`` passes False: it changes the router's
            settings first and trains once, instead of training with llmos.yaml's and again.
    """

    def __init__(
        self,
        project: Project,
        *,
        embedder: Any = None,
        entry_points: bool = True,
        knowledge: bool = True,
        language_model: bool = True,
        extra_skills: list[Any] | None = None,
        train_router: bool = True,
    ) -> None:
        self.project = project
        project.ensure_dirs()
        self.config: BotConfig = load_config(project.config_file)
        install_logging_filter(self.config.pii)  # no customer email or card number in any log
        self.intents: dict[str, IntentSpec] = load_intents(project.intents_file)
        if embedder is None:
            from knowledge.embed import shared_embedder

            embedder = shared_embedder()
        if hasattr(embedder, "load"):
            embedder.load()  # every turn embeds; pay the model load once, up front
        self.embedder = embedder
        self.registry = SkillRegistry.discover(
            entry_points_enabled=entry_points, disabled=self.config.disabled_skills
        )
        for skill in extra_skills or []:
            self.registry.add(skill)
        for err in self.registry.errors:
            LOG.warning("%s", err)
        self._check_intents()
        self.store = SessionStore(project.sessions_db)
        self.services = Services(
            embedder=embedder,
            config=self.config,
            handoff=self._open_ticket,
            capabilities=self._capabilities(),
        )
        if self.config.translation.phrasebook:
            self.services.phrasebook_path = project.root / self.config.translation.phrasebook
        self._attach_seq2seq()
        self.knowledge: Any = None
        if knowledge:
            self._open_knowledge()
        if language_model:
            self.load_language_model()
        rc = self.config.router
        uc = rc.unlabelled  # self-training on unlabelled user messages, when configured
        self.router = IntentRouter(
            embedder,
            project.model_dir("router"),
            out_of_scope_similarity=rc.out_of_scope_similarity,
            head_params={"max_iter": rc.epochs} if rc.epochs else None,
            finetune=rc.finetune_settings(),
            unlabelled=uc.texts(project.root, project.sessions_db, self.config.pii) if uc else None,
            selftrain=uc.settings() if uc else None,
            retrain_after=uc.retrain_after if uc else 0,
            intent_names=rc.intent_names,
        )
        if train_router:
            self.router.ensure_trained(self.examples())
        pc = self.config.policy
        self.dialogue = DialogueManager(
            self.router,
            self.registry,
            self.store,
            self.services,
            DialoguePolicy(
                confidence_threshold=rc.confidence_threshold,
                clarify_margin=rc.clarify_margin,
                low_confidence_handoff=pc.low_confidence_handoff,
                negative_sentiment_handoff=pc.negative_sentiment_handoff,
                history_window=pc.history_window,
            ),
            document_names=self._document_names,
            is_negative=_sentiment_scorer(),
        )
        self._lock = threading.Lock()

    # -- constructors ------------------------------------------------------------------
    @classmethod
    def demo(cls, **kwargs: Any) -> Assistant:
        """The built-in demo assistant (Juniper Home customer service)."""
        return cls(demo_project(), **kwargs)

    @classmethod
    def from_project(cls, path: str | Path | None = None, **kwargs: Any) -> Assistant:
        """A bot project directory (with ``llmos.yaml``); None: current directory or demo."""
        return cls(resolve_project(path), **kwargs)

    # -- chatting ----------------------------------------------------------------------
    def new_session(self, title: str = "", session_id: str | None = None) -> str:
        return self.store.create(session_id, title=title).id

    def stream(
        self, text: str, session_id: str | None = None, *, idempotency_key: str | None = None
    ) -> Iterator[str | Reply]:
        """Text chunks as the skill produces them, then the final :class:`Reply`."""
        text = validate_message(text)
        if session_id is None:
            session_id = self.new_session()
        else:
            self.store.get(session_id)  # unknown id -> UnknownSessionError, nothing stored
        yield from self.dialogue.stream(session_id, text, idempotency_key=idempotency_key)

    def chat(
        self, text: str, session_id: str | None = None, *, idempotency_key: str | None = None
    ) -> Reply:
        """Answer one message; ``reply.data["session_id"]`` continues the conversation."""
        last: Reply | None = None
        for item in self.stream(text, session_id, idempotency_key=idempotency_key):
            if isinstance(item, Reply):
                last = item
        assert last is not None
        return last

    def transcript(self, session_id: str) -> list[Turn]:
        self.store.get(session_id)
        return self.store.turns(session_id)

    def redacted_transcript(self, session_id: str) -> list[Turn]:
        """The transcript with emails, phones, card numbers and IBANs masked: for exports."""
        cfg = self.config.pii
        return [
            replace(
                t,
                user_text=redact(t.user_text, cfg),
                reply_text=redact(t.reply_text, cfg),
                sources=redact_obj(t.sources, cfg),
                data=redact_obj(t.data, cfg),
            )
            for t in self.transcript(session_id)
        ]

    # -- the handoff desk (human agents) -----------------------------------------------
    def tickets(self, status: str | None = None) -> list[Ticket]:
        """Handoff tickets, oldest first; ``status`` is "open", "claimed" or "closed"."""
        if status is not None and status not in {"open", "claimed", "closed"}:
            raise InputError("ticket status must be open, claimed or closed")
        return self.store.tickets(status)

    def ticket(self, ticket_id: int) -> Ticket:
        return self.store.ticket(ticket_id)

    def ticket_view(self, ticket_id: int) -> dict[str, Any]:
        """What the desk shows an agent: the ticket and the conversation so far, PII masked."""
        ticket = self.store.ticket(ticket_id)
        return {
            **ticket.to_dict(),
            "transcript": [t.to_dict() for t in self.redacted_transcript(ticket.session_id)],
        }

    def handoff_state(self, session_id: str) -> dict[str, Any] | None:
        """``{"ticket", "status", "agent", "reason"}`` while a handoff is active, else None."""
        state = self.store.get(session_id).state.get("handoff")
        return dict(state) if state else None

    def claim_ticket(self, ticket_id: int, agent: str) -> Ticket:
        """An agent takes the conversation; from now on the customer's messages go to them."""
        agent = _agent_name(agent)
        ticket = self.store.ticket(ticket_id)
        if ticket.status == "closed":
            raise TicketStateError(f"ticket #{ticket_id} is closed")
        if ticket.status == "claimed" and ticket.agent != agent:
            raise TicketStateError(f"ticket #{ticket_id} is already claimed by {ticket.agent}")
        with self.store.lock(ticket.session_id):
            state = self.handoff_state(ticket.session_id) or {}
            ticket, _ = self.store.desk_update(
                ticket_id,
                status="claimed",
                agent=agent,
                handoff={**state, "ticket": ticket.id, "status": "claimed", "agent": agent},
                turn=Turn(
                    ticket.session_id,
                    0,
                    "",
                    f"{agent} from our team has joined the conversation.",
                    skill="handoff",
                    kind="system",
                    data={"ticket": ticket.id, "agent": agent},
                ),
            )
        return ticket

    def agent_reply(self, ticket_id: int, agent: str, text: str) -> Turn:
        """Put an agent's message into the customer's conversation (kind "agent")."""
        agent = _agent_name(agent)
        text = validate_message(text)
        ticket = self.store.ticket(ticket_id)
        if ticket.status != "claimed":
            raise TicketStateError(
                f"ticket #{ticket_id} is {ticket.status}: claim it before replying"
            )
        if ticket.agent != agent:
            raise TicketStateError(f"ticket #{ticket_id} is claimed by {ticket.agent}")
        with self.store.lock(ticket.session_id):
            _, turn = self.store.desk_update(
                ticket_id,
                status="claimed",
                agent=agent,
                handoff=self.handoff_state(ticket.session_id),
                turn=Turn(
                    ticket.session_id,
                    0,
                    "",
                    text,
                    skill="agent",
                    confidence=1.0,
                    kind="agent",
                    data={"ticket": ticket.id, "agent": agent},
                ),
            )
        assert turn is not None
        return turn

    def close_ticket(self, ticket_id: int, agent: str | None = None) -> Ticket:
        """End the handoff; the assistant answers the customer again."""
        ticket = self.store.ticket(ticket_id)
        if ticket.status == "closed":
            return ticket
        who = _agent_name(agent) if agent else (ticket.agent or "Our team")
        with self.store.lock(ticket.session_id):
            ticket, _ = self.store.desk_update(
                ticket_id,
                status="closed",
                agent=None,
                handoff=None,
                turn=Turn(
                    ticket.session_id,
                    0,
                    "",
                    f"{who} has closed the conversation; the assistant is back to help you.",
                    skill="handoff",
                    kind="system",
                    data={"ticket": ticket.id, "closed_by": who},
                ),
            )
        return ticket

    def train_translator(
        self,
        pairs: list[str | Path],
        src: str,
        tgt: str,
        *,
        time_budget_s: float | None = 1200.0,
        on_progress: Any = None,
        **options: Any,
    ) -> Path:
        """Train ``models/translator-<src>-<tgt>`` on pair files; the chat uses it at once.

        ``options`` go to :func:`lm.translator.train_translator` (``preset``, ``steps``, ...).
        """
        from lm.translator import train_translator

        out = self.project.model_dir(f"translator-{src.lower()}-{tgt.lower()}")
        train_translator(
            [Path(p) for p in pairs],
            src,
            tgt,
            out,
            time_budget_s=time_budget_s,
            on_progress=on_progress,
            show_progress=False,
            **options,
        )
        self._attach_seq2seq()
        return out

    def _attach_seq2seq(self) -> None:
        """Translators and the abstractive summarizer, loaded on first use (none: skip)."""
        from lm.translator import TranslatorSet

        models = self.project.models_dir
        self.services.translator = TranslatorSet(models) if models.is_dir() else None
        summarizer_dir = self.project.model_dir("summarizer")
        trained = (summarizer_dir / "best").is_dir() or (summarizer_dir / "config.json").is_file()
        self.services.summarizer = _LazySummarizer(summarizer_dir) if trained else None

    def stats(self, since: float | None = None, bucket_s: int = 3600) -> dict[str, Any]:
        """Turns, skills, unanswered rate and handoffs since ``since`` (epoch seconds)."""
        return self.store.stats(since, bucket_s)

    # -- training and knowledge --------------------------------------------------------
    def examples(self) -> list[Example]:
        """Router training data: intents.yaml plus every routable skill's examples."""
        out: list[Example] = []
        for name, spec in self.intents.items():
            out.extend(Example(name, spec.skill, t) for t in spec.examples)
        for skill in self.registry.all():
            if not skill.routable or not skill.examples:
                continue
            intent = skill.name if skill.name not in self.intents else f"skill:{skill.name}"
            out.extend(Example(intent, skill.name, t) for t in skill.examples)
        return out

    def train_router(self, force: bool = False) -> dict[str, Any]:
        if force:
            return self.router.train(self.examples())
        trained = self.router.ensure_trained(self.examples())
        return {"trained": trained, "examples": len(self.examples())}

    def ingest(self, paths: list[str | Path], **kwargs: Any) -> Any:
        if self.knowledge is None:
            raise LlmosError("the knowledge base is not available")
        report = self.knowledge.ingest(paths, **kwargs)
        self.services.capabilities = self._capabilities()
        return report

    def close(self) -> None:
        if self.knowledge is not None:
            self.knowledge.close()
        self.store.close()

    # -- internals ---------------------------------------------------------------------
    def _check_intents(self) -> None:
        for name, spec in self.intents.items():
            if spec.skill not in self.registry:
                known = ", ".join(self.registry.names())
                raise ConfigError(
                    f"intents.yaml: intent {name!r} uses unknown skill {spec.skill!r} (known: {known})"
                )

    def _open_ticket(self, session_id: str, reason: str) -> int:
        return self.store.open_ticket(session_id, redact(reason, self.config.pii)[:500]).id

    def _capabilities(self) -> list[str]:
        caps = []
        for s in self.registry.all():
            if s.routable and s.name not in {"smalltalk", "handoff"}:
                caps.append(s.capability or _lower_first(s.description.rstrip(".")))
        return caps

    def _open_knowledge(self) -> None:
        try:
            from knowledge.base import KnowledgeBase
        except ImportError:
            return
        kb = KnowledgeBase.open(
            self.project.knowledge_store, self.embedder, **self.config.knowledge.index_options()
        )
        self.knowledge = kb
        self.services.knowledge = kb
        if self.config.knowledge.auto_ingest:
            roots = [self.project.root / s for s in self.config.knowledge.sources]
            roots = [r for r in roots if r.exists()]
            if roots:
                report = kb.ingest(roots, roots=roots, sync=True)
                for _path, err in report.errors:
                    # `llmos ingest` reports these to the user; at start-up they are only logged
                    LOG.info("skipped %s", err)

    def _document_names(self) -> list[str]:
        """File names and title lines: a user names a document either way ("notes.md", "the
        greenhouse notes"); ``KnowledgeBase.document_text`` resolves both."""
        if self.knowledge is None:
            return []
        try:
            docs = self.knowledge.documents()
        except Exception:
            return []
        return list(
            dict.fromkeys([d["name"] for d in docs] + [d["title"] for d in docs if d["title"]])
        )

    def _lm_dir(self) -> Path:
        """Where the project's language model lives (a run dir with best/ and last/, or one checkpoint)."""
        configured = self.project.root / self.config.lm.model
        if not self.project.is_demo and configured.exists():
            return configured
        return self.project.model_dir("lm")

    def load_language_model(self) -> bool:
        model_dir = self._lm_dir()
        if not any(
            (d / "config.json").is_file()
            for d in (model_dir, model_dir / "best", model_dir / "last")
        ):
            return False
        try:
            from lm.generate import Generator

            self.services.generator = Generator.from_dir(model_dir)
        except Exception as exc:  # a broken checkpoint must not stop the chat
            LOG.warning("language model at %s not loaded: %s", model_dir, exc)
            return False
        return True

    def needs_language_model(self) -> bool:
        """True when the bot has a corpus to train its language model from but no model yet."""
        return (
            self.services.generator is None
            and self.config.lm.train_on_first_run
            and bool(self.config.lm.corpus)
        )

    def train_language_model(self, *, time_budget_s: float = 90.0, on_progress: Any = None) -> Path:
        """Train the bot's small language model from its corpus (first run), then load it.

        Later runs find the checkpoint and skip training.
        """
        from lm.demo import ensure_demo_model

        corpus = [self.project.root / c for c in self.config.lm.corpus]
        corpus_dir = next((c for c in corpus if c.is_dir()), None)
        if corpus_dir is None:
            raise LlmosError(
                "no corpus folder to train the language model from (lm.corpus in llmos.yaml)"
            )
        dialogues = (
            self.project.root / self.config.lm.dialogues if self.config.lm.dialogues else None
        )
        out = ensure_demo_model(
            corpus_dir,
            dialogues,
            self._lm_dir(),
            time_budget_s=time_budget_s,
            on_progress=on_progress,
        )
        self.load_language_model()
        return out


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:] if s else s


_AGENT_RE = re.compile(r"^[\w .'@-]{1,64}$")


def _agent_name(agent: Any) -> str:
    if not isinstance(agent, str) or not _AGENT_RE.match(agent.strip()):
        raise InputError("agent name must be 1-64 letters, digits, spaces or . ' @ -")
    return agent.strip()


def _sentiment_scorer() -> Any:
    try:
        from assistant.sentiment import is_negative
    except ImportError:  # pragma: no cover - the module ships with llmos
        return None
    return is_negative


class _LazySummarizer:
    """The abstractive summarizer, loaded on the first summary (start-up stays fast)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name
        self._model: Any = None
        self._lock = threading.Lock()

    def summarize(self, text: str, max_words: int | None = None) -> str:
        with self._lock:
            if self._model is None:
                from lm.seq2seq import load_summarizer

                self._model = load_summarizer(self.path)
                self.name = getattr(self._model, "name", self.name)
        return str(self._model.summarize(text, max_words=max_words))
