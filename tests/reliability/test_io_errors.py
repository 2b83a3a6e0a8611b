"""Systematic SQLite I/O-error injection into the session store (RELIABILITY.md A4).

A VFS shim (:mod:`tests.reliability._faultvfs`) fails the N-th ``xWrite`` / ``xSync`` /
``xTruncate`` with ``SQLITE_IOERR_*`` or ``SQLITE_FULL``, once or from N on. Each operation of
the real :class:`assistant.sessions.SessionStore` runs at N = 1, 2, 3, ... on a fresh copy of
its database until it completes without meeting the fault. At every N:

* the caller got either the result or a typed one-line :class:`SessionError`
  (:class:`StorageFullError` for a full disk), never a raw ``sqlite3`` error;
* with the fault switched off, ``PRAGMA integrity_check`` is ok and the rows equal either the
  state before the operation or the state after it (a reported success must be the latter);
* the same store object, without a restart, appends a new turn and reads it back.

Opening a new database applies the schema one migration at a time, each in its own
transaction; an open cut short between two of them leaves that (recorded) prefix, which the
next open completes, so those states are accepted too.

A wall clock fixed per phase makes the row dumps comparable (timestamps are data too). The
default suite runs the turn append (the path every message takes) and the first open, both
modes, IOERR and FULL; the other operations (a turn larger than the page cache, append then
close with its checkpoint, delete, the retention sweep, migration of an old-schema database)
and the compound pass (faults while recovering a hot WAL left by a kill -9) are ``slow`` (NIGHTLY tier).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from assistant import sessions as sessions_mod
from assistant import sqlite_tx
from assistant.errors import SessionError
from assistant.sessions import SessionStore, StorageFullError
from tests.reliability._faultvfs import FaultVFS
from tests.reliability.conftest import SessionClock

REPO = Path(__file__).resolve().parents[2]
N_CAP = 200
T_BUILD, T_OP, T_AFTER = 1_000_000.0, 2_000_000.0, 3_000_000.0


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture
def clock(clock: SessionClock) -> SessionClock:
    """The shared clock, fixed: the rows written in one phase carry one timestamp."""
    clock.now = T_BUILD
    return clock


# -- database helpers ----------------------------------------------------------------------
def dump(path: Path) -> tuple[str, list[str]]:
    """``integrity_check`` and a canonical dump (schema and rows, sorted) via a new connection."""
    db = sqlite3.connect(str(path), timeout=30)
    try:
        ok = str(db.execute("PRAGMA integrity_check").fetchone()[0])
        return ok, sorted(db.iterdump())
    finally:
        db.close()


def backup(src: Path, dst: Path) -> None:
    """Copy a database with SQLite's backup API (consistent even if ``src`` had a WAL)."""
    s = sqlite3.connect(str(src))
    d = sqlite3.connect(str(dst))
    try:
        s.backup(d)
    finally:
        d.close()
        s.close()


def fill(store: SessionStore, sessions: int = 3, turns: int = 4) -> None:
    for i in range(sessions):
        store.create(f"s{i}", title=f"session {i}")
        for j in range(turns):
            store.append(
                f"s{i}",
                f"question {i}.{j} " + "q" * 300,
                f"answer {i}.{j} " + "a" * 300,
                skill="faq",
                idempotency_key=f"k{i}.{j}",
                state={"turn": j},
            )
    store.open_ticket("s1", "wants a human")


# -- operations ----------------------------------------------------------------------------
@dataclass
class Scenario:
    """One operation: ``build`` makes the pristine database, ``restore`` copies it to a path,
    ``run`` performs the operation (on an open store, or opening it itself)."""

    name: str
    build: Callable[[Path], None]
    run: Callable[[Path, SessionStore | None], SessionStore | None]
    opens_store: bool = False  # run() opens the store itself (migration, crash recovery)
    restore: Callable[[Path, Path], None] = backup
    steps: Callable[[Path], Iterator[None]] | None = None  # makes the consistent states in between


def _append(path: Path, store: SessionStore | None) -> SessionStore | None:
    assert store is not None
    store.append("s1", "where is my parcel?", "It left the depot.", skill="faq",
                 idempotency_key="new", state={"turn": 99})  # fmt: skip
    return store


def _append_big(path: Path, store: SessionStore | None) -> SessionStore | None:
    """A turn larger than the page cache (2 MiB default): pages spill to the WAL mid-transaction."""
    assert store is not None
    store.append("s1", "log " + "x" * (3 << 20), "noted", idempotency_key="big")
    return store


def _append_close(path: Path, store: SessionStore | None) -> SessionStore | None:
    """Append, then close: the last connection's checkpoint writes and syncs the database."""
    assert store is not None
    _append(path, store)
    store.close()
    return None


def _delete(path: Path, store: SessionStore | None) -> SessionStore | None:
    assert store is not None
    store.delete("s1")  # cascades to its turns and its ticket
    return store


def _build_current(path: Path) -> None:
    store = SessionStore(path)
    fill(store)
    store.close()


def _build_old_schema(path: Path) -> None:
    """A database as the first release wrote it: only ``m001_initial`` applied."""
    db = sqlite_tx.connect(path, SessionError, "session database")
    lock = threading.RLock()

    def tx() -> Any:
        return sqlite_tx.write_transaction(db, lock, SessionError, "busy", "failed")

    sqlite_tx.migrate(db, lock, [sessions_mod.m001_initial], tx)
    with tx():
        for i in range(3):
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, '{}')", (f"s{i}", "", 1.0, 1.0))
            for j in range(1, 4):
                db.execute(
                    "INSERT INTO turns (session_id, n, user_text, reply_text, created)"
                    " VALUES (?, ?, ?, ?, 1.0)",
                    (f"s{i}", j, f"q{j} " + "q" * 200, f"a{j}"),
                )
    db.close()


def _migrate(path: Path, store: SessionStore | None) -> SessionStore | None:
    return SessionStore(path)  # applies m002_tickets


def _recover_append(path: Path, store: SessionStore | None) -> SessionStore | None:
    """Open a database left by a kill -9 (recovery of the hot WAL), append, close."""
    assert Path(str(path) + "-wal").stat().st_size > 0, "no hot WAL: nothing to recover"
    s = SessionStore(path)
    try:
        s.append("a", "after the crash", "welcome back", idempotency_key="after-crash")
    finally:
        s.close()
    return None


def _migration_steps(path: Path) -> Iterator[None]:
    """Apply the schema one migration at a time (each its own transaction, recorded in
    ``_migrations``): an open interrupted between two of them leaves one of these states,
    and the next open resumes from it."""
    db = sqlite_tx.connect(path, SessionError, "session database")
    lock = threading.RLock()
    try:
        for k in range(len(sessions_mod.MIGRATIONS) + 1):
            sqlite_tx.migrate(
                db,
                lock,
                sessions_mod.MIGRATIONS[:k],
                lambda: sqlite_tx.write_transaction(db, lock, SessionError, "busy", "failed"),
            )
            yield
    finally:
        db.close()


def _create(path: Path, store: SessionStore | None) -> SessionStore | None:
    """The first start: a new database file, its schema, the first session."""
    s = SessionStore(path)
    try:
        s.create("s0", title="first")
    except BaseException:
        s.close()
        raise
    return s


def _copy_files(src: Path, dst: Path) -> None:
    """The files a crashed process left (no process has them open: a plain copy is exact)."""
    for suffix in ("", "-wal"):
        if Path(str(src) + suffix).exists():
            shutil.copyfile(str(src) + suffix, str(dst) + suffix)


def _build_crashed(path: Path) -> None:
    """Drive the real store in a child process and SIGKILL it mid-write: a hot WAL is left."""
    driver = REPO / "tests" / "reliability" / "_session_driver.py"
    proc = subprocess.Popen(
        [sys.executable, "-S", str(driver), str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert json.loads(proc.stdout.readline()) == {"ready": True}
        for i in range(400):  # far more than it gets through: it dies with turns in flight
            sid = "ab"[i % 2]
            proc.stdin.write(json.dumps({"op": "turn", "session": sid, "key": f"k{i}",
                                         "text": f"turn {i} " + "t" * 500}) + "\n")  # fmt: skip
        proc.stdin.flush()
        for _ in range(40):
            assert "n" in json.loads(proc.stdout.readline())
    finally:
        proc.kill()  # SIGKILL
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()
    wal = Path(str(path) + "-wal")
    assert wal.exists() and wal.stat().st_size > 0, "the kill left no WAL to recover"


SCENARIOS = {
    "create": Scenario(
        "create",
        lambda p: None,
        _create,
        opens_store=True,
        restore=lambda s, d: None,
        steps=_migration_steps,
    ),
    "append": Scenario("append", _build_current, _append),
    "append_big": Scenario("append_big", _build_current, _append_big),
    "append_close": Scenario("append_close", _build_current, _append_close),
    "delete": Scenario("delete", _build_current, _delete),
    "migrate": Scenario("migrate", _build_old_schema, _migrate, opens_store=True),
    "recover": Scenario(
        "recover", _build_crashed, _recover_append, opens_store=True, restore=_copy_files
    ),
}


# -- the A4 loop ---------------------------------------------------------------------------
@dataclass
class LoopReport:
    op: str
    mode: str
    kind: str
    last_n: int = 0
    points: int = 0  # how many N were tried
    failed_at: list[int] = field(default_factory=list)  # N where the caller got an error
    committed_despite_error: list[int] = field(default_factory=list)
    between_states: list[int] = field(default_factory=list)  # N that stopped between migrations
    errors: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)  # faultable calls of a clean run
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"A4 {self.op}/{self.mode}/{self.kind}: N=1..{self.last_n} ({self.points} points), "
            f"errors at {len(self.failed_at)} N, committed despite error at "
            f"{self.committed_despite_error or 'none'}, between migrations at "
            f"{len(self.between_states)} N, clean-run calls {self.calls}, "
            f"{self.seconds:.1f} s; errors seen: {dict(self.errors)}"
        )


def _close_quietly(store: SessionStore | None) -> None:
    if store is not None:
        with contextlib.suppress(Exception):
            store.close()


def _check_error(exc: BaseException, kind: str, n: int, path: Path, rep: LoopReport) -> None:
    name = f"{type(exc).__name__}: {exc}".replace(str(path), "<db>")
    rep.errors[name] += 1
    if not isinstance(exc, SessionError):
        rep.problems.append(f"N={n}: untyped error reached the caller: {name!r}")
        return
    text = str(exc)
    if "\n" in text or "Traceback" in text or not text.strip():
        rep.problems.append(f"N={n}: message is not one clean line: {text!r}")
    if kind == "full" and not isinstance(exc, StorageFullError):
        rep.problems.append(f"N={n}: SQLITE_FULL surfaced as {name!r}, not StorageFullError")
    if kind == "ioerr" and isinstance(exc, StorageFullError):
        rep.problems.append(f"N={n}: an I/O error was reported as a full disk: {name!r}")


def _schedule(total: int, cap: int) -> Iterator[int]:
    """N = 1, 2, 3, ... past ``total`` (the calls of a clean run) until the fault is not met.

    An operation with more than ``cap`` calls (a turn larger than the page cache) gets every N
    of its first and last ``cap // 3`` calls (start, commit) and evenly spaced N between.
    """
    if total < cap:
        yield from range(1, total + cap)
        return
    edge = cap // 3
    yield from range(1, edge + 1)
    step = max(1, (total - 2 * edge) // edge)
    yield from range(edge + step, total - edge, step)
    yield from range(total - edge, total + edge)


def run_loop(
    scenario: Scenario,
    mode: str,
    kind: str,
    fault: FaultVFS,
    clock: SessionClock,
    tmp: Path,
    cap: int = N_CAP,
) -> LoopReport:
    """The A4 loop for one operation, mode and kind; returns what it saw (``problems``)."""
    rep = LoopReport(scenario.name, mode, kind)
    t0 = time.perf_counter()
    pristine_dir = tmp / "pristine"  # outside the faulted root: never faulted
    pristine_dir.mkdir(exist_ok=True)
    pristine = pristine_dir / f"{scenario.name}.db"
    root = tmp / "faulted"
    root.mkdir(exist_ok=True)
    fault.set_root(root)
    if not pristine.exists():
        clock.now = T_BUILD
        scenario.build(pristine)

    def fresh(tag: str) -> Path:
        d = root / tag
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        scenario.restore(pristine, d / "sessions.db")
        return d / "sessions.db"

    # the states to compare with: before, and after a fault-free run (counting its calls);
    # "before" is read from its own copy: reading it is the crash recovery under test
    _, before = dump(fresh("before"))
    shutil.rmtree(root / "before")
    path = fresh("reference")
    clock.now = T_OP
    store = None if scenario.opens_store else SessionStore(path)
    fault.arm(10**9)  # counts, never fires
    try:
        store = scenario.run(path, store)
    finally:
        fault.disarm()
    rep.calls = dict(fault.calls)
    _close_quietly(store)
    ok, after = dump(path)
    assert ok == "ok" and after != before, f"{scenario.name}: the clean run changed nothing"
    shutil.rmtree(path.parent)
    between: list[list[str]] = []
    if scenario.steps is not None:
        path = fresh("steps")
        for _ in scenario.steps(path):
            between.append(dump(path)[1])
        shutil.rmtree(path.parent)

    for n in _schedule(sum(rep.calls.values()), cap):
        rep.last_n = n
        rep.points += 1
        path = fresh(f"n{n}")
        clock.now = T_OP
        store = None if scenario.opens_store else SessionStore(path)
        error: BaseException | None = None
        fault.arm(n, mode=mode, kind=kind)
        try:
            result = scenario.run(path, store)
            store = result if scenario.opens_store else store
        except Exception as exc:  # judged below: must be a typed one-line SessionError
            error = exc
        finally:
            fault.disarm()
        fired = fault.fired
        if scenario.name == "append_close" and error is None:
            store = None  # closed by the operation
        ok, state = dump(path)
        if ok != "ok":
            rep.problems.append(f"N={n}: integrity_check after the fault: {ok}")
        if error is not None:
            rep.failed_at.append(n)
            _check_error(error, kind, n, path, rep)
            if state == after:
                rep.committed_despite_error.append(n)
            elif state in between:
                rep.between_states.append(n)
            elif state != before:
                rep.problems.append(f"N={n}: error {error!r} left a partial state")
        elif state != after:
            rep.problems.append(
                f"N={n}: reported success but the rows are "
                + ("the old ones (write lost)" if state == before else "a partial state")
            )
        # the same store, without a restart, takes the next turn
        clock.now = T_AFTER
        try:
            if store is None:
                store = SessionStore(path)
            store.get_or_create("after")
            t = store.append("after", "still there?", "yes", idempotency_key=f"after-{n}")
            back = store.find_idempotent(t.session_id, f"after-{n}")
            if back is None or back.user_text != "still there?":
                rep.problems.append(f"N={n}: the turn after the fault did not read back")
        except Exception as exc:
            rep.problems.append(f"N={n}: store unusable after the fault: {exc!r}")
        finally:
            _close_quietly(store)
        ok, _ = dump(path)
        if ok != "ok":
            rep.problems.append(f"N={n}: integrity_check after reuse: {ok}")
        shutil.rmtree(path.parent)
        if fired == 0:
            assert error is None, f"N={n}: failed with no fault injected: {error!r}"
            break
    else:
        rep.problems.append(f"still meeting the fault at N={rep.last_n}")
    rep.seconds = time.perf_counter() - t0
    print(rep.line())
    return rep


def _assert_clean(rep: LoopReport) -> None:
    assert rep.problems == [], "\n".join([rep.line(), *rep.problems[:20]])
    assert rep.failed_at, f"the fault never reached the caller: {rep.line()}"


# -- the loops -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ioerr", "full"])
@pytest.mark.parametrize("mode", ["once", "persistent"])
@pytest.mark.parametrize("op", ["append", "create"])
def test_append_and_first_open_survive_every_io_error(
    op: str, mode: str, kind: str, fault: FaultVFS, clock: SessionClock, tmp_path: Path
) -> None:
    """PR tier: the message path, and the first start (schema creation, which raised raw
    ``sqlite3.OperationalError`` and a plain SessionError for a full disk before A4).
    Every N leaves a consistent state and a typed error (StorageFullError on a full disk,
    so the server can answer 503 rather than 500)."""
    _assert_clean(run_loop(SCENARIOS[op], mode, kind, fault, clock, tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ioerr", "full"])
@pytest.mark.parametrize("mode", ["once", "persistent"])
@pytest.mark.parametrize("op", ["append_big", "append_close", "delete", "migrate", "recover"])
def test_every_operation_survives_every_io_error(
    op: str, mode: str, kind: str, fault: FaultVFS, clock: SessionClock, tmp_path: Path
) -> None:
    """NIGHTLY: every operation, both modes, SQLITE_IOERR and SQLITE_FULL."""
    _assert_clean(run_loop(SCENARIOS[op], mode, kind, fault, clock, tmp_path))


# -- the shim itself -----------------------------------------------------------------------
def test_fault_fires_at_exactly_n_and_disarm_restores(fault: FaultVFS, tmp_path: Path) -> None:
    fault.set_root(tmp_path / "in")
    (tmp_path / "in").mkdir()
    db = sqlite3.connect(str(tmp_path / "in" / "a.db"), isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=DELETE")  # each commit: journal write+sync, db write
        db.execute("CREATE TABLE t (x)")
        fault.arm(10**9)
        db.execute("INSERT INTO t VALUES (0)")
        per_insert = sum(fault.calls.values())
        fault.disarm()
        assert per_insert >= 3, fault.calls
        for n in range(1, per_insert + 1):
            fault.arm(n, mode="once")
            with pytest.raises(sqlite3.OperationalError) as info:
                db.execute("INSERT INTO t VALUES (?)", (n,))
            fault.disarm()
            assert fault.fired_at == [n], (n, fault.fired_at, fault.calls)
            assert info.value.sqlite_errorname.startswith("SQLITE_IOERR_"), info.value
        fault.arm(per_insert + 1, mode="persistent", kind="full")
        db.execute("INSERT INTO t VALUES (100)")  # the fault is one call beyond: no hit
        assert fault.fired == 0
        with pytest.raises(sqlite3.OperationalError) as info:
            db.execute("INSERT INTO t VALUES (101)")
        assert info.value.sqlite_errorname == "SQLITE_FULL"
        with pytest.raises(sqlite3.OperationalError):  # persistent: still failing
            db.execute("INSERT INTO t VALUES (102)")
        fault.disarm()
        db.execute("INSERT INTO t VALUES (103)")
        assert [r[0] for r in db.execute("SELECT x FROM t ORDER BY x")] == [0, 100, 103]
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
        fault.set_root(None)


def test_files_outside_the_root_are_never_faulted(fault: FaultVFS, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    fault.set_root(tmp_path / "in")
    outside = sqlite3.connect(str(tmp_path / "out.db"), isolation_level=None)
    try:
        outside.execute("CREATE TABLE t (x)")
        fault.arm(1, mode="persistent")
        for i in range(20):
            outside.execute("INSERT INTO t VALUES (?)", (i,))
        assert fault.fired == 0 and sum(fault.calls.values()) == 0
        fault.disarm()
        inside = sqlite3.connect(str(tmp_path / "in" / "a.db"), isolation_level=None)
        try:
            fault.arm(1, mode="persistent", ops={"write"})
            with pytest.raises(sqlite3.OperationalError):
                inside.execute("CREATE TABLE t (x)")
            assert fault.fired >= 1
        finally:
            fault.disarm()
            inside.close()
    finally:
        outside.close()
        fault.set_root(None)


# -- the retention sweep (A4 for RELIABILITY H3/B3) -----------------------------------------
def _sweep(path: Path, store: SessionStore | None) -> SessionStore | None:
    """Every session is idle since T_BUILD: s0 and s2 go (one transaction each, under each
    one's lock), s1 stays for its open ticket; then the WAL is checkpointed and truncated."""
    assert store is not None
    report = store.sweep(T_OP - (T_BUILD + T_OP) / 2)  # cutoff halfway between the phases
    assert (report.deleted, report.kept_open_ticket) == (2, 1), report
    return store


def _sweep_steps(path: Path) -> Iterator[None]:
    """A sweep cut short after its first session: s0 deleted, s2 not yet (the next sweep
    takes it). Sessions are swept oldest first, then by id."""
    db = sqlite3.connect(str(path), isolation_level=None)
    try:
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("DELETE FROM sessions WHERE id = 's0'")
        yield
    finally:
        db.close()


SCENARIOS["sweep"] = Scenario("sweep", _build_current, _sweep, steps=_sweep_steps)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ioerr", "full"])
@pytest.mark.parametrize("mode", ["once", "persistent"])
def test_retention_sweep_survives_every_io_error(
    mode: str, kind: str, fault: FaultVFS, clock: SessionClock, tmp_path: Path
) -> None:
    """NIGHTLY: at every N the sweep left all, none or the first of its deletions (each
    session is its own transaction), reported any failure as a typed one-line error, and
    the store takes the next turn."""
    _assert_clean(run_loop(SCENARIOS["sweep"], mode, kind, fault, clock, tmp_path))
