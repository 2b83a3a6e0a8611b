"""Persistent conversations: sessions, their turns and handoff tickets in SQLite (WAL).

A turn is one exchange (the user's message and the assistant's reply) and is written in a
single transaction after the reply is known, together with the session's dialogue state. So a
crash either keeps the whole turn or none of it; the caller's retry with the same idempotency
key then returns the stored reply instead of answering twice. Turns of one session are
processed one at a time under a per-session lock (Rasa's lock store does the same for the
same reason: replies must follow the order of the messages).

The per-session lock holds across processes too (``llmos serve --workers N``): a thread lock
orders the threads of one process, and a byte-range lock on ``<db>.locks`` (one byte per
session, at an offset hashed from its id) orders the processes sharing the database.

A caller that gives up on a turn (the HTTP server's turn timeout) records the outcome with
:meth:`SessionStore.abandon_turn`: the user's message and a ``timeout`` reply are stored as
the turn, the session lock is released for the next message, and the abandoned thread's own
reply, if it ever comes, is refused (:class:`TurnAbandonedError`) instead of being stored
as a second answer.

Deleting really removes the data (RELIABILITY H3): every connection runs with
``PRAGMA secure_delete=ON`` (freed space in the database file is overwritten with zeros), and
after a delete the write-ahead log is checkpointed and truncated, so the frames that still held
the deleted rows leave the disk too. :meth:`SessionStore.delete` and the retention sweep
(:meth:`SessionStore.sweep`) take the session's lock, the one turns take, so neither can
interleave with a turn in flight (RELIABILITY B3). (Rows deleted before secure_delete was on,
in a database from an older llmos, may linger in its free pages until a ``VACUUM``.)

The schema evolves through ``MIGRATIONS``, a list of functions recorded in ``_migrations``
once applied (the pattern of simonw/llm).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from assistant.errors import InputError, SessionError, UnknownSessionError, UnknownTicketError
from assistant.sqlite_tx import connect, migrate, write_transaction

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

#: The ``data["status"]`` of a turn recorded by :meth:`SessionStore.abandon_turn`.
FAILED_TIMEOUT = "failed_timeout"
_LOCK_SLOTS = 1 << 30  # byte offsets in the lock file: collisions only serialise two sessions


class StorageFullError(SessionError):
    """The disk (or the database's quota) is full: nothing of the write was kept; retry later."""


class TurnAbandonedError(SessionError):
    """The turn was given up (timed out) and recorded as such; its late reply is not stored."""


class SessionBusyError(SessionError):
    """The session's lock is held (a turn is in flight) and did not come free in time."""


def is_storage_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the database quota) is full."""
    code = getattr(exc, "sqlite_errorcode", None)
    text = str(exc)
    return code == 13 or "disk is full" in text or "No space left" in text  # 13: SQLITE_FULL


def _save_error(exc: BaseException, what: str = "could not save the conversation") -> SessionError:
    """One line for a failed write; a full disk gets its own type (the server answers 503)."""
    if isinstance(exc, StorageFullError):
        return exc
    text = str(exc) if isinstance(exc, SessionError) else f"{what}: {exc}"
    return StorageFullError(text) if is_storage_full(exc) else SessionError(text)


@dataclass
class TurnTicket:
    """One turn in flight that its caller may give up on (see :meth:`SessionStore.abandon_turn`).

    The thread running the turn enters :meth:`SessionStore.track` with it; ``skill`` may be
    filled in by whoever knows which skill runs (the server's circuit breaker does).
    """

    session_id: str
    thread: int | None = None
    skill: str | None = None
    abandoned: bool = False
    stored: Turn | None = None
    started: float = field(default_factory=time.monotonic)


class SessionLock:
    """Serialises the turns of one session: within the process and across processes.

    Used as ``with store.lock(session_id): ...``. The holder can be evicted by
    :meth:`SessionStore.abandon_turn`; the evicted thread's own release is then a no-op.
    """

    def __init__(self, store: SessionStore, session_id: str) -> None:
        self._store = store
        self.session_id = session_id
        self._lock = threading.Lock()
        self._holder: int | None = None  # thread ident
        self._guard = threading.Lock()

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait for the session; False after ``timeout`` seconds (None: the store's default)."""
        limit = self._store.lock_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + limit
        ticket = self._store.current_ticket()
        while True:
            if ticket is not None and ticket.abandoned:
                raise TurnAbandonedError("the turn was given up before it started")
            if self._lock.acquire(timeout=min(0.25, max(0.0, deadline - time.monotonic()))):
                break
            if time.monotonic() >= deadline:
                return False
        try:
            if not self._store._file_lock(self.session_id, deadline):
                self._lock.release()
                return False
        except BaseException:
            self._lock.release()
            raise
        with self._guard:
            self._holder = threading.get_ident()
        return True

    def release(self) -> None:
        """Release if this thread holds the lock (an evicted holder's release does nothing)."""
        with self._guard:
            if self._holder != threading.get_ident():
                return
            self._holder = None
            self._store._file_unlock(self.session_id)
            self._lock.release()

    def evict(self, thread: int) -> bool:
        """Take the lock away from ``thread`` (a turn that was given up); True if it held it."""
        with self._guard:
            if self._holder is None or self._holder != thread:
                return False
            self._holder = None
            self._store._file_unlock(self.session_id)
            self._lock.release()  # a plain Lock may be released by another thread
            return True

    def locked(self) -> bool:
        return self._lock.locked()

    def held_here(self) -> bool:
        """Whether the calling thread holds the lock (the lock is not re-entrant)."""
        with self._guard:
            return self._holder == threading.get_ident()

    def __enter__(self) -> SessionLock:
        if not self.acquire():
            raise SessionBusyError(
                f"session {self.session_id} is busy (waited {self._store.lock_timeout_s:g} s); "
                "retry"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


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


@dataclass
class SweepReport:
    """What one retention sweep did: counts only (no ids, no text: it is logged)."""

    cutoff: float
    """Sessions whose last activity is older than this (epoch seconds) were due."""
    deleted: int = 0
    kept_open_ticket: int = 0
    """Due, but kept: a handoff ticket is open or claimed (a person is on it)."""
    skipped_busy: int = 0
    """Due, but a turn held the session's lock: the next sweep picks it up."""
    refreshed: int = 0
    """Due at the scan, but active again (or handed off) by the time its lock was taken."""
    scrubbed: bool = True
    """The write-ahead log was checkpointed and truncated after the deletes (or after an
    earlier delete whose checkpoint had not finished)."""
    exports_removed: int = 0
    """Transcript exports of deleted sessions removed with them (by the caller that knows the
    project's exports folder: ``assistant.exports.prune_exports``)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        text = (
            f"retention sweep: deleted {self.deleted}, kept {self.kept_open_ticket} with an open "
            f"handoff ticket, skipped {self.skipped_busy} busy, {self.refreshed} active again"
        )
        if self.exports_removed:
            text += f", {self.exports_removed} exported transcripts removed"
        if not self.scrubbed:
            text += "; the write-ahead log could not be cleared yet (a reader held it)"
        return text


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
        try:
            self._db = connect(self.path, SessionError, "session database")
        except SessionError as exc:  # a full disk at open is a full disk (503), not a bad file
            raise _save_error(exc) from None
        try:
            # freed pages and cells are zeroed: deleted turns do not linger in the file (H3)
            self._db.execute("PRAGMA secure_delete=ON")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise _save_error(exc, f"cannot open the session database {self.path}") from None
        self._db_lock = threading.RLock()
        # Weak: a session's lock lives while a turn holds or waits for it, so a long-running
        # server does not keep one per session it ever saw.
        self._session_locks: weakref.WeakValueDictionary[str, SessionLock] = (
            weakref.WeakValueDictionary()
        )
        self._locks_guard = threading.Lock()
        self._local = threading.local()
        self.lock_timeout_s = 120.0
        """How long a turn waits for its session before a one-line "busy" error."""
        self.delete_timeout_s = 10.0
        """How long :meth:`delete` waits for a turn in flight before :class:`SessionBusyError`."""
        self._scrub_pending = False  # a checkpoint after a delete did not finish: retry it
        self._lock_fd: int | None = None
        self._held_slots: dict[int, int] = {}  # lock-file offset -> holders in this process
        self._slots_guard = threading.Lock()
        try:
            self._lock_fd = os.open(
                str(self.path) + ".locks", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            self._db.close()
            raise _save_error(exc, f"cannot open the session lock file {self.path}.locks") from None
        try:
            self._migrate()
        except BaseException:
            self.close()  # a store that failed to open holds no connection or lock file
            raise

    # -- plumbing ----------------------------------------------------------------------
    def _migrate(self) -> None:
        try:
            migrate(self._db, self._db_lock, MIGRATIONS, self._tx)
        except sqlite3.OperationalError as exc:  # the bookkeeping outside the migrations' tx
            raise _save_error(exc, f"could not prepare the session database {self.path}") from None

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            with write_transaction(
                self._db,
                self._db_lock,
                SessionError,
                "session database is busy or unwritable",
                "could not save the conversation",
            ) as db:
                yield db
        except (SessionError, sqlite3.OperationalError) as exc:
            if isinstance(exc, SessionError) and not is_storage_full(exc):
                raise
            raise _save_error(exc) from None

    def lock(self, session_id: str) -> SessionLock:
        """The lock that serialises turns of one session (across processes too)."""
        with self._locks_guard:
            lk = self._session_locks.get(session_id)
            if lk is None:
                lk = self._session_locks[session_id] = SessionLock(self, session_id)
            return lk

    def _slot(self, session_id: str) -> int:
        digest = hashlib.blake2b(session_id.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % _LOCK_SLOTS

    def _file_lock(self, session_id: str, deadline: float) -> bool:
        """Hold the session's byte in the lock file for this process (polling: another
        process may hold it; POSIX locks belong to processes, so threads count holders)."""
        import fcntl

        slot = self._slot(session_id)
        pause = 0.001
        while True:
            with self._slots_guard:
                if self._lock_fd is None:
                    raise SessionError("the session store is closed")
                held = self._held_slots.get(slot, 0)
                if held:
                    self._held_slots[slot] = held + 1
                    return True
                try:
                    fcntl.lockf(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, slot)
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EDEADLK):
                        raise SessionError(f"cannot lock session {session_id}: {exc}") from None
                else:
                    self._held_slots[slot] = 1
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.02)

    def _file_unlock(self, session_id: str) -> None:
        import fcntl

        slot = self._slot(session_id)
        with self._slots_guard:
            held = self._held_slots.get(slot, 0)
            if held > 1:
                self._held_slots[slot] = held - 1
                return
            self._held_slots.pop(slot, None)
            if held and self._lock_fd is not None:
                fcntl.lockf(self._lock_fd, fcntl.LOCK_UN, 1, slot)

    # -- turns that may be given up ----------------------------------------------------
    def current_ticket(self) -> TurnTicket | None:
        """The ticket the calling thread's turn runs under, if any."""
        return getattr(self._local, "ticket", None)

    @contextlib.contextmanager
    def track(self, ticket: TurnTicket) -> Iterator[TurnTicket]:
        """Run this thread's turn under ``ticket`` (so that it can be given up)."""
        ticket.thread = threading.get_ident()
        self._local.ticket = ticket
        try:
            yield ticket
        finally:
            self._local.ticket = None

    def abandon_turn(
        self,
        ticket: TurnTicket,
        user_text: str,
        reply_text: str,
        *,
        data: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Turn | None:
        """Give up on ``ticket``'s turn: store ``user_text`` with ``reply_text`` (skill
        ``timeout``, ``data["status"] == "failed_timeout"``) and free the session lock.

        Returns None when the turn was stored just before (the caller should use its real
        reply instead). A :class:`StorageFullError` here still frees the lock.
        """
        with self._db_lock:  # append() stores and marks ``ticket.stored`` under this lock
            if ticket.stored is not None:
                return None
            ticket.abandoned = True
        try:
            return self.append(
                ticket.session_id,
                user_text,
                reply_text,
                skill="timeout",
                data={"status": FAILED_TIMEOUT, **(data or {})},
                idempotency_key=idempotency_key,
                _ticket=False,
            )
        finally:
            if ticket.thread is not None:
                self.lock(ticket.session_id).evict(ticket.thread)

    def close(self) -> None:
        with self._db_lock:
            self._db.close()
        with self._slots_guard:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases this process's byte-range locks
                self._lock_fd = None
                self._held_slots.clear()

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
            raise _save_error(exc, "could not save the session") from None
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

    def delete(self, session_id: str, *, timeout: float | None = None) -> None:
        """Delete a session with its turns and tickets, and scrub their bytes from disk.

        Takes the session's lock, the one turns take: waits up to ``timeout`` seconds
        (default :attr:`delete_timeout_s`) for a turn in flight to finish, then raises
        :class:`SessionBusyError`. A thread that holds the lock (a turn deleting its own
        session) deletes at once. Open handoff tickets go too: this is an explicit request.

        After the commit the write-ahead log is checkpointed and truncated; if that fails
        the rows are gone but their bytes may stay in the log until the next sweep retries
        the checkpoint, and a :class:`SessionError` says so (:class:`SessionBusyError` when
        a reader held the log).
        """
        self.get(session_id)
        lk = self.lock(session_id)
        mine = lk.held_here()
        wait = self.delete_timeout_s if timeout is None else timeout
        if not mine and not lk.acquire(timeout=wait):
            raise SessionBusyError(
                f"session {session_id} is busy (a turn is in flight; waited {wait:g} s); retry"
            )
        try:
            with self._tx() as db:
                if db.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount == 0:
                    raise UnknownSessionError(f"unknown session id: {session_id}")
        finally:
            if not mine:
                lk.release()
        if not self._scrub(f"session {session_id} was deleted, but"):
            raise SessionBusyError(
                f"session {session_id} was deleted, but a reader kept the write-ahead log from "
                "being cleared; its bytes go at the next sweep, delete or restart"
            )

    def sweep(self, max_age_s: float, now: float | None = None) -> SweepReport:
        """Delete every session whose last activity is more than ``max_age_s`` seconds old.

        Last activity is the session's ``updated`` time (its last turn, state change, rename
        or desk action). Each session is deleted under its own lock, like :meth:`delete`:

        * a session whose lock is held (a turn in flight) is skipped and counted, not waited
          for; the next sweep picks it up;
        * a session with an open or claimed handoff ticket is kept (a person is working on
          it) and counted; once the ticket is closed the session can expire;
        * the age and the ticket are checked again inside the deleting transaction, so a
          turn or a handoff that lands between the scan and the lock keeps the session.

        A storage error stops the sweep with a typed :class:`SessionError`; what was deleted
        before it stays deleted. The write-ahead log is checkpointed and truncated at the end
        (``scrubbed`` in the report says whether that completed).
        """
        if (
            isinstance(max_age_s, bool)
            or not isinstance(max_age_s, int | float)
            or not math.isfinite(max_age_s)
            or max_age_s <= 0
        ):
            raise SessionError(f"retention must be a positive number of seconds, got {max_age_s!r}")
        cutoff = (time.time() if now is None else float(now)) - float(max_age_s)
        report = SweepReport(cutoff=cutoff)
        with self._db_lock:
            due = self._db.execute(
                "SELECT s.id, EXISTS (SELECT 1 FROM tickets t WHERE t.session_id = s.id"
                " AND t.status != 'closed') FROM sessions s WHERE s.updated < ?"
                " ORDER BY s.updated, s.id",
                (cutoff,),
            ).fetchall()
        try:
            self._sweep_due(due, cutoff, report)
        except BaseException:
            if report.deleted:  # what was deleted before the error: clear it from the log too
                with contextlib.suppress(SessionError):
                    self._scrub("sessions were deleted, but")
            raise
        if report.deleted or self._scrub_pending:
            report.scrubbed = self._scrub("sessions were deleted, but")
        return report

    def _sweep_due(self, due: list[tuple[str, int]], cutoff: float, report: SweepReport) -> None:
        for sid, has_ticket in due:
            if has_ticket:
                report.kept_open_ticket += 1
                continue
            lk = self.lock(sid)
            if lk.held_here() or not lk.acquire(timeout=0.0):
                report.skipped_busy += 1
                continue
            try:
                with self._tx() as db:
                    gone = db.execute(
                        "DELETE FROM sessions WHERE id = ? AND updated < ? AND NOT EXISTS"
                        " (SELECT 1 FROM tickets t WHERE t.session_id = ?"
                        " AND t.status != 'closed')",
                        (sid, cutoff, sid),
                    ).rowcount
            finally:
                lk.release()
            if gone:
                report.deleted += 1
            else:
                report.refreshed += 1

    def _scrub(self, what: str) -> bool:
        """Checkpoint the write-ahead log into the database and truncate it, so the frames
        that held deleted rows leave the disk (secure_delete has zeroed the pages they are
        copied over). False when a reader kept the checkpoint from finishing."""
        with self._db_lock:
            self._scrub_pending = True
            try:
                busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                raise _save_error(
                    exc, f"{what} clearing the write-ahead log failed (the next sweep retries)"
                ) from None
            self._scrub_pending = busy != 0
        return busy == 0

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
        _ticket: bool = True,
    ) -> Turn:
        """Store one turn (and the session's new state) atomically; returns it with its number.

        If a turn with the same idempotency key exists, that turn is returned unchanged. In a
        thread whose turn was given up (:meth:`abandon_turn`), raises TurnAbandonedError.
        """
        _check_text(user_text, "message")
        _check_text(reply_text, "reply")
        ticket = self.current_ticket() if _ticket else None
        if ticket is not None and ticket.session_id != session_id:
            ticket = None
        with self._db_lock:
            if ticket is not None and ticket.abandoned:
                raise TurnAbandonedError(
                    f"the turn in session {session_id} timed out and was recorded as such; "
                    "its late reply is not stored"
                )
            turn = self._append(
                session_id,
                user_text,
                reply_text,
                skill=skill,
                confidence=confidence,
                sources=sources,
                data=data,
                kind=kind,
                idempotency_key=idempotency_key,
                state=state,
                title=title,
            )
            if ticket is not None:
                ticket.stored = turn
            return turn

    def _append(
        self,
        session_id: str,
        user_text: str,
        reply_text: str,
        *,
        skill: str,
        confidence: float,
        sources: list[dict[str, Any]] | None,
        data: dict[str, Any] | None,
        kind: str,
        idempotency_key: str | None,
        state: dict[str, Any] | None,
        title: str | None,
    ) -> Turn:
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
            raise _save_error(exc) from None

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
