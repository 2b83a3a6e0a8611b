"""SQLite plumbing shared by the session and key stores: open, migrate, write transactions.

One connection per store (``check_same_thread=False``, autocommit so transactions are explicit),
WAL with ``synchronous=NORMAL``: an acknowledged write survives a process crash.

``BEGIN IMMEDIATE`` takes the write lock up front (no upgrade deadlock between readers that
turn writers), and a failure rolls back only if a transaction is still open: after a full disk
or an I/O error SQLite has already rolled back, and a bare ROLLBACK would raise "no
transaction is active" and hide the error that matters.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

Migration = Callable[[sqlite3.Connection], None]


def connect(path: Path, error: type[Exception], what: str) -> sqlite3.Connection:
    """Open ``path`` with the pragmas every llmos store uses; errors name the file in one line."""
    db: sqlite3.Connection | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30.0)
        _enable_wal(db)
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=30000")
    except (sqlite3.DatabaseError, OSError) as exc:
        if db is not None:
            db.close()  # e.g. a full disk while switching to WAL: leave no handle behind
        raise error(f"cannot open the {what} {path}: {exc}") from None
    return db


def _enable_wal(db: sqlite3.Connection, patience_s: float = 30.0) -> None:
    """Switch to WAL, retrying while another process does the same.

    Two processes opening a new database at once (``llmos serve --workers 2`` on a fresh
    project) both ask for WAL; the switch needs an exclusive lock, and SQLite answers "database
    is locked" at once instead of waiting, since waiting could deadlock. The other process
    finishes within milliseconds, so a short retry is enough.
    """
    deadline = time.monotonic() + patience_s
    pause = 0.01
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def migrate(
    db: sqlite3.Connection,
    lock: threading.Lock | threading.RLock,
    migrations: list[Migration],
    transaction: Callable[[], contextlib.AbstractContextManager[sqlite3.Connection]],
) -> None:
    """Apply the migrations not yet recorded in ``_migrations``, each in its own transaction
    (the pattern of simonw/llm)."""
    with lock:
        db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied REAL)")
        done = {r[0] for r in db.execute("SELECT name FROM _migrations")}
        for fn in migrations:
            if fn.__name__ in done:
                continue
            with transaction():
                # Another process opening the same new database may have applied it between
                # the read above and this write transaction (workers starting together).
                if db.execute(
                    "SELECT 1 FROM _migrations WHERE name = ?", (fn.__name__,)
                ).fetchone():
                    continue
                fn(db)
                db.execute(
                    "INSERT INTO _migrations (name, applied) VALUES (?, ?)",
                    (fn.__name__, time.time()),
                )


def rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        with contextlib.suppress(sqlite3.OperationalError):
            db.execute("ROLLBACK")


@contextmanager
def write_transaction(
    db: sqlite3.Connection,
    lock: threading.Lock | threading.RLock,
    error: type[Exception],
    busy: str,
    failed: str,
) -> Iterator[sqlite3.Connection]:
    """Yield ``db`` inside BEGIN IMMEDIATE ... COMMIT; errors become ``error(busy|failed: ...)``."""
    with lock:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise error(f"{busy}: {exc}") from None
        try:
            yield db
        except BaseException:
            rollback(db)
            raise
        else:
            try:
                db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                rollback(db)
                raise error(f"{failed}: {exc}") from None
