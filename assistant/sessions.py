"""Persistent conversations: sessions, their turns and handoff tickets in SQLite (WAL).

A turn is one exchange (the user's message and the assistant's reply) and is written in a
single transaction after the reply is known, together with the session's dialogue state. So a
crash either keeps the whole turn or none of it; the caller's retry with the same idempotency
key then returns the stored reply instead of answering twice. Turns of one session are
processed one at a time under a per-session lock (Rasa's lock store does the same for the
same reason: replies must follow the order of the messages).

The schema evolves through ``MIGRATIONS``, a list of functions recorded in ``_migrations``
once applied (the pattern of simonw/llm).
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant.errors import InputError, SessionError, UnknownSessionError, UnknownTicketError
from assistant.sqlite_tx import connect, migrate, write_transaction

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass
class Turn:
    session_id: str
    n: int
    user_text: str
    reply_text: str
    skill: str = ""
    confidence: float = 0.0
    sources: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    kind: str = "chat"  # "chat" | "agent" (a human agent's message) | "system"
    idempotency_key: str | None = None
    created: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "kind": self.kind,
            "user": self.user_text,
            "reply": self.reply_text,
            "skill": self.skill,
            "confidence": self.confidence,
            "sources": self.sources,
            "created": self.created,
        }


@dataclass
class Session:
    id: str
    title: str
    created: float
    updated: float
    state: dict[str, Any] = field(default_factory=dict)
    turns: int = 0


@dataclass
class Ticket:
    id: int
    session_id: str
    status: str  # "open" | "claimed" | "closed"
    reason: str
    created: float
    agent: str | None = None
    updated: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "session_id": self.session_id,
            "status": self.status,
            "reason": self.reason,
            "agent": self.agent,
            "created": self.created,
            "updated": self.updated or self.created,
        }


_TICKET_COLS = "id, session_id, status, reason, created, agent, updated"


# -- migrations ---------------------------------------------------------------------------
def _script(db: sqlite3.Connection, sql: str) -> None:
    # executescript() would COMMIT first, breaking the migration's transaction
    for stmt in sql.split(";"):
        if stmt.strip():
            db.execute(stmt)


def m001_initial(db: sqlite3.Connection) -> None:
    _script(
        db,
        """
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL DEFAULT '',
            created REAL NOT NULL,
            updated REAL NOT NULL,
            state TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE turns (
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            n INTEGER NOT NULL,
            kind TEXT NOT NULL DEFAULT 'chat',
            user_text TEXT NOT NULL,
            reply_text TEXT NOT NULL,
            skill TEXT NOT NULL DEFAULT '',
            confidence REAL NOT NULL DEFAULT 0,
            sources TEXT NOT NULL DEFAULT '[]',
            data TEXT NOT NULL DEFAULT '{}',
            idem_key TEXT,
            created REAL NOT NULL,
            PRIMARY KEY (session_id, n)
        );
        CREATE UNIQUE INDEX turns_idem ON turns(session_id, idem_key) WHERE idem_key IS NOT NULL;
        """,
    )


def m002_tickets(db: sqlite3.Connection) -> None:
    _script(
        db,
        """
        CREATE TABLE tickets (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            status TEXT NOT NULL DEFAULT 'open',
            reason TEXT NOT NULL DEFAULT '',
            agent TEXT,
            created REAL NOT NULL,
            updated REAL NOT NULL
        );
        CREATE INDEX tickets_status ON tickets(status);
        """,
    )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [m001_initial, m002_tickets]


def _check_text(text: str, what: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{what} contains an invalid character (lone surrogate at position {exc.start})"
        ) from None
    return text


def validate_session_id(session_id: str) -> str:
    if not isinstance(session_id, str) or not SESSION_ID_RE.match(session_id):
        raise SessionError("invalid session id: use 1-64 letters, digits, '.', '_', ':' or '-'")
    return session_id


class SessionStore:
    """SQLite-backed store of sessions, turns and tickets; safe to share between threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_symlink():
            raise SessionError(f"refusing a session database behind a symlink: {self.path}")
        self._db = connect(self.path, SessionError, "session database")
        self._db_lock = threading.RLock()
        self._session_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._migrate()

    # -- plumbing ----------------------------------------------------------------------
    def _migrate(self) -> None:
        migrate(self._db, self._db_lock, MIGRATIONS, self._tx)

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return write_transaction(
            self._db,
            self._db_lock,
            SessionError,
            "session database is busy or unwritable",
            "could not save the conversation",
        )

    def lock(self, session_id: str) -> threading.Lock:
        """The lock that serialises turns of one session."""
        with self._locks_guard:
            lk = self._session_locks.get(session_id)
            if lk is None:
                lk = self._session_locks[session_id] = threading.Lock()
            return lk

    def close(self) -> None:
        with self._db_lock:
            self._db.close()

    # -- sessions ----------------------------------------------------------------------
    def create(self, session_id: str | None = None, title: str = "") -> Session:
        sid = validate_session_id(session_id) if session_id else uuid.uuid4().hex[:12]
        now = time.time()
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO sessions (id, title, created, updated, state) VALUES (?,?,?,?,?)",
                    (sid, _check_text(title, "title"), now, now, "{}"),
                )
        except sqlite3.IntegrityError:
            raise SessionError(f"session {sid} already exists") from None
        except sqlite3.OperationalError as exc:
            raise SessionError(f"could not save the session: {exc}") from None
        return Session(id=sid, title=title, created=now, updated=now)

    def get(self, session_id: str) -> Session:
        validate_session_id(session_id)
        with self._db_lock:
            row = self._db.execute(
                "SELECT id, title, created, updated, state, "
                "(SELECT COUNT(*) FROM turns t WHERE t.session_id = s.id) "
                "FROM sessions s WHERE id = ?",
                (session_id,),
            ).fetchone()
        if row is None:
            raise UnknownSessionError(f"unknown session id: {session_id}")
        return Session(
            id=row[0],
            title=row[1],
            created=row[2],
            updated=row[3],
            state=json.loads(row[4]),
            turns=row[5],
        )

    def exists(self, session_id: str) -> bool:
        try:
            self.get(session_id)
        except (UnknownSessionError, SessionError):
            return False
        return True

    def get_or_create(self, session_id: str | None) -> Session:
        if session_id is None:
            return self.create()
        try:
            return self.get(session_id)
        except UnknownSessionError:
            try:
                return self.create(session_id)
            except SessionError:
                return self.get(session_id)

    def list_sessions(self, limit: int = 100) -> list[Session]:
        with self._db_lock:
            rows = self._db.execute(
                "SELECT id, title, created, updated, state, "
                "(SELECT COUNT(*) FROM turns t WHERE t.session_id = s.id) "
                "FROM sessions s ORDER BY updated DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            Session(
                id=r[0], title=r[1], created=r[2], updated=r[3], state=json.loads(r[4]), turns=r[5]
            )
            for r in rows
        ]

    def rename(self, session_id: str, title: str) -> None:
        self.get(session_id)
        with self._tx() as db:
            db.execute(
                "UPDATE sessions SET title = ?, updated = ? WHERE id = ?",
                (_check_text(title, "title"), time.time(), session_id),
            )

    def delete(self, session_id: str) -> None:
        self.get(session_id)
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    # -- turns -------------------------------------------------------------------------
    def turns(self, session_id: str, last: int | None = None) -> list[Turn]:
        validate_session_id(session_id)
        q = (
            "SELECT session_id, n, user_text, reply_text, skill, confidence, sources, data, kind,"
            " idem_key, created FROM turns WHERE session_id = ? ORDER BY n"
        )
        args: tuple[Any, ...] = (session_id,)
        if last is not None:
            q = f"SELECT * FROM ({q} DESC LIMIT ?) ORDER BY n"
            args = (session_id, last)
        with self._db_lock:
            rows = self._db.execute(q, args).fetchall()
        return [_turn(r) for r in rows]

    def find_idempotent(self, session_id: str, key: str) -> Turn | None:
        with self._db_lock:
            row = self._db.execute(
                "SELECT session_id, n, user_text, reply_text, skill, confidence, sources, data, kind,"
                " idem_key, created FROM turns WHERE session_id = ? AND idem_key = ?",
                (session_id, key),
            ).fetchone()
        return _turn(row) if row else None

    def append(
        self,
        session_id: str,
        user_text: str,
        reply_text: str,
        *,
        skill: str = "",
        confidence: float = 0.0,
        sources: list[dict[str, Any]] | None = None,
        data: dict[str, Any] | None = None,
        kind: str = "chat",
        idempotency_key: str | None = None,
        state: dict[str, Any] | None = None,
        title: str | None = None,
    ) -> Turn:
        """Store one turn (and the session's new state) atomically; returns it with its number.

        If a turn with the same idempotency key exists, that turn is returned unchanged.
        """
        _check_text(user_text, "message")
        _check_text(reply_text, "reply")
        try:
            with self._tx() as db:
                if idempotency_key is not None:
                    row = db.execute(
                        "SELECT n FROM turns WHERE session_id = ? AND idem_key = ?",
                        (session_id, idempotency_key),
                    ).fetchone()
                    if row is not None:
                        existing = self.find_idempotent(session_id, idempotency_key)
                        assert existing is not None
                        return existing
                return self._insert_turn(
                    db,
                    Turn(
                        session_id=session_id,
                        n=0,
                        user_text=user_text,
                        reply_text=reply_text,
                        skill=skill,
                        confidence=confidence,
                        sources=sources or [],
                        data=data or {},
                        kind=kind,
                        idempotency_key=idempotency_key,
                    ),
                    state=state,
                    title=title,
                )
        except sqlite3.OperationalError as exc:
            raise SessionError(f"could not save the conversation: {exc}") from None

    def _insert_turn(
        self,
        db: sqlite3.Connection,
        turn: Turn,
        *,
        state: dict[str, Any] | None = None,
        title: str | None = None,
    ) -> Turn:
        """Number and insert ``turn`` inside the caller's transaction; update the session row."""
        now = time.time()
        sid = turn.session_id
        if db.execute("SELECT 1 FROM sessions WHERE id = ?", (sid,)).fetchone() is None:
            raise UnknownSessionError(f"unknown session id: {sid}")
        turn.n = db.execute(
            "SELECT COALESCE(MAX(n), 0) + 1 FROM turns WHERE session_id = ?", (sid,)
        ).fetchone()[0]
        turn.created = now
        db.execute(
            "INSERT INTO turns (session_id, n, kind, user_text, reply_text, skill, confidence,"
            " sources, data, idem_key, created) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                sid,
                turn.n,
                turn.kind,
                turn.user_text,
                turn.reply_text,
                turn.skill,
                float(turn.confidence),
                json.dumps(turn.sources, ensure_ascii=False),
                json.dumps(turn.data, ensure_ascii=False, default=str),
                turn.idempotency_key,
                now,
            ),
        )
        sets: list[str] = ["updated = ?"]
        args: list[Any] = [now]
        if state is not None:
            sets.append("state = ?")
            args.append(json.dumps(state, ensure_ascii=False, default=str))
        if title is not None:
            sets.append("title = ?")
            args.append(title)
        db.execute(f"UPDATE sessions SET {', '.join(sets)} WHERE id = ?", (*args, sid))
        return turn

    def set_state(self, session_id: str, state: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE sessions SET state = ?, updated = ? WHERE id = ?",
                (json.dumps(state, ensure_ascii=False, default=str), time.time(), session_id),
            )

    # -- handoff tickets ---------------------------------------------------------------
    def open_ticket(self, session_id: str, reason: str) -> Ticket:
        """The session's unclosed ticket, or a new open one: one ticket per handoff."""
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                f"SELECT {_TICKET_COLS} FROM tickets WHERE session_id = ? AND status != 'closed'",
                (session_id,),
            ).fetchone()
            if row is not None:
                return Ticket(*row)
            cur = db.execute(
                "INSERT INTO tickets (session_id, status, reason, created, updated)"
                " VALUES (?, 'open', ?, ?, ?)",
                (session_id, reason, now, now),
            )
            tid = int(cur.lastrowid or 0)
        return Ticket(tid, session_id, "open", reason, now, None, now)

    def tickets(self, status: str | None = None) -> list[Ticket]:
        q = f"SELECT {_TICKET_COLS} FROM tickets"
        args: tuple[Any, ...] = ()
        if status:
            q += " WHERE status = ?"
            args = (status,)
        with self._db_lock:
            rows = self._db.execute(q + " ORDER BY id", args).fetchall()
        return [Ticket(*r) for r in rows]

    def ticket(self, ticket_id: int) -> Ticket:
        with self._db_lock:
            row = self._db.execute(
                f"SELECT {_TICKET_COLS} FROM tickets WHERE id = ?", (int(ticket_id),)
            ).fetchone()
        if row is None:
            raise UnknownTicketError(f"unknown ticket #{ticket_id}")
        return Ticket(*row)

    def set_ticket_status(self, ticket_id: int, status: str, agent: str | None = None) -> None:
        if status not in {"open", "claimed", "closed"}:
            raise SessionError(f"invalid ticket status {status!r}")
        with self._tx() as db:
            cur = db.execute(
                "UPDATE tickets SET status = ?, agent = COALESCE(?, agent), updated = ? WHERE id = ?",
                (status, agent, time.time(), ticket_id),
            )
            if cur.rowcount == 0:
                raise UnknownTicketError(f"unknown ticket #{ticket_id}")

    def desk_update(
        self,
        ticket_id: int,
        *,
        status: str,
        agent: str | None,
        handoff: dict[str, Any] | None,
        turn: Turn | None = None,
    ) -> tuple[Ticket, Turn | None]:
        """Change a ticket, the session's handoff state and (optionally) add a turn, atomically.

        The customer's widget learns about a claim, an agent's message or the end of the
        handoff from the stored turns and state; one transaction keeps them in step.
        """
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                f"SELECT {_TICKET_COLS} FROM tickets WHERE id = ?", (int(ticket_id),)
            ).fetchone()
            if row is None:
                raise UnknownTicketError(f"unknown ticket #{ticket_id}")
            ticket = Ticket(*row)
            db.execute(
                "UPDATE tickets SET status = ?, agent = COALESCE(?, agent), updated = ? WHERE id = ?",
                (status, agent, now, ticket.id),
            )
            srow = db.execute(
                "SELECT state FROM sessions WHERE id = ?", (ticket.session_id,)
            ).fetchone()
            state = json.loads(srow[0]) if srow else {}
            if handoff is None:
                state.pop("handoff", None)
            else:
                state["handoff"] = handoff
            stored: Turn | None = None
            if turn is not None:
                stored = self._insert_turn(db, turn, state=state)
            else:
                db.execute(
                    "UPDATE sessions SET state = ?, updated = ? WHERE id = ?",
                    (json.dumps(state, ensure_ascii=False, default=str), now, ticket.session_id),
                )
        ticket.status, ticket.updated = status, now
        ticket.agent = agent or ticket.agent
        return ticket, stored

    # -- statistics --------------------------------------------------------------------
    def stats(self, since: float | None = None, bucket_s: int = 3600) -> dict[str, Any]:
        """Turns, skills used, unanswered rate and handoffs since ``since``, also per bucket."""
        since = float(since or 0.0)
        bucket_s = max(60, int(bucket_s))
        with self._db_lock:
            total, unanswered = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(skill IN ('fallback', 'clarify')), 0) FROM turns"
                " WHERE kind = 'chat' AND created >= ?",
                (since,),
            ).fetchone()
            skills = self._db.execute(
                "SELECT skill, COUNT(*) FROM turns WHERE kind = 'chat' AND created >= ?"
                " GROUP BY skill ORDER BY COUNT(*) DESC",
                (since,),
            ).fetchall()
            handoffs = self._db.execute(
                "SELECT COUNT(*) FROM tickets WHERE created >= ?", (since,)
            ).fetchone()[0]
            sessions = self._db.execute(
                "SELECT COUNT(DISTINCT session_id) FROM turns WHERE created >= ?", (since,)
            ).fetchone()[0]
            turn_series = self._db.execute(
                "SELECT CAST(created / ? AS INTEGER) AS b, COUNT(*),"
                " SUM(skill IN ('fallback', 'clarify')) FROM turns"
                " WHERE kind = 'chat' AND created >= ? GROUP BY b ORDER BY b",
                (bucket_s, since),
            ).fetchall()
            ticket_series = dict(
                self._db.execute(
                    "SELECT CAST(created / ? AS INTEGER) AS b, COUNT(*) FROM tickets"
                    " WHERE created >= ? GROUP BY b",
                    (bucket_s, since),
                ).fetchall()
            )
        buckets = sorted({b for b, _, _ in turn_series} | set(ticket_series))
        by_bucket = {b: (n, u) for b, n, u in turn_series}
        series = [
            {
                "start": b * bucket_s,
                "turns": by_bucket.get(b, (0, 0))[0],
                "unanswered": int(by_bucket.get(b, (0, 0))[1] or 0),
                "handoffs": ticket_series.get(b, 0),
            }
            for b in buckets
        ]
        return {
            "since": since,
            "bucket_s": bucket_s,
            "turns": int(total),
            "sessions": int(sessions),
            "skills": {k or "": int(v) for k, v in skills},
            "unanswered": int(unanswered),
            "unanswered_rate": round(unanswered / total, 4) if total else 0.0,
            "handoffs": int(handoffs),
            "series": series,
        }

    def integrity_check(self) -> str:
        with self._db_lock:
            return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])


def _turn(r: tuple[Any, ...]) -> Turn:
    return Turn(
        session_id=r[0],
        n=r[1],
        user_text=r[2],
        reply_text=r[3],
        skill=r[4],
        confidence=r[5],
        sources=json.loads(r[6]),
        data=json.loads(r[7]),
        kind=r[8],
        idempotency_key=r[9],
        created=r[10],
    )
