"""The HTTP service: a thin FastAPI layer over :class:`assistant.api.Assistant`.

    llmos serve [--project DIR] [--host 127.0.0.1] [--port 8000] [--workers N]

Routes (all but ``/healthz``, ``/openapi.json``, ``/`` and ``/widget.js`` need a key in the
``X-API-Key`` header; a key in the query string or a cookie is ignored):

    POST /v1/chat                       widget  one turn -> {"session_id", "turn", "reply", ...}
    POST /v1/chat/stream                widget  the same turn as server-sent events
    GET  /v1/sessions/{id}?after=N      widget  the transcript (turns after N) and handoff state
    GET  /v1/tickets?status=            agent   the handoff desk
    GET  /v1/tickets/{id}               agent   a ticket and its conversation
    POST /v1/tickets/{id}/claim|reply|close  agent
    POST /v1/documents                  admin   upload files (multipart) or {"name", "text"}
    GET  /v1/stats?since=&bucket=       admin   turns, skills, unanswered rate, handoffs
    GET  /healthz                               liveness, no key

With ``sessions.retention_days`` set in llmos.yaml, a background thread deletes conversations
idle that long (:class:`RetentionSweeper`: at start-up, then hourly by default).

The routes and the shared service state live here; the request and response bodies in
:mod:`assistant.http_models`, the ASGI plumbing (error bodies, body limits, CORS, CSP, log
redaction, the h11 head deadline) in :mod:`assistant.http_asgi`, uploads in
:mod:`assistant.uploads`.

Why it is shaped this way:

- Turns run in a bounded thread pool, never on the event loop, so a skill that hangs cannot
  stall ``/healthz`` or other sessions. A turn that outlives ``turn_timeout_s`` gets a polite
  200 reply with ``timed_out: true`` and is *stored as that*: the user's message with a reply
  of skill ``timeout`` (``status: "failed_timeout"`` in ``GET /v1/sessions/{id}``), under the
  request's idempotency key, so a retry replays the same outcome. The session lock is taken
  from the hung thread, so the next message is served at once; if the skill finishes later
  its reply is dropped (logged), never stored as a second answer.
- A per-skill circuit breaker: after ``breaker_threshold`` consecutive timeouts of one skill
  it is skipped (a fallback reply) for ``breaker_cooldown_s``; ``/healthz`` lists it under
  ``degraded_skills``. A full disk answers 503 with ``Retry-After`` (nothing of the turn is
  kept) and ``/healthz`` says ``storage: "full"`` until a turn is stored again.
- Turns of one session start in the order the server accepted them: a FIFO asyncio lock per
  session is taken before the turn is handed to a thread (a plain thread lock wakes waiters
  in no particular order). The store's own per-session lock and its single-transaction
  appends then make each turn land exactly once, numbered without gaps.
- Keys are checked against salted digests (``assistant.keys``), roles gate routes, widget keys
  are bound to browser origins (exact match; CORS preflights are answered for any origin some
  active widget key allows), and every key has a token bucket (``assistant.ratelimit``).
- Request bodies are capped before they are read (413), JSON and multipart alike.

- Slow clients (RELIABILITY F8): uvicorn's ``limit_concurrency`` and ``timeout_keep_alive``
  are set; a connection must send a request head within ``headers_timeout_s`` and a body
  within ``body_timeout_s`` (408), so idle or 1-byte-a-second clients cannot hold slots.

With ``--workers N`` uvicorn imports :func:`app_from_env` in each worker process, so no
SQLite connection crosses a ``fork()``. Turns of one session stay in order across workers:
the session store's lock is also a byte-range lock on a file beside the database (arrival
order between workers is the order they take that lock). Rate limits are per worker: a key
may get up to N times its limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool

from assistant.dialogue import validate_message
from assistant.errors import (
    InputError,
    LlmosError,
    UnknownSessionError,
)
from assistant.exports import prune_exports
from assistant.http_asgi import (
    STORAGE_FULL_TEXT,
    ApiError,
    BodyLimitMiddleware,
    CorsMiddleware,
    GuardedH11Protocol,
    error_response,
    install_error_handlers,
    log_config,
    page_csp,
)
from assistant.http_models import (
    AUTH_ERRORS,
    DOC_NAME_RE,
    MAX_ID,
    SSE_EVENTS,
    TEXT_RE,
    AgentIn,
    AgentReplyIn,
    AgentReplyOut,
    ChatIn,
    ChatOut,
    CloseIn,
    FileError,
    HealthOut,
    IngestOut,
    StatsOut,
    TicketDetailOut,
    TicketOut,
    TranscriptOut,
    error_responses,
)
from assistant.keys import EPHEMERAL_ID, ApiKey, KeyStore, normalize_origin
from assistant.ratelimit import RateLimiter
from assistant.sessions import (
    FAILED_TIMEOUT,
    SESSION_ID_RE,
    SessionStore,
    SweepReport,
    Turn,
    TurnAbandonedError,
    TurnTicket,
    is_storage_full,
)
from assistant.uploads import (
    parse_multipart,
    safe_upload_name,
    save_uploads,
    upload_dir,
)
from skills.base import Reply

LOG = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
TIMEOUT_TEXT = (
    "Sorry, that is taking too long and I had to stop. Please ask again in a moment, or rephrase."
)
SKIPPED_TEXT = (
    "Sorry, I can't do that right now: that part of the assistant is not responding. "
    "Please try again later, or ask for a person."
)


# -- settings -----------------------------------------------------------------------------
@dataclass
class ServerSettings:
    """How the service runs; ``llmos serve`` flags map onto these fields."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_body_bytes: int = 64 * 1024
    """Largest request body for every route but uploads (413 beyond)."""
    max_upload_bytes: int = 16 * 1024 * 1024
    """Largest ``POST /v1/documents`` body."""
    turn_timeout_s: float = 20.0
    """A turn that takes longer gets a polite reply (200, ``timed_out: true``) and is stored
    as a ``timeout`` turn."""
    breaker_threshold: int = 3
    """Consecutive timeouts of one skill before it is skipped for ``breaker_cooldown_s``."""
    breaker_cooldown_s: float = 60.0
    """How long a skill whose circuit opened is skipped (then one trial turn may run)."""
    storage_retry_after_s: int = 30
    """``Retry-After`` of the 503 answered while the disk is full."""
    turn_threads: int = 4
    """Threads that run turns; a hung skill holds one, never the event loop."""
    unauthenticated_rate_per_min: float = 600.0
    """Requests with a missing or wrong key, per client address, before 429."""
    public_origins: list[str] = field(default_factory=list)
    """This server's own origins (the demo page's widget key allows them); derived from
    host and port when empty."""
    demo_key: bool = True
    """Create an in-memory widget key for the demo page at ``/``."""
    demo_secret: str | None = None
    """Share one demo key between workers (set by :func:`serve`)."""
    docs: bool = False
    """Serve ``/docs`` and ``/redoc`` (``/openapi.json`` is always served)."""
    torch_threads: int = 1
    """Intra-op threads per turn (``llmos serve`` only): turns already run in parallel, and
    more would oversubscribe the cores (measured: 40-47 -> 58 FAQ answers/s on 2 cores)."""
    switch_interval_s: float = 0.0005
    """``sys.setswitchinterval`` for ``llmos serve``: the event loop gets the GIL back sooner
    from busy turn threads (p50 at one client 17 -> 11 ms on 2 loaded cores)."""
    limit_concurrency: int = 512
    """uvicorn: connections beyond this get 503 instead of piling up."""
    timeout_keep_alive: int = 5
    """uvicorn: an idle keep-alive connection is closed after this many seconds."""
    headers_timeout_s: float = 10.0
    """A connection that sends no complete request head for this long is closed."""
    body_timeout_s: float = 30.0
    """A request body not complete this long after the request started gets 408."""
    upload_timeout_s: float = 300.0
    """The same for ``POST /v1/documents``."""

    def origins(self) -> list[str]:
        if self.public_origins:
            return sorted({normalize_origin(o) for o in self.public_origins})
        hosts = {self.host}
        if self.host in {"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"}:
            hosts = {"127.0.0.1", "localhost"}
        out = []
        for h in sorted(hosts):
            h = f"[{h}]" if ":" in h else h
            out.append(normalize_origin(f"http://{h}:{self.port}"))
        return out

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, text: str | None) -> ServerSettings:
        return cls(**json.loads(text)) if text else cls()


# -- the service's state ------------------------------------------------------------------
class _SessionGate:
    """One FIFO asyncio lock per session: turns start in the order they were accepted."""

    def __init__(self) -> None:
        self._locks: dict[str, list[Any]] = {}  # session id -> [lock, holders + waiters]

    async def acquire(self, session_id: str) -> Callable[[], None]:
        entry = self._locks.get(session_id)
        if entry is None:
            entry = self._locks[session_id] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            await entry[0].acquire()
        except BaseException:
            self._drop(session_id, entry)
            raise
        done = False

        def release() -> None:
            nonlocal done
            if not done:
                done = True
                entry[0].release()
                self._drop(session_id, entry)

        return release

    def _drop(self, session_id: str, entry: list[Any]) -> None:
        entry[1] -= 1
        if entry[1] <= 0 and self._locks.get(session_id) is entry:
            del self._locks[session_id]


class SkillBreaker:
    """A circuit breaker per skill (RELIABILITY F7): after ``threshold`` consecutive
    timeouts a skill is skipped for ``cooldown_s``; then turns may try it again (half-open):
    one success closes the circuit, one more timeout opens it for another cool-down."""

    def __init__(
        self, threshold: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = max(1, int(threshold))
        self.cooldown_s = float(cooldown_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, int] = {}
        self._open_until: dict[str, float] = {}

    def allow(self, skill: str) -> bool:
        with self._lock:
            return self._clock() >= self._open_until.get(skill, 0.0)

    def timed_out(self, skill: str) -> None:
        with self._lock:
            n = self._failures[skill] = self._failures.get(skill, 0) + 1
            if n >= self.threshold:
                self._open_until[skill] = self._clock() + self.cooldown_s
                LOG.warning(
                    "skill %s timed out %d times in a row: skipped for %gs",
                    skill,
                    n,
                    self.cooldown_s,
                )

    def succeeded(self, skill: str) -> None:
        with self._lock:
            self._failures.pop(skill, None)
            self._open_until.pop(skill, None)

    def open_skills(self) -> list[str]:
        """Skills skipped right now."""
        now = self._clock()
        with self._lock:
            return sorted(k for k, until in self._open_until.items() if now < until)


#: The breaker and ticket of the turn the current thread runs (set by :class:`Service`).
_TURN = threading.local()


def _before_skill(name: str) -> Reply | None:
    """The dialogue's ``before_skill`` hook in a served turn: note which skill the turn runs
    (for the breaker), and answer a fallback reply while that skill's circuit is open.
    Outside a server turn (no breaker on the thread) it lets every skill run."""
    breaker: SkillBreaker | None = getattr(_TURN, "breaker", None)
    ticket: TurnTicket | None = getattr(_TURN, "ticket", None)
    if breaker is not None and not breaker.allow(name):
        return Reply(
            text=SKIPPED_TEXT,
            skill="fallback",
            confidence=0.0,
            data={"skipped_skill": name, "reason": "circuit open after repeated timeouts"},
        )
    if ticket is not None:
        ticket.skill = name
    return None


def _guard_skills(assistant: Any) -> None:
    dialogue = getattr(assistant, "dialogue", None)
    if dialogue is not None:
        dialogue.before_skill = _before_skill


class Service:
    """What the routes share: the assistant, keys, limits, the turn pool."""

    def __init__(self, assistant: Any, keys: KeyStore, settings: ServerSettings) -> None:
        self.assistant = assistant
        self.keys = keys
        self.settings = settings
        self.limiter = RateLimiter()
        self.pool = ThreadPoolExecutor(
            max_workers=max(1, settings.turn_threads), thread_name_prefix="llmos-turn"
        )
        self.gate = _SessionGate()
        self._start_lock = threading.Lock()
        self.started = time.time()
        self.in_flight = 0
        self._in_flight_lock = threading.Lock()
        self.demo_key: str | None = None
        self.breaker = SkillBreaker(settings.breaker_threshold, settings.breaker_cooldown_s)
        self.storage_full_since: float | None = None
        _guard_skills(assistant)

    # -- health ------------------------------------------------------------------------
    def storage_failed(self, exc: BaseException) -> None:
        """A write failed on a full disk: /healthz says so until a turn is stored again."""
        if self.storage_full_since is None:
            LOG.error("session storage is full: %s", exc)
            self.storage_full_since = time.time()

    def storage_ok(self) -> None:
        if self.storage_full_since is not None:
            LOG.warning("session storage writes again")
            self.storage_full_since = None

    def health(self) -> dict[str, Any]:
        degraded = self.breaker.open_skills()
        storage = "full" if self.storage_full_since is not None else "ok"
        return {
            "status": "degraded" if degraded or storage != "ok" else "ok",
            "bot": self.assistant.config.name,
            "uptime_s": round(time.time() - self.started, 1),
            "turns_in_flight": self.in_flight,
            "storage": storage,
            "degraded_skills": degraded,
            "pid": os.getpid(),
        }

    # -- auth --------------------------------------------------------------------------
    def authenticate(self, request: Request, secret: str | None, right: str) -> ApiKey:
        key = self.keys.verify(secret) if secret else None
        if key is None:
            client = request.client.host if request.client else "unknown"
            d = self.limiter.hit(f"ip:{client}", self.settings.unauthenticated_rate_per_min)
            if not d.allowed:
                raise ApiError(429, "too many requests", {"Retry-After": str(d.retry_after)})
            msg = "missing API key" if not secret else "invalid or revoked API key"
            raise ApiError(401, msg, {"WWW-Authenticate": f'ApiKey header="{API_KEY_HEADER}"'})
        d = self.limiter.hit(f"key:{key.id}:{key.prefix}", key.rate)
        if not d.allowed:
            raise ApiError(
                429,
                f"rate limit exceeded; retry in {d.retry_after} s",
                {"Retry-After": str(d.retry_after)},
            )
        if not key.can(right):
            raise ApiError(403, f"a {key.role} key cannot do this")
        origin = request.headers.get("origin")
        if key.role == "widget" and origin is not None and origin not in key.origins:
            raise ApiError(403, "this key is not allowed from this origin")
        return key

    # -- sessions ----------------------------------------------------------------------
    async def session_for(self, key: ApiKey, session_id: str | None, idem: str | None) -> str:
        """The conversation this request continues or starts; 404 for one the key may not see."""
        if session_id is not None:
            await run_in_threadpool(self.check_access, key, session_id)
            return session_id
        return await run_in_threadpool(self.start_session, key, idem)

    def start_session(self, key: ApiKey, idem: str | None) -> str:
        with self._start_lock:  # a retried "start" must not start two sessions
            if idem is not None:
                found = self.keys.session_for(key.id, idem)
                if found is not None:
                    if self.assistant.store.exists(found):
                        return found
                    self.keys.forget_session(found)  # deleted since, by its user or a sweep
            sid = self.assistant.new_session()
            return self.keys.bind_session(sid, key.id, idem)

    def check_access(self, key: ApiKey, session_id: str) -> None:
        if not self.assistant.store.exists(session_id):
            raise UnknownSessionError(f"unknown session id: {session_id}")
        if key.role == "widget" and self.keys.session_owner(session_id) != key.id:
            # the same answer as for a missing session: ids are not probed this way
            raise UnknownSessionError(f"unknown session id: {session_id}")

    # -- turns -------------------------------------------------------------------------
    def _count(self, delta: int) -> None:
        with self._in_flight_lock:
            self.in_flight += delta

    @contextlib.contextmanager
    def _tracked(self, ticket: TurnTicket) -> Any:
        """Run this thread's turn under ``ticket`` with this service's breaker."""
        _TURN.breaker, _TURN.ticket = self.breaker, ticket
        try:
            with self.assistant.store.track(ticket):
                yield
        finally:
            _TURN.breaker = _TURN.ticket = None

    def _finished(self, ticket: TurnTicket) -> None:
        """A turn stored in time: its skill works, and so does the disk."""
        if ticket.skill and not ticket.abandoned:
            self.breaker.succeeded(ticket.skill)
        self.storage_ok()

    def _turn_job(
        self,
        ticket: TurnTicket,
        key: ApiKey,
        session_id: str,
        text: str,
        idem: str | None,
        check: bool,
    ) -> dict[str, Any] | None:
        # one thread hop per message: access check, turn and response body together
        # (every hop back to the event loop waits for the GIL behind busy turn threads)
        if ticket.abandoned:  # given up while it waited for a thread
            return None
        self._count(1)
        try:
            with self._tracked(ticket):
                if check:
                    self.check_access(key, session_id)
                reply = self.assistant.chat(text, session_id, idempotency_key=idem)
            body = self.chat_body(session_id, reply)
        except TurnAbandonedError:
            LOG.info(
                "late reply of a timed-out turn in session %s (skill %s, %.1fs) dropped",
                session_id,
                ticket.skill,
                time.monotonic() - ticket.started,
            )
            return None
        finally:
            self._count(-1)
        self._finished(ticket)
        return body

    def _record_timeout(
        self,
        ticket: TurnTicket,
        text: str,
        idem: str | None,
        key: ApiKey | None = None,
    ) -> dict[str, Any] | None:
        """Store the timed-out turn and free its session (None: it was stored just now).

        ``key``: check it may use the session first (the turn may not have started, and so
        not have checked, when every turn thread is busy)."""
        if key is not None:
            try:
                self.check_access(key, ticket.session_id)
            except LlmosError:
                ticket.abandoned = True  # the queued turn would fail the same check
                raise
        skill = ticket.skill
        LOG.warning(
            "turn in session %s exceeded %.1fs (skill %s): stored as %s",
            ticket.session_id,
            self.settings.turn_timeout_s,
            skill,
            FAILED_TIMEOUT,
        )
        data: dict[str, Any] = {"timeout_s": self.settings.turn_timeout_s}
        if skill:
            data["skill"] = skill
        turn = self.assistant.store.abandon_turn(
            ticket, text, TIMEOUT_TEXT, data=data, idempotency_key=idem
        )
        if turn is None:
            return None
        if skill:
            self.breaker.timed_out(skill)
        self.storage_ok()
        return self.timeout_body(ticket.session_id, turn)

    async def turn(
        self, key: ApiKey, session_id: str | None, text: str, idem: str | None
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        check = session_id is not None
        if session_id is None:
            session_id = await self.session_for(key, None, idem)
        ticket = TurnTicket(session_id)
        release = await self.gate.acquire(session_id)
        try:
            fut = loop.run_in_executor(
                self.pool, self._turn_job, ticket, key, session_id, text, idem, check
            )
        except BaseException:
            release()
            raise
        # the gate opens when the turn ends or is given up, not when the client goes away
        fut.add_done_callback(lambda _f: release())
        fut.add_done_callback(_retrieve)  # a given-up turn's error is logged, not left over
        try:
            out = await asyncio.wait_for(asyncio.shield(fut), self.settings.turn_timeout_s)
        except TimeoutError:
            try:
                out = await run_in_threadpool(
                    self._record_timeout, ticket, text, idem, key if check else None
                )
                if out is None:  # it was stored just in time: its reply is on its way
                    out = await fut
            finally:
                release()
        if out is None:  # pragma: no cover - only a given-up turn returns None
            raise ApiError(503, "the turn was given up; retry")
        return out

    def public_sources(self, sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Source refs relative to the project: clients need no server file paths."""
        root = Path(self.assistant.project.root)
        state = Path(self.assistant.project.state)
        out = []
        for src in sources:
            ref = str(src.get("ref") or "")
            if ref and Path(ref).is_absolute():
                p = Path(ref)
                for base in (root, state):
                    if p.is_relative_to(base):
                        ref = p.relative_to(base).as_posix()
                        break
                else:
                    ref = p.name
            out.append({**src, "ref": ref})
        return out

    def turn_dict(self, turn: Any) -> dict[str, Any]:
        d = turn.to_dict()
        d["sources"] = self.public_sources(d.get("sources") or [])
        status = (getattr(turn, "data", None) or {}).get("status")
        if isinstance(status, str):
            d["status"] = status  # "failed_timeout": the turn was given up
        return d

    def timeout_body(self, session_id: str, turn: Turn | None = None) -> dict[str, Any]:
        """The /v1/chat body of a turn that timed out (``turn``: as stored)."""
        data: dict[str, Any] = dict(turn.data) if turn is not None else {}
        data.update({"session_id": session_id, "turn": turn.n if turn is not None else None})
        return {
            "session_id": session_id,
            "turn": turn.n if turn is not None else None,
            "reply": {
                "text": turn.reply_text if turn is not None else TIMEOUT_TEXT,
                "skill": "timeout",
                "confidence": 0.0,
                "sources": [],
                "data": _jsonable(data),
            },
            "handoff": None,
            "timed_out": True,
            "replayed": False,
        }

    def chat_body(self, session_id: str, reply: Any) -> dict[str, Any]:
        """The /v1/chat response for a reply (called in a turn thread: it may read the store)."""
        data = _jsonable(reply.data)
        if "handoff" in reply.data:
            handoff = data.get("handoff")
        else:
            handoff = self.assistant.handoff_state(session_id)
        out = reply.to_dict()
        out["data"] = data
        out["sources"] = self.public_sources(out["sources"])
        return {
            "session_id": session_id,
            "turn": data.get("turn"),
            "reply": out,
            "handoff": handoff,
            "timed_out": data.get("status") == FAILED_TIMEOUT,  # a replayed timeout
            "replayed": bool(data.get("replayed", False)),
        }

    async def stream(self, session_id: str, text: str, idem: str | None) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        end = object()
        yield _sse("start", {"session_id": session_id})
        ticket = TurnTicket(session_id)
        release = await self.gate.acquire(session_id)

        def work() -> None:
            if ticket.abandoned:
                return
            self._count(1)
            try:
                with self._tracked(ticket):
                    for item in self.assistant.stream(text, session_id, idempotency_key=idem):
                        if not isinstance(item, str):
                            item = self.chat_body(session_id, item)
                            self._finished(ticket)
                        loop.call_soon_threadsafe(queue.put_nowait, item)
            except TurnAbandonedError:
                LOG.info("late reply of a timed-out streamed turn in %s dropped", session_id)
            except BaseException as exc:  # reported to the client as an error event
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                self._count(-1)
                loop.call_soon_threadsafe(queue.put_nowait, end)

        try:
            fut = loop.run_in_executor(self.pool, work)
        except BaseException:
            release()
            raise
        fut.add_done_callback(lambda _f: release())
        deadline: float | None = loop.time() + self.settings.turn_timeout_s
        while True:
            try:
                wait = None if deadline is None else max(0.0, deadline - loop.time())
                item = await asyncio.wait_for(queue.get(), wait)
            except TimeoutError:
                try:
                    body = await run_in_threadpool(self._record_timeout, ticket, text, idem)
                except LlmosError as exc:
                    release()
                    if is_storage_full(exc):
                        self.storage_failed(exc)
                        yield _sse("error", {"error": STORAGE_FULL_TEXT})
                    else:
                        yield _sse("error", {"error": str(exc)})
                    return
                if body is None:  # stored just in time: read on to its "done"
                    deadline = None
                    continue
                release()
                yield _sse("done", body)
                return
            if item is end:
                return
            if isinstance(item, str):
                yield _sse("chunk", {"text": item})
            elif isinstance(item, BaseException):
                if isinstance(item, LlmosError) and is_storage_full(item):
                    self.storage_failed(item)
                    message = STORAGE_FULL_TEXT
                elif isinstance(item, LlmosError):
                    message = str(item)
                else:
                    LOG.error("streamed turn failed", exc_info=item)
                    message = "internal error"
                yield _sse("error", {"error": message})
                return
            else:
                yield _sse("done", item)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        LOG.debug("turn ended with %s", type(fut.exception()).__name__)


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, ensure_ascii=False, default=str))


# -- retention ----------------------------------------------------------------------------
class RetentionSweeper:
    """Runs the session store's retention sweep in a background thread: once at start-up,
    then every ``interval_s`` (``sessions.retention_days`` / ``sweep_interval_s`` in
    llmos.yaml). Each sweep logs one line of counts: no session ids, no text.

    Every ``--workers`` process runs its own; they do not get in each other's way, since a
    session is deleted under its cross-process lock and a locked one is only skipped.
    """

    def __init__(
        self,
        store: SessionStore,
        max_age_s: float,
        interval_s: float,
        exports_dir: Path | None = None,
        keys: KeyStore | None = None,
    ) -> None:
        self.store = store
        self.exports_dir = exports_dir
        self.keys = keys  # whose owner rows of swept sessions go too
        self.max_age_s = max_age_s
        self.interval_s = interval_s
        self.last: SweepReport | None = None
        self.sweeps = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llmos-retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the thread to end and wait for a sweep in progress (the store closes next)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def run_once(self) -> SweepReport | None:
        """One sweep; a failure is logged (one line) and retried at the next interval."""
        report: SweepReport | None = None
        try:
            report = self.store.sweep(self.max_age_s)
            if self.exports_dir is not None:  # the transcripts exported from swept sessions
                report.exports_removed = prune_exports(self.exports_dir, self.store.exists)
            if self.keys is not None:
                self.keys.prune_owners(self.store.exists)
        except Exception as exc:
            LOG.warning("retention sweep failed: %s", exc)
        else:
            self.last = report
            LOG.info("%s", report.line())
        self.sweeps += 1  # counted when done (and logged), so a waiter sees the whole sweep
        return report

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval_s)


def start_retention(assistant: Any, keys: KeyStore | None = None) -> RetentionSweeper | None:
    """The background sweep for ``assistant``'s project, or None when retention is not set."""
    cfg = getattr(getattr(assistant, "config", None), "sessions", None)
    if cfg is None or cfg.retention_s is None:
        return None
    project = getattr(assistant, "project", None)
    sweeper = RetentionSweeper(
        assistant.store,
        cfg.retention_s,
        cfg.sweep_interval_s,
        exports_dir=project.exports_dir if project is not None else None,
        keys=keys,
    )
    sweeper.start()
    return sweeper


# -- static files -------------------------------------------------------------------------
def _static(name: str) -> str | None:
    try:
        f = resources.files("assistant").joinpath("static").joinpath(name)
        if not f.is_file():
            return None
        return f.read_text(encoding="utf-8")
    except (OSError, ModuleNotFoundError, UnicodeDecodeError):
        return None


# -- the app ------------------------------------------------------------------------------
def create_app(
    assistant: Any | None = None,
    *,
    project: Any = None,
    settings: ServerSettings | None = None,
) -> FastAPI:
    """The ASGI app. Without ``assistant`` it builds one for ``project`` at start-up
    (and closes it at shutdown); a given assistant is shared and left open."""
    from assistant.project import Project, resolve_project

    settings = settings or ServerSettings()
    if assistant is not None:
        proj = assistant.project
    else:
        proj = project if isinstance(project, Project) else resolve_project(project)
        proj.ensure_dirs()
    keys = KeyStore.for_project(proj)

    def start(bot: Any) -> Service:
        svc_ = Service(bot, keys, settings)
        if settings.demo_key:
            _, svc_.demo_key = keys.create_ephemeral(
                "widget", origins=settings.origins(), secret=settings.demo_secret
            )
        return svc_

    # a given assistant is served at once (ASGI test clients may skip the lifespan)
    service: Service | None = start(assistant) if assistant is not None else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal service
        if service is not None:
            app.state.sweeper = start_retention(service.assistant, service.keys)
            try:
                yield
            finally:
                if app.state.sweeper is not None:
                    await run_in_threadpool(app.state.sweeper.stop)
            return
        from assistant.api import Assistant

        bot = await run_in_threadpool(Assistant, proj)
        service = start(bot)
        app.state.service = service
        app.state.sweeper = start_retention(bot, service.keys)
        try:
            yield
        finally:
            if app.state.sweeper is not None:
                await run_in_threadpool(app.state.sweeper.stop)
            service.close()
            bot.close()

    app = FastAPI(
        title="llmos assistant API",
        version="1",
        description="Chat, handoff desk, documents and statistics of an llmos bot. "
        f"Send your key in the {API_KEY_HEADER} header.",
        lifespan=lifespan,
        docs_url="/docs" if settings.docs else None,
        redoc_url="/redoc" if settings.docs else None,
    )
    app.state.keys = keys
    app.state.settings = settings
    app.state.service = service
    app.state.sweeper = None  # the retention sweep, started by the lifespan when configured
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,  # type: ignore[arg-type]
        limit=settings.max_body_bytes,
        upload_limit=settings.max_upload_bytes,
        timeout=settings.body_timeout_s,
        upload_timeout=settings.upload_timeout_s,
    )
    app.add_middleware(CorsMiddleware, keys=keys)  # type: ignore[arg-type]

    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

    def svc() -> Service:
        if service is None:
            raise ApiError(503, "the assistant is starting")
        return service

    def need(right: str) -> Callable[..., Awaitable[ApiKey]]:
        async def dependency(request: Request, secret: str | None = Security(header)) -> ApiKey:
            return svc().authenticate(request, secret, right)

        return dependency

    chat_key = Depends(need("chat"))
    desk_key = Depends(need("desk"))
    admin_key = Depends(need("admin"))

    # -- public ------------------------------------------------------------------------
    @app.get("/healthz", response_model=HealthOut, tags=["service"])
    async def healthz() -> dict[str, Any]:
        """Liveness: answered on the event loop, so it stays fast while turns run.
        ``status`` is ``degraded`` while the disk is full (``storage: "full"``) or a skill
        is skipped after repeated timeouts (``degraded_skills``)."""
        return svc().health()

    @app.get("/widget.js", include_in_schema=False)
    async def widget_js() -> Response:
        text = _static("widget.js")
        if text is None:
            return error_response(404, "the web widget is not installed")
        return Response(
            text,
            media_type="application/javascript; charset=utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        s = svc()
        text = _static("index.html")
        if text is None or s.demo_key is None:
            return error_response(404, "no demo page")
        page = text.replace("{{WIDGET_KEY}}", html.escape(s.demo_key)).replace(
            "{{TITLE}}", html.escape(s.assistant.config.name)
        )
        return HTMLResponse(
            page,
            headers={"Cache-Control": "no-store", "Content-Security-Policy": page_csp(page)},
        )

    # -- chat --------------------------------------------------------------------------
    @app.post(
        "/v1/chat",
        response_model=ChatOut,
        tags=["chat"],
        responses=error_responses(*AUTH_ERRORS, 404, 503),
    )
    async def chat(body: ChatIn, key: ApiKey = chat_key) -> dict[str, Any]:
        """One turn: a new conversation when ``session_id`` is null."""
        text = validate_message(body.message)
        return await svc().turn(key, body.session_id, text, body.idempotency_key)

    @app.post(
        "/v1/chat/stream",
        tags=["chat"],
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "Server-sent events: start, chunk..., done (or error)",
                "content": {"text/event-stream": {"schema": SSE_EVENTS}},
            },
            **error_responses(*AUTH_ERRORS, 404, 503),
        },
    )
    async def chat_stream(body: ChatIn, key: ApiKey = chat_key) -> StreamingResponse:
        """The same turn as ``/v1/chat``, streamed: ``event: start``, ``event: chunk``
        (``{"text"}``) as the skill writes, then ``event: done`` with the /v1/chat body."""
        s = svc()
        text = validate_message(body.message)
        sid = await s.session_for(key, body.session_id, body.idempotency_key)
        return StreamingResponse(
            s.stream(sid, text, body.idempotency_key),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get(
        "/v1/sessions/{session_id}",
        response_model=TranscriptOut,
        tags=["chat"],
        responses=error_responses(*AUTH_ERRORS, 404),
    )
    async def session(
        session_id: str = PathParam(pattern=SESSION_ID_RE.pattern),
        after: int = Query(0, ge=0, le=MAX_ID, description="only turns numbered above this"),
        key: ApiKey = chat_key,
    ) -> dict[str, Any]:
        """The conversation's turns (the widget polls this for agent messages)."""
        s = svc()

        def read() -> dict[str, Any]:
            s.check_access(key, session_id)
            turns = s.assistant.transcript(session_id)
            return {
                "session_id": session_id,
                "turns": [s.turn_dict(t) for t in turns if t.n > after],
                "handoff": s.assistant.handoff_state(session_id),
            }

        return await run_in_threadpool(read)

    @app.delete(
        "/v1/sessions/{session_id}",
        status_code=204,
        tags=["chat"],
        responses=error_responses(*AUTH_ERRORS, 404, 503),
    )
    async def delete_session(
        session_id: str = PathParam(pattern=SESSION_ID_RE.pattern), key: ApiKey = chat_key
    ) -> Response:
        """Delete the conversation now, on the user's request: its turns, handoff tickets and
        exported transcripts, scrubbed from disk (``llmos sessions delete`` does the same). A
        widget key deletes only the conversations it started; 503 while a turn is in flight."""
        s = svc()

        def delete() -> None:
            s.check_access(key, session_id)
            s.assistant.store.delete(session_id)
            s.keys.forget_session(session_id)
            prune_exports(s.assistant.project.exports_dir, s.assistant.store.exists)

        await run_in_threadpool(delete)
        return Response(status_code=204)

    # -- the handoff desk --------------------------------------------------------------
    TicketId = PathParam(ge=1, le=MAX_ID)

    @app.get(
        "/v1/tickets",
        response_model=list[TicketOut],
        tags=["desk"],
        responses=error_responses(*AUTH_ERRORS),
    )
    async def tickets(
        status: Literal["open", "claimed", "closed"] | None = None, key: ApiKey = desk_key
    ) -> list[dict[str, Any]]:
        """Handoff tickets, oldest first."""
        found = await run_in_threadpool(svc().assistant.tickets, status)
        return [t.to_dict() for t in found]

    @app.get(
        "/v1/tickets/{ticket_id}",
        response_model=TicketDetailOut,
        tags=["desk"],
        responses=error_responses(*AUTH_ERRORS, 404),
    )
    async def ticket(ticket_id: int = TicketId, key: ApiKey = desk_key) -> dict[str, Any]:
        """A ticket with the customer's conversation so far."""
        s = svc()
        bot = s.assistant

        def read() -> dict[str, Any]:
            t = bot.ticket(ticket_id)
            return {  # what an agent sees is redacted like any export (assistant/pii.py)
                "ticket": t.to_dict(),
                "turns": [s.turn_dict(x) for x in bot.redacted_transcript(t.session_id)],
                "handoff": bot.handoff_state(t.session_id),
            }

        return await run_in_threadpool(read)

    @app.post(
        "/v1/tickets/{ticket_id}/claim",
        response_model=TicketOut,
        tags=["desk"],
        responses=error_responses(*AUTH_ERRORS, 404, 409),
    )
    async def claim(body: AgentIn, ticket_id: int = TicketId, key: ApiKey = desk_key) -> Any:
        """Take the conversation: the customer's next messages go to this agent."""
        t = await run_in_threadpool(svc().assistant.claim_ticket, ticket_id, body.agent)
        return t.to_dict()

    @app.post(
        "/v1/tickets/{ticket_id}/reply",
        response_model=AgentReplyOut,
        tags=["desk"],
        responses=error_responses(*AUTH_ERRORS, 404, 409),
    )
    async def agent_reply(
        body: AgentReplyIn, ticket_id: int = TicketId, key: ApiKey = desk_key
    ) -> dict[str, Any]:
        """Write into the customer's conversation (they see it on their next poll)."""
        bot = svc().assistant

        def do() -> dict[str, Any]:
            turn = bot.agent_reply(ticket_id, body.agent, body.text)
            return {"ticket": bot.ticket(ticket_id).to_dict(), "turn": turn.to_dict()}

        return await run_in_threadpool(do)

    @app.post(
        "/v1/tickets/{ticket_id}/close",
        response_model=TicketOut,
        tags=["desk"],
        responses=error_responses(*AUTH_ERRORS, 404, 409),
    )
    async def close(body: CloseIn, ticket_id: int = TicketId, key: ApiKey = desk_key) -> Any:
        """End the handoff; the assistant answers the customer again."""
        t = await run_in_threadpool(svc().assistant.close_ticket, ticket_id, body.agent)
        return t.to_dict()

    # -- admin -------------------------------------------------------------------------
    upload_schema = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "files": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                            }
                        },
                        "required": ["files"],
                    }
                },
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "name": {
                                "type": "string",
                                "pattern": DOC_NAME_RE,
                                "description": "a .txt or .md file name",
                            },
                            "text": {"type": "string", "pattern": TEXT_RE},
                        },
                        "required": ["name", "text"],
                    }
                },
            },
        }
    }

    @app.post(
        "/v1/documents",
        response_model=IngestOut,
        tags=["admin"],
        responses=error_responses(*AUTH_ERRORS, 503),
        openapi_extra=upload_schema,
    )
    async def documents(request: Request, key: ApiKey = admin_key) -> Any:
        """Add documents to the knowledge base: multipart files, or one JSON
        ``{"name", "text"}``. Names are reduced to plain file names; files land in the
        project's upload folder and are ingested at once."""
        s = svc()
        files = await _read_upload(request)
        proj = s.assistant.project

        def work() -> tuple[int, dict[str, Any]]:
            saved, errors = save_uploads(proj, files)
            if not saved:
                return 400, _ingest_body([], None, errors)
            report = s.assistant.ingest([str(p) for p in saved], roots=[upload_dir(proj)])
            failed = {str(Path(p).resolve()) for p, _ in report.errors}
            for p in saved:  # do not keep what cannot be ingested (it would fail at start-up)
                if str(p.resolve()) in failed:
                    with contextlib.suppress(OSError):
                        p.unlink()
            errors += [FileError(file=Path(p).name, error=str(e)) for p, e in report.errors]
            ok = [p for p in saved if str(p.resolve()) not in failed]
            return (200 if ok else 400), _ingest_body(ok, report, errors)

        status, out = await run_in_threadpool(work)
        if status != 200:
            first = out["errors"][0]["error"] if out["errors"] else "no files"
            return JSONResponse({"error": first, **out}, status_code=status)
        return out

    @app.get(
        "/v1/stats",
        response_model=StatsOut,
        tags=["admin"],
        responses=error_responses(*AUTH_ERRORS),
    )
    async def stats(
        since: float | None = Query(None, ge=0, le=1e11, allow_inf_nan=False),
        bucket: Literal["hour", "day"] = "hour",
        key: ApiKey = admin_key,
    ) -> dict[str, Any]:
        """Turns, skills used (intents), unanswered rate and handoffs, also per hour/day."""
        bucket_s = 3600 if bucket == "hour" else 86400
        out = await run_in_threadpool(svc().assistant.stats, since, bucket_s)
        out = dict(out)
        out.setdefault("intents", out.get("skills", {}))
        return out

    return app


def _ingest_body(saved: list[Path], report: Any, errors: list[FileError]) -> dict[str, Any]:
    def names(paths: Any) -> list[str]:
        return [Path(p).name for p in paths]

    return {
        "saved": names(saved),
        "added": names(report.added) if report else [],
        "updated": names(report.updated) if report else [],
        "unchanged": names(report.unchanged) if report else [],
        "errors": [e.model_dump() for e in errors],
        "chunks": int(report.chunks) if report else 0,
        "seconds": round(float(report.seconds), 3) if report else 0.0,
    }


async def _read_upload(request: Request) -> list[tuple[str, bytes]]:
    ctype = request.headers.get("content-type", "")
    body = await request.body()  # capped by BodyLimitMiddleware
    main = ctype.split(";", 1)[0].strip().lower()
    if main == "multipart/form-data":
        try:
            files = parse_multipart(body, ctype)
        except InputError as exc:
            raise ApiError(400, str(exc)) from None
        if not files:
            raise ApiError(400, "no files in the upload (send them as multipart file parts)")
        return files
    if main == "application/json" or main.endswith("+json"):
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "body is not valid JSON") from None
        if not isinstance(doc, dict):
            raise ApiError(400, 'expected {"name": ..., "text": ...}')
        name, text = doc.get("name"), doc.get("text")
        if not isinstance(name, str) or not isinstance(text, str) or not text.strip():
            raise ApiError(400, 'expected {"name": ..., "text": ...} with non-empty text')
        if not re.fullmatch(DOC_NAME_RE, name):
            raise ApiError(400, f"{name[:80]!r}: name a .txt or .md file (letters, digits, ._-)")
        if "\x00" in text:
            raise ApiError(400, "text contains a NUL character")
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, "text contains an invalid character (lone surrogate)") from None
        return [(name, data)]
    raise ApiError(400, "send multipart/form-data files or application/json")


# -- running ------------------------------------------------------------------------------
_ENV_PROJECT = "LLMOS_SERVE_PROJECT"
_ENV_SETTINGS = "LLMOS_SERVE_SETTINGS"


def app_from_env() -> FastAPI:
    """The app factory each ``--workers`` process imports (project and settings from env)."""
    project = os.environ.get(_ENV_PROJECT) or None
    settings = ServerSettings.from_env(os.environ.get(_ENV_SETTINGS))
    GuardedH11Protocol.headers_timeout_s = settings.headers_timeout_s
    tune_process(settings)
    return create_app(project=project, settings=settings)


def tune_process(settings: ServerSettings) -> None:
    """Process-wide knobs for a server process (not applied to an app made in tests)."""
    import sys

    if settings.switch_interval_s > 0:
        sys.setswitchinterval(settings.switch_interval_s)
    if settings.torch_threads > 0:
        try:
            import torch
        except ImportError:  # pragma: no cover - torch is a dependency
            return
        torch.set_num_threads(settings.torch_threads)


def uvicorn_options(settings: ServerSettings, log_level: str = "info") -> dict[str, Any]:
    """The shipped uvicorn configuration (``llmos serve``): limits for slow clients included."""
    GuardedH11Protocol.headers_timeout_s = settings.headers_timeout_s
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": log_level,
        "limit_concurrency": settings.limit_concurrency,
        "timeout_keep_alive": settings.timeout_keep_alive,
        "http": GuardedH11Protocol,
        "server_header": False,
        "proxy_headers": False,
        "log_config": log_config(),
    }


def is_loopback(host: str) -> bool:
    return host in {"127.0.0.1", "::1", "localhost"} or host.startswith("127.")


def serve(
    project: str | None = None,
    *,
    settings: ServerSettings | None = None,
    log_level: str = "info",
) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    settings = settings or ServerSettings()
    if not is_loopback(settings.host):
        LOG.warning(
            "listening on %s: the service is reachable from other machines; "
            "put it behind a TLS reverse proxy",
            settings.host,
        )
    common = uvicorn_options(settings, log_level)
    if settings.workers > 1:
        from assistant.keys import generate_secret

        if settings.demo_key and settings.demo_secret is None:
            settings.demo_secret = generate_secret("widget")
        from assistant.project import resolve_project

        proj = resolve_project(project)
        os.environ[_ENV_PROJECT] = "" if proj.is_demo else str(proj.root)
        os.environ[_ENV_SETTINGS] = settings.to_env()
        uvicorn.run(
            "assistant.server:app_from_env", factory=True, workers=settings.workers, **common
        )
        return
    tune_process(settings)
    uvicorn.run(create_app(project=project, settings=settings), **common)


__all__ = [
    "EPHEMERAL_ID",
    "GuardedH11Protocol",
    "RetentionSweeper",
    "ServerSettings",
    "SkillBreaker",
    "app_from_env",
    "create_app",
    "parse_multipart",
    "safe_upload_name",
    "serve",
    "uvicorn_options",
]
