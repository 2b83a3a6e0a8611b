"""The dialogue manager: one chat turn, from the user's text to a stored reply.

    1. load the session (history, slots waiting to be filled, last reply/document)
    2. route: Router.route(text, context) -> Intent(skill, confidence, slots, referent)
    3. policy: while a human agent holds the conversation, messages go to the agent (or
       "back to the bot" ends the handoff); a pending question is answered first (a missing
       slot, a clarification); low confidence -> ask which of the two best skills was meant
       (or fall back); low confidence or negative sentiment twice in a row -> hand over to a
       person; out of scope -> fallback; a required slot missing -> ask for it
    4. run the skill, streaming its chunks
    5. store the turn and the new dialogue state in one transaction

Every reply says which skill answered and with what confidence. A skill that fails turns
into a polite reply; the conversation and the stored state stay intact.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from assistant import slots as slot_rules
from assistant.errors import InputError
from assistant.router import Intent, IntentRouter, RouteContext
from assistant.sessions import Session, SessionStore
from skills.base import Reply, Services, SessionView, SkillError, SkillRequest, Source
from skills.registry import SkillRegistry

LOG = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 20_000


def validate_message(text: Any) -> str:
    """Reject what no skill can use, with a message the user understands."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"message is not valid UTF-8 (bad byte at position {exc.start})"
            ) from None
    if not isinstance(text, str):
        raise InputError("message must be text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"message contains an invalid character (lone surrogate at position {exc.start})"
        ) from None
    if "\x00" in text:
        raise InputError("message contains a NUL character")
    if not text.strip():
        raise InputError("message is empty")
    if len(text) > MAX_MESSAGE_CHARS:
        raise InputError(
            f"message is too long ({len(text):,} characters; the limit is {MAX_MESSAGE_CHARS:,})"
        )
    return text.strip()


_BACK_TO_BOT = re.compile(
    r"\b(back to (the )?(bot|assistant)|(talk|chat|speak) (to|with) (the )?(bot|assistant)"
    r"( again)?|cancel (the |my )?(handoff|ticket|request)|(i )?(don'?t|do not) need (a|the) "
    r"(person|human|agent)( any ?more)?|no longer need (a|the) (person|human|agent))\b",
    re.I,
)


@dataclass
class DialoguePolicy:
    confidence_threshold: float = 0.45
    clarify_margin: float = 0.10
    #: hand over to a person after this many low-confidence turns in a row (0: never)
    low_confidence_handoff: int = 2
    #: hand over to a person after this many negative messages in a row (0: never)
    negative_sentiment_handoff: int = 2
    history_window: int = 20


@dataclass
class TurnPlan:
    """What the policy decided to do with a message."""

    skill: str
    request: SkillRequest
    note: str = ""
    state_updates: dict[str, Any] = field(default_factory=dict)
    direct: Reply | None = None  # a reply the manager gives itself (clarify, ask for a slot)
    kind: str = "chat"  # "customer": a message for the human agent, stored without a bot reply


class DialogueManager:
    def __init__(
        self,
        router: IntentRouter,
        registry: SkillRegistry,
        store: SessionStore,
        services: Services,
        policy: DialoguePolicy | None = None,
        document_names: Any = None,
        is_negative: Callable[[str], bool] | None = None,
    ) -> None:
        self.router = router
        self.registry = registry
        self.store = store
        self.services = services
        self.policy = policy or DialoguePolicy()
        self._document_names: Callable[[], list[str]] = document_names or (lambda: [])
        self._is_negative = is_negative
        #: Called with a skill's name just before the skill runs. A Reply it returns is the
        #: turn's answer instead (the server's circuit breaker skips a skill that keeps
        #: timing out this way); ``None`` lets the skill run.
        self.before_skill: Callable[[str], Reply | None] | None = None

    # -- the turn ----------------------------------------------------------------------
    def stream(
        self, session_id: str, text: str, *, idempotency_key: str | None = None
    ) -> Iterator[str | Reply]:
        """Yield reply chunks, then the final Reply (its data carries session id and turn)."""
        text = validate_message(text)
        with self.store.lock(session_id):
            if idempotency_key is not None:
                done = self.store.find_idempotent(session_id, idempotency_key)
                if done is not None:
                    reply = Reply(
                        text=done.reply_text,
                        skill=done.skill,
                        confidence=done.confidence,
                        sources=[Source.from_dict(s) for s in done.sources],
                        data={
                            **done.data,
                            "session_id": session_id,
                            "turn": done.n,
                            "replayed": True,
                        },
                    )
                    yield reply.text
                    yield reply
                    return
            session = self.store.get(session_id)
            view = self._view(session)
            plan = self._plan(text, session, view)
            chunks: list[str] = []
            if plan.direct is not None:
                reply = plan.direct
                chunks.append(reply.text)
                if reply.text:
                    yield reply.text
            else:
                final: Reply | None = None
                for item in self._run(plan):
                    if isinstance(item, Reply):
                        final = item
                    else:
                        chunks.append(item)
                        yield item
                assert final is not None
                reply = final
            state = self._next_state(session, plan, reply)
            title = session.title or (_title_from(text) if session.turns == 0 else None)
            stored_data = {k: v for k, v in reply.data.items() if k != "memory"}
            turn = self.store.append(
                session_id,
                text,
                reply.text,
                skill=reply.skill,
                confidence=reply.confidence,
                sources=[s.to_dict() for s in reply.sources],
                data=stored_data,
                kind=plan.kind,
                idempotency_key=idempotency_key,
                state=state,
                title=title,
            )
            reply.data = {
                **stored_data,
                "session_id": session_id,
                "turn": turn.n,
                "handoff": state.get("handoff"),
            }
            yield reply

    def turn(self, session_id: str, text: str, *, idempotency_key: str | None = None) -> Reply:
        last: Reply | None = None
        for item in self.stream(session_id, text, idempotency_key=idempotency_key):
            if isinstance(item, Reply):
                last = item
        assert last is not None
        return last

    # -- policy ------------------------------------------------------------------------
    def _view(self, session: Session) -> SessionView:
        turns = self.store.turns(session.id, last=self.policy.history_window)
        history: list[tuple[str, str]] = []
        for t in turns:
            if t.user_text:
                history.append(("user", t.user_text))
            if t.reply_text and t.kind != "system":
                history.append(("agent" if t.kind == "agent" else "assistant", t.reply_text))
        st = session.state
        replies = [t.reply_text for t in turns if t.reply_text and t.kind in ("chat", "agent")]
        users = [t.user_text for t in turns if t.user_text]
        return SessionView(
            session_id=session.id,
            history=history,
            last_reply=replies[-1] if replies else None,
            last_user_text=users[-1] if users else None,
            last_document=st.get("last_document"),
            last_skill=st.get("last_skill"),
            memory=dict(st.get("memory", {})),
        )

    def _plan(self, text: str, session: Session, view: SessionView) -> TurnPlan:
        handoff = session.state.get("handoff")
        if handoff:
            plan = self._during_handoff(handoff, text, view)
            if plan is not None:
                return plan
        pending = session.state.get("pending")
        if pending:
            plan = self._resolve_pending(pending, text, view)
            if plan is not None:
                return plan
        ctx = RouteContext(
            last_reply=view.last_reply,
            last_user_text=view.last_user_text,
            last_document=view.last_document,
            last_skill=view.last_skill,
            has_history=bool(view.history),
            document_names=list(self._document_names()),
        )
        intent = self.router.route(text, ctx)
        return self._decide(text, intent, view, session)

    def _during_handoff(
        self, handoff: dict[str, Any], text: str, view: SessionView
    ) -> TurnPlan | None:
        """A person holds (or is about to take) the conversation: the bot steps back."""
        request = SkillRequest(text=text, confidence=1.0, intent="handoff", session=view)
        if _BACK_TO_BOT.search(text):
            ticket = handoff.get("ticket")
            if ticket is not None:
                self.store.set_ticket_status(int(ticket), "closed")
            reply = Reply(
                text="OK, you're back with the assistant. How can I help?",
                skill="handoff",
                confidence=1.0,
                data={"handoff_ended": ticket},
            )
            return TurnPlan(
                "handoff",
                request,
                direct=reply,
                state_updates={"handoff": None, "low_confidence_streak": 0, "negative_streak": 0},
            )
        if handoff.get("status") == "claimed":
            agent = handoff.get("agent") or "the agent"
            reply = Reply(text="", skill="agent", confidence=1.0, data={"delivered_to": agent})
            return TurnPlan("agent", request, direct=reply, kind="customer")
        return None  # waiting for a person: the bot keeps helping meanwhile

    def _decide(self, text: str, intent: Intent, view: SessionView, session: Session) -> TurnPlan:
        p = self.policy
        low_streak = int(session.state.get("low_confidence_streak", 0))
        request = self._request(text, intent, view)
        in_handoff = bool(session.state.get("handoff"))
        if intent.skill == "handoff" and intent.confidence >= p.confidence_threshold:
            return TurnPlan(
                "handoff", request, state_updates={"low_confidence_streak": 0, "negative_streak": 0}
            )
        if self._is_negative is not None and p.negative_sentiment_handoff and not in_handoff:
            try:
                negative = bool(self._is_negative(text))
            except Exception:  # a scorer must never break the turn
                LOG.exception("sentiment scorer failed")
                negative = False
            neg_streak = int(session.state.get("negative_streak", 0)) + 1 if negative else 0
            if neg_streak >= p.negative_sentiment_handoff:
                request.slots["reason"] = "repeated negative sentiment"
                return TurnPlan(
                    "handoff",
                    request,
                    note="repeated negative sentiment",
                    state_updates={"negative_streak": 0, "low_confidence_streak": 0},
                )
            request.extras["negative_streak"] = neg_streak
        if (
            intent.out_of_scope or intent.confidence < p.confidence_threshold
        ) and not intent.follow_up:
            probe = self._probe_knowledge(text, view)
            if probe is not None:
                # the router only knows phrasings; the bot's own documents may still answer it
                request.extras["answer"] = probe
                request.confidence = float(probe.confidence)
                request.intent = "knowledge"
                return TurnPlan(
                    "qa",
                    request,
                    note="answered from knowledge",
                    state_updates={"low_confidence_streak": 0},
                )
        if intent.out_of_scope and not intent.follow_up:
            streak = low_streak + 1
            return TurnPlan(
                "fallback",
                request,
                note="out of scope",
                state_updates={"low_confidence_streak": streak},
            )
        if intent.confidence < p.confidence_threshold and not intent.follow_up:
            streak = low_streak + 1
            if p.low_confidence_handoff and streak >= p.low_confidence_handoff and not in_handoff:
                request.slots["reason"] = f"low confidence {streak} times in a row"
                return TurnPlan(
                    "handoff",
                    request,
                    note="low confidence repeatedly",
                    state_updates={"low_confidence_streak": 0},
                )
            options = [(intent.skill, intent.confidence), *intent.alternatives]
            options = [(s, c) for s, c in options if s in self.registry and s != "fallback"][:2]
            if len(options) == 2 and options[0][1] - options[1][1] <= p.clarify_margin:
                return self._clarify(text, options, request, streak)
            return TurnPlan(
                "fallback",
                request,
                note="low confidence",
                state_updates={"low_confidence_streak": streak},
            )
        skill = self.registry.get(intent.skill) if intent.skill in self.registry else None
        if skill is None:
            return TurnPlan("fallback", request, note=f"no skill {intent.skill}")
        for slot in skill.slots:
            if slot.required and not request.slots.get(slot.name):
                ask = Reply(
                    text=slot.prompt,
                    skill=skill.name,
                    confidence=intent.confidence,
                    data={"needs": slot.name},
                )
                pending = {
                    "type": "slot",
                    "skill": skill.name,
                    "slot": slot.name,
                    "text": text,
                    "slots": request.slots,
                    "referent_kind": request.referent_kind,
                    "referent": request.referent,
                    "confidence": intent.confidence,
                    "intent": intent.intent,
                }
                return TurnPlan(
                    skill.name,
                    request,
                    direct=ask,
                    state_updates={"pending": pending, "low_confidence_streak": 0},
                )
        return TurnPlan(skill.name, request, state_updates={"low_confidence_streak": 0})

    def _probe_knowledge(self, text: str, view: SessionView) -> Any:
        """A confident answer from the knowledge base, or None."""
        kb = self.services.knowledge
        if kb is None or "qa" not in self.registry:
            return None
        memory = view.memory.get("qa", {})
        context = {
            "entities": memory.get("entities", []),
            "last_question": memory.get("last_question"),
            "last_answer": view.last_reply,
        }
        try:
            ans = kb.answer(text, context=context)
        except Exception:  # a probe must never break the turn
            LOG.exception("knowledge probe failed")
            return None
        return ans if getattr(ans, "found", False) else None

    def _clarify(
        self, text: str, options: list[tuple[str, float]], request: SkillRequest, streak: int
    ) -> TurnPlan:
        a, b = options[0][0], options[1][0]
        da = self.registry.get(a).description.rstrip(".")
        db = self.registry.get(b).description.rstrip(".")
        question = (
            f"I'm not sure what you'd like. Should I use {a} ({_lower_first(da)}) or {b} "
            f"({_lower_first(db)})? Reply 1 or 2, or rephrase."
        )
        reply = Reply(
            text=question, skill="clarify", confidence=options[0][1], data={"options": [a, b]}
        )
        pending = {"type": "clarify", "options": [a, b], "text": text, "slots": request.slots}
        return TurnPlan(
            "clarify",
            request,
            direct=reply,
            state_updates={"pending": pending, "low_confidence_streak": streak},
        )

    def _resolve_pending(
        self, pending: dict[str, Any], text: str, view: SessionView
    ) -> TurnPlan | None:
        if pending.get("type") == "slot":
            value = self._fill_slot(pending["slot"], text)
            if value is None:
                return None  # not an answer to the question: route normally, drop the question
            request = SkillRequest(
                text=pending["text"],
                slots={**pending.get("slots", {}), pending["slot"]: value},
                referent_kind=pending.get("referent_kind"),
                referent=pending.get("referent"),
                confidence=float(pending.get("confidence", 1.0)),
                intent=pending.get("intent", ""),
                session=view,
            )
            return TurnPlan(pending["skill"], request, note="slot filled")
        if pending.get("type") == "clarify":
            options = pending.get("options", [])
            choice = _pick_option(text, options)
            if choice is None:
                return None
            request = SkillRequest(
                text=pending["text"],
                slots=dict(pending.get("slots", {})),
                confidence=1.0,
                intent=choice,
                session=view,
            )
            return TurnPlan(choice, request, note="clarified")
        return None

    def _fill_slot(self, slot: str, text: str) -> str | None:
        if slot == "target_language":
            return slot_rules.target_language(text) or slot_rules.any_language(text)
        if slot == "length":
            return slot_rules.summary_length(text)
        if slot == "document":
            return slot_rules.document_name(text, list(self._document_names()))
        value = text.strip()
        return value or None

    def _request(self, text: str, intent: Intent, view: SessionView) -> SkillRequest:
        referent: str | None = None
        kind = intent.referent_kind
        if kind == "last_reply":
            referent = view.last_reply
        elif kind == "last_user_text":
            referent = view.last_user_text
        elif kind == "last_document":
            referent = view.last_document
        if kind == "last_document" and view.last_document and "document" not in intent.slots:
            intent.slots["document"] = view.last_document
        return SkillRequest(
            text=text,
            slots=dict(intent.slots),
            referent=referent,
            referent_kind=kind,
            confidence=intent.confidence,
            intent=intent.intent,
            session=view,
        )

    # -- running a skill ---------------------------------------------------------------
    def _run(self, plan: TurnPlan) -> Iterator[str | Reply]:
        name = plan.skill
        try:
            skill = self.registry.get(name)
            if not getattr(skill, "_llmos_ready", False):
                skill.setup(self.services)
                skill._llmos_ready = True  # type: ignore[attr-defined]
            final: Reply | None = self.before_skill(name) if self.before_skill else None
            items = skill.handle(plan.request, self.services) if final is None else iter(())
            for item in items:
                if isinstance(item, Reply):
                    final = item
                elif isinstance(item, str):
                    if item:
                        yield item
                else:
                    raise SkillError(
                        f"skill {name} yielded {type(item).__name__}, not text or Reply"
                    )
            if final is None:
                raise SkillError(f"skill {name} ended without a Reply")
        except SkillError as exc:
            final = Reply(
                text=f"Sorry, I couldn't do that: {exc}",
                skill=name,
                confidence=0.0,
                data={"error": str(exc)},
            )
            yield final.text
        except Exception as exc:  # a broken skill must not end the conversation
            LOG.exception("skill %s failed", name)
            final = Reply(
                text=f"Sorry, something went wrong in the {name} skill ({type(exc).__name__}). "
                "Please try again or rephrase.",
                skill=name,
                confidence=0.0,
                data={"error": type(exc).__name__},
            )
            yield final.text
        if not final.skill:
            final.skill = name
        if plan.note:
            final.data.setdefault("policy", plan.note)
        yield final

    def _next_state(self, session: Session, plan: TurnPlan, reply: Reply) -> dict[str, Any]:
        state = dict(session.state)
        state.pop("pending", None)
        state.update(plan.state_updates)
        if "negative_streak" in plan.request.extras:
            state["negative_streak"] = plan.request.extras["negative_streak"]
        if (
            reply.skill == "handoff"
            and reply.data.get("ticket") is not None
            and not state.get("handoff")
        ):
            state["handoff"] = {
                "ticket": reply.data["ticket"],
                "status": "open",
                "agent": None,
                "reason": plan.request.slots.get("reason") or plan.note or "asked for a person",
            }
        if state.get("handoff") is None:
            state.pop("handoff", None)
        if plan.kind == "customer":
            return state  # the bot did not speak: keep its memory as it was
        if plan.direct is None or "pending" not in plan.state_updates:
            state["last_skill"] = (
                reply.skill if reply.skill not in {"clarify"} else state.get("last_skill")
            )
        mem = reply.data.get("memory")
        if isinstance(mem, dict):
            memory = dict(state.get("memory", {}))
            memory[reply.skill] = mem
            state["memory"] = memory
        doc = reply.data.get("document") or plan.request.slots.get("document")
        if doc:
            state["last_document"] = doc
        return state


def _pick_option(text: str, options: list[str]) -> str | None:
    low = text.lower().strip(" .!?")
    if re.fullmatch(r"(1|one|first|the first( one)?|option 1)", low) and options:
        return options[0]
    if re.fullmatch(r"(2|two|second|the second( one)?|option 2)", low) and len(options) > 1:
        return options[1]
    for opt in options:
        if opt.lower() in low:
            return opt
    return None


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:] if s else s


def _title_from(text: str) -> str:
    words = text.split()
    title = " ".join(words[:8])
    return title + ("…" if len(words) > 8 else "")
