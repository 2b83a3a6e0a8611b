"""One write transaction on a shared SQLite connection, for the session and key stores.

``BEGIN IMMEDIATE`` takes the write lock up front (no upgrade deadlock between readers that
turn writers), and a failure rolls back only if a transaction is still open: after a full disk
or an I/O error SQLite has already rolled back, and a bare ROLLBACK would raise "no
transaction is active" and hide the error that matters.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager


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
