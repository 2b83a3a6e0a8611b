"""Deletion that removes the bytes, and the retention sweep (RELIABILITY.md H3, B3).

Everything runs on the real :class:`assistant.sessions.SessionStore` (SQLite, WAL):

* H3: turns carry unique canary strings; after ``delete`` and ``sweep`` the raw bytes of the
  database file, its ``-wal`` and its ``-shm`` hold no canary of a deleted session, while the
  kept sessions' canaries are still found (so the grep can see what it looks for);
* B3: the sweep races turns appended under the session lock from threads; a session is
  either whole (turns 1..k, exactly the acknowledged ones) or gone (no orphan rows);
* the sweep's rules (open tickets kept, locked sessions skipped, a turn landing between the
  scan and the lock keeps its session), ``delete``'s lock, config, the CLI, and the server's
  background sweep with its one log line.
"""

from __future__ import annotations

import logging
import math
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from assistant.config import BotConfig, SessionsConfig, load_config
from assistant.errors import SessionError, UnknownSessionError
from assistant.exports import export_session, exported_session, prune_exports
from assistant.keys import KeyStore
from assistant.sessions import SessionBusyError, SessionStore
from tests.reliability.conftest import SessionClock

DAY = 86_400.0


@pytest.fixture
def store(tmp_path: Path):
    s = SessionStore(tmp_path / "sessions.db")
    yield s
    s.close()


def raw_bytes(db: Path) -> dict[str, bytes]:
    """The database file, its WAL and its shared-memory index, as the disk has them."""
    out = {}
    for suffix in ("", "-wal", "-shm"):
        f = Path(str(db) + suffix)
        out[suffix or "db"] = f.read_bytes() if f.exists() else b""
    return out


def hits(files: dict[str, bytes], canaries: list[str]) -> dict[str, list[str]]:
    """Which files hold which canaries (``{}``: none anywhere)."""
    found: dict[str, list[str]] = {}
    for name, data in files.items():
        for c in canaries:
            if c.encode() in data:
                found.setdefault(name, []).append(c)
    return found


def fill_with_canaries(store: SessionStore, sid: str, turns: int = 25) -> list[str]:
    """A session whose title, state, turns (one larger than a page: overflow pages) and
    ticket reason each hold a unique canary; returns the canaries."""
    tag = uuid.uuid4().hex[:10]
    canaries = [f"TITLE-{tag}", f"STATE-{tag}"]
    store.create(sid, title=f"order {canaries[0]}")
    for i in range(turns):
        user, reply = f"USER-{tag}-{i:02d}", f"REPLY-{tag}-{i:02d}"
        canaries += [user, reply]
        pad = "p" * (6000 if i == 7 else 40 * i)  # turn 7 spills onto overflow pages
        store.append(sid, f"my card is {user} {pad}", f"noted {reply}", state={"k": canaries[1]})
    return canaries


# -- H3: the bytes are gone ----------------------------------------------------------------
def test_deleted_and_swept_canaries_leave_db_wal_and_shm(store: SessionStore) -> None:
    gone = fill_with_canaries(store, "gone")
    old = fill_with_canaries(store, "old")
    handoff = fill_with_canaries(store, "handoff")
    reason = f"REASON-{uuid.uuid4().hex[:10]}"
    store.open_ticket("handoff", reason)
    handoff.append(reason)
    closed = fill_with_canaries(store, "closed-ticket")
    closed_reason = f"REASON-{uuid.uuid4().hex[:10]}"
    store.set_ticket_status(store.open_ticket("closed-ticket", closed_reason).id, "closed")
    closed.append(closed_reason)
    t_mid = time.time()
    time.sleep(0.01)
    kept = fill_with_canaries(store, "kept")
    everything = gone + old + handoff + closed + kept
    before = hits(raw_bytes(store.path), everything)
    assert {c for cs in before.values() for c in cs} == set(everything), "grep cannot see them"

    store.delete("gone")
    report = store.sweep(1000.0, now=t_mid + 1000.0)  # due: old, handoff, closed-ticket
    assert (report.deleted, report.kept_open_ticket, report.skipped_busy) == (2, 1, 0)
    assert report.scrubbed

    deleted = gone + old + closed
    for when in ("open", "closed"):
        files = raw_bytes(store.path)
        assert hits(files, deleted) == {}, f"deleted data still on disk ({when})"
        survivors = {c for cs in hits(files, handoff + kept).values() for c in cs}
        assert survivors == set(handoff + kept), f"kept data lost ({when})"
        if when == "open":
            assert {s.id for s in store.list_sessions()} == {"handoff", "kept"}
            assert store.tickets() and all(t.session_id == "handoff" for t in store.tickets())
            assert store.integrity_check() == "ok"
            # the store goes on: a new turn after the scrub lands and reads back
            assert store.append("kept", "still here?", "yes").n == 26
            store.close()
    reopened = SessionStore(store.path)
    try:
        assert reopened.get("kept").turns == 26
        assert reopened.integrity_check() == "ok"
    finally:
        reopened.close()


def test_delete_waits_for_a_turn_in_flight_then_says_busy(store: SessionStore) -> None:
    sid = store.create().id
    store.append(sid, "hi", "hello")
    holding, release = threading.Event(), threading.Event()

    def turn() -> None:
        with store.lock(sid):
            holding.set()
            release.wait(10)
            store.append(sid, "second", "reply")

    t = threading.Thread(target=turn)
    t.start()
    assert holding.wait(10)
    t0 = time.monotonic()
    with pytest.raises(SessionBusyError, match=rf"session {sid} is busy"):
        store.delete(sid, timeout=0.2)
    assert time.monotonic() - t0 >= 0.2
    assert store.get(sid).turns == 1  # nothing deleted while the turn held the lock
    threading.Timer(0.1, release.set).start()
    store.delete(sid, timeout=10)  # waits for the turn, which lands first, then deletes
    t.join(10)
    assert not store.exists(sid)
    assert store._db.execute("SELECT COUNT(*) FROM turns").fetchone()[0] == 0
    with pytest.raises(UnknownSessionError):
        store.delete(sid)


def test_a_turn_may_delete_its_own_session(store: SessionStore) -> None:
    sid = store.create().id
    with store.lock(sid):  # the lock is not re-entrant: delete must not wait for itself
        store.append(sid, "forget me", "done")
        store.delete(sid, timeout=0.1)
    assert not store.exists(sid)
    assert not store.lock(sid).locked()


# -- the sweep's rules ---------------------------------------------------------------------
def _old_sessions(store: SessionStore, clock: SessionClock, n: int, days: float = 40) -> list[str]:
    clock.offset = -days * DAY
    ids = []
    for i in range(n):
        sid = store.create(f"old{i}").id
        store.append(sid, f"question {i}", f"answer {i}")
        ids.append(sid)
    clock.offset = 0.0
    return ids


def test_sweep_keeps_recent_and_ticketed_skips_locked_and_counts(
    store: SessionStore, clock: SessionClock
) -> None:
    old = _old_sessions(store, clock, 5)
    fresh = store.create("fresh").id
    store.append(fresh, "hi", "hello")
    store.open_ticket(old[0], "wants a person")  # open: kept
    claimed = store.open_ticket(old[1], "wants a person")
    store.set_ticket_status(claimed.id, "claimed", agent="ana")  # claimed: kept
    done = store.open_ticket(old[2], "wants a person")
    store.set_ticket_status(done.id, "closed")  # closed: may expire
    holding, release = threading.Event(), threading.Event()

    def turn() -> None:
        with store.lock(old[3]):
            holding.set()
            release.wait(10)

    t = threading.Thread(target=turn)
    t.start()
    assert holding.wait(10)
    try:
        report = store.sweep(30 * DAY)
    finally:
        release.set()
        t.join(10)
    assert report.to_dict() | {"cutoff": 0} == {
        "cutoff": 0,
        "deleted": 2,  # old2 (closed ticket), old4
        "kept_open_ticket": 2,
        "skipped_busy": 1,
        "refreshed": 0,
        "scrubbed": True,
        "exports_removed": 0,  # the store alone does not know the exports folder
    }
    assert {s.id for s in store.list_sessions()} == {old[0], old[1], old[3], fresh}
    assert [t.session_id for t in store.tickets()] == [old[0], old[1]]
    again = store.sweep(30 * DAY)  # the busy one is picked up by the next sweep
    assert (again.deleted, again.skipped_busy, again.kept_open_ticket) == (1, 0, 2)
    assert {s.id for s in store.list_sessions()} == {old[0], old[1], fresh}
    assert store.sweep(30 * DAY).deleted == 0
    assert "deleted 0, kept 2 with an open handoff ticket" in store.sweep(30 * DAY).line()


def test_a_turn_between_scan_and_lock_keeps_the_session(
    store: SessionStore, clock: SessionClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The age is checked again in the deleting transaction, under the session's lock."""
    old = _old_sessions(store, clock, 2)
    real_lock = store.lock

    def lock_after_a_turn(session_id: str) -> Any:
        if session_id == old[0]:  # the user writes just as the sweep reaches the session
            with real_lock(session_id):
                store.append(session_id, "are you there?", "yes")
        return real_lock(session_id)

    monkeypatch.setattr(store, "lock", lock_after_a_turn)
    report = store.sweep(30 * DAY)
    assert (report.deleted, report.refreshed) == (1, 1)
    assert store.get(old[0]).turns == 2
    assert not store.exists(old[1])


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, True, "30"])
def test_sweep_refuses_a_meaningless_age(store: SessionStore, bad: Any) -> None:
    store.create("s")
    with pytest.raises(SessionError, match="retention must be a positive number of seconds"):
        store.sweep(bad)
    assert store.exists("s")


# -- B3: the sweep racing turns -------------------------------------------------------------
def test_sweep_racing_turns_leaves_sessions_whole_or_gone(store: SessionStore, seed: int) -> None:
    """Turns are appended under the session lock (as DialogueManager does) while a sweep with
    a 2 ms retention runs in a loop. Under the lock a worker always sees its session whole:
    exactly the turns it had acknowledged since the session was (re)created, numbered 1..k."""
    sids = [f"race{i}" for i in range(4)]
    iterations = 100
    problems: list[str] = []
    generations = {sid: 0 for sid in sids}
    acked: dict[str, list[str]] = {sid: [] for sid in sids}
    done = threading.Event()
    totals = {"deleted": 0, "skipped_busy": 0, "sweeps": 0}

    def worker(sid: str, rnd: random.Random) -> None:
        try:
            for i in range(iterations):
                with store.lock(sid):
                    if not store.exists(sid):  # swept (whole) since the last turn
                        if store.turns(sid):
                            problems.append(f"{sid}: turns outlived their session")
                        store.create(sid)
                        generations[sid] += 1
                        acked[sid] = []
                    text = f"{sid} g{generations[sid]} m{i}"
                    turn = store.append(sid, text, f"re: {text}")
                    acked[sid].append(text)
                    stored = store.turns(sid)
                    if [t.n for t in stored] != list(range(1, len(stored) + 1)):
                        problems.append(f"{sid}: turn numbers {[t.n for t in stored]}")
                    if [t.user_text for t in stored] != acked[sid] or turn.n != len(stored):
                        problems.append(f"{sid}: stored turns differ from acknowledged ones")
                time.sleep(rnd.random() * 0.004)
        except BaseException as exc:  # reported below
            problems.append(f"{sid}: {exc!r}")

    def sweeper() -> None:
        try:
            while not done.is_set():
                r = store.sweep(0.002)
                totals["deleted"] += r.deleted
                totals["skipped_busy"] += r.skipped_busy
                totals["sweeps"] += 1
        except BaseException as exc:
            problems.append(f"sweep: {exc!r}")

    threads = [
        threading.Thread(target=worker, args=(sid, random.Random(seed + k)))
        for k, sid in enumerate(sids)
    ]
    sw = threading.Thread(target=sweeper)
    sw.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    done.set()
    sw.join(60)
    assert problems == [], problems[:10]
    print(f"B3 race: {totals}, generations {generations}")
    assert totals["deleted"] > 0, f"the sweep never deleted anything: {totals}"
    assert sum(generations.values()) > len(sids), "no session was swept and recreated"
    with store._db_lock:
        orphans = store._db.execute(
            "SELECT COUNT(*) FROM turns WHERE session_id NOT IN (SELECT id FROM sessions)"
        ).fetchone()[0]
    assert orphans == 0
    for sid in sids:  # survivors of the last sweep: whole
        if store.exists(sid):
            assert [t.user_text for t in store.turns(sid)] == acked[sid]
    assert store.integrity_check() == "ok"


# -- config ------------------------------------------------------------------------------
def test_sessions_config_defaults_and_seconds() -> None:
    assert BotConfig().sessions.retention_days is None
    assert BotConfig().sessions.retention_s is None
    assert SessionsConfig(retention_days=30).retention_s == 30 * DAY
    assert SessionsConfig().sweep_interval_s == 3600.0


# -- the CLI -------------------------------------------------------------------------------
def _project_with_sessions(project_dir: Path, clock: SessionClock) -> SessionStore:
    from assistant.project import resolve_project

    proj = resolve_project(project_dir)
    proj.ensure_dirs()
    store = SessionStore(proj.sessions_db)
    _old_sessions(store, clock, 2, days=40)
    store.create("recent")
    store.append("recent", "hello", "hi")
    return store


def test_cli_sessions_sweep_uses_days_or_the_config(project_dir: Path, clock: SessionClock) -> None:
    from assistant.cli import app

    runner = CliRunner()
    store = _project_with_sessions(project_dir, clock)
    store.close()
    r = runner.invoke(app, ["sessions", "sweep", "--project", str(project_dir), "--days", "50"])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == (
        "retention sweep: deleted 0, kept 0 with an open handoff ticket, skipped 0 busy, "
        "0 active again (older than 50 days)"
    )
    r = runner.invoke(app, ["sessions", "sweep", "--project", str(project_dir)])
    assert r.exit_code != 0 and "no retention period" in str(r.exception)
    cfg = project_dir / "llmos.yaml"
    cfg.write_text(cfg.read_text() + "sessions:\n  retention_days: 30\n")
    assert load_config(cfg).sessions.retention_days == 30
    r = runner.invoke(app, ["sessions", "sweep", "--project", str(project_dir)])
    assert r.exit_code == 0, r.output
    assert "deleted 2," in r.output and "(older than 30 days)" in r.output
    r = runner.invoke(app, ["sessions", "--project", str(project_dir)])  # still lists
    assert r.exit_code == 0, r.output
    assert [line.split()[0] for line in r.output.splitlines()] == ["recent"]


@pytest.mark.parametrize("days", ["abc", "0", "-3", "nan", "inf", "1e9"])
def test_cli_bad_days_is_one_line(project_dir: Path, days: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "assistant.cli", "sessions", "sweep", "-p", str(project_dir),
         "--days", days],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"error: --days must be a positive number of days (at most 36500), got {days!r}"
    )
    assert r.stdout == ""


def test_exports_of_deleted_and_swept_sessions_go_with_them(
    tmp_path: Path, store: SessionStore, clock: SessionClock
) -> None:
    exports = tmp_path / "exports"
    gone = fill_with_canaries(store, "gone", turns=3)
    kept = fill_with_canaries(store, "kept", turns=3)
    for sid, canaries in (("gone", gone), ("kept", kept)):
        path = export_session(exports, canaries[0], sid, store.turns(sid))
        assert exported_session(path) == sid
        assert canaries[2].encode() in path.read_bytes()
    note = exports / "my-notes.md"  # not an export: no session header, left alone
    note.write_text(f"# notes\n\nabout {gone[2]}\n")
    stale_tmp = exports / ".20260101-000000-x-gone.md.k2j4.tmp"  # atomic_write's temp names
    fresh_tmp = exports / ".20260101-000000-y-kept.md.a8f1.tmp"
    stale_tmp.write_text(gone[3])
    fresh_tmp.write_text("an export being written right now")
    clock.offset = 0.0
    os.utime(stale_tmp, (time.time() - 2 * 3600, time.time() - 2 * 3600))

    assert prune_exports(exports, store.exists) == 1  # the stale temp file; both sessions live
    store.delete("gone")
    assert prune_exports(exports, store.exists) == 1
    left = {f.name: f.read_bytes() for f in exports.iterdir()}
    assert set(left) == {
        note.name,
        fresh_tmp.name,
        next(iter(n for n in left if n.endswith("-kept.md"))),
    }
    found = {c for data in left.values() for c in gone if c.encode() in data}
    assert found == {gone[2]}  # only the user's own note, which is not an export
    assert prune_exports(tmp_path / "missing", store.exists) == 0


def test_cli_sessions_delete_removes_turns_and_exports(
    project_dir: Path, clock: SessionClock
) -> None:
    from assistant.cli import app
    from assistant.project import resolve_project

    proj = resolve_project(project_dir)
    store = _project_with_sessions(project_dir, clock)
    canaries = fill_with_canaries(store, "doomed", turns=2)
    export = export_session(proj.exports_dir, "doomed", "doomed", store.turns("doomed"))
    store.close()
    keys = KeyStore.for_project(proj)  # the HTTP service's: who started which session
    key, _ = keys.create("widget", origins=["https://shop.example"])
    keys.bind_session("doomed", key.id, "first-message-7")
    keys.bind_session("recent", key.id)
    runner = CliRunner()
    r = runner.invoke(app, ["sessions", "delete", "doomed", "nope", "-p", str(project_dir)])
    assert r.exit_code != 0 and "no stored session 'nope'; nothing deleted" in str(r.exception)
    assert export.exists()
    r = runner.invoke(app, ["sessions", "delete", "doomed", "-p", str(project_dir)])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == "deleted 1 session and 1 exported transcript"
    assert not export.exists()
    assert hits(raw_bytes(proj.sessions_db), canaries) == {}
    assert keys.session_owner("doomed") is None and keys.session_owner("recent") == key.id
    assert keys.session_for(key.id, "first-message-7") is None
    keys.close()
    r = runner.invoke(app, ["sessions", "--project", str(project_dir)])
    assert "doomed" not in r.output and "recent" in r.output
    r = runner.invoke(app, ["sessions", "delete", "recent", "old0", "old1", "-p", str(project_dir)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["sessions", "--project", str(project_dir)])
    assert r.exit_code == 0 and r.output.startswith("No stored conversations in "), r.output


# -- the server's background sweep ---------------------------------------------------------
def test_server_sweeps_in_the_background_and_logs_counts_only(
    tmp_path: Path, clock: SessionClock, caplog: pytest.LogCaptureFixture
) -> None:
    """``create_app`` over a minimal assistant (config, store, project: all the sweep and
    ``/healthz`` touch); the lifespan starts the sweep, shutdown stops it."""
    from fastapi.testclient import TestClient

    from assistant.project import Project
    from assistant.server import create_app

    proj = Project(root=tmp_path, state=tmp_path)
    proj.ensure_dirs()
    store = SessionStore(proj.sessions_db)
    secret = f"SECRET-{uuid.uuid4().hex}"
    clock.offset = -10 * DAY
    store.create("stale", title=secret)
    store.append("stale", f"my password is {secret}", "noted")
    clock.offset = 0.0
    store.create("live")
    stale_export = export_session(proj.exports_dir, secret, "stale", store.turns("stale"))
    live_export = export_session(proj.exports_dir, "live", "live", store.turns("live"))
    cfg = BotConfig(sessions=SessionsConfig(retention_days=7, sweep_interval_s=1.0))
    bot = SimpleNamespace(project=proj, config=cfg, store=store)
    caplog.set_level(logging.INFO, logger="assistant.server")
    app = create_app(bot)
    keys = app.state.service.keys
    key, _ = keys.create("widget", origins=["https://shop.example"])
    keys.bind_session("stale", key.id, "first-message-1")
    keys.bind_session("live", key.id)
    try:
        with TestClient(app) as client:
            sweeper = app.state.sweeper
            assert sweeper is not None and sweeper.interval_s == 1.0
            deadline = time.monotonic() + 20
            while sweeper.sweeps < 2 and time.monotonic() < deadline:  # at start, then again
                time.sleep(0.05)
            assert sweeper.sweeps >= 2
            assert client.get("/healthz").status_code == 200
        assert not sweeper._thread.is_alive()  # stopped with the app
        assert [s.id for s in store.list_sessions()] == ["live"]
        assert secret.encode() not in b"".join(raw_bytes(store.path).values())
        # the swept session's owner row (and the idempotency key that started it) went too
        assert keys.session_owner("stale") is None and keys.session_owner("live") == key.id
        assert keys.session_for(key.id, "first-message-1") is None
        lines = [r.getMessage() for r in caplog.records if r.name == "assistant.server"]
        sweeps = [ln for ln in lines if ln.startswith("retention sweep:")]
        assert not stale_export.exists() and live_export.exists()
        assert secret.encode() not in live_export.read_bytes()
        assert sweeps[0].startswith("retention sweep: deleted 1, kept 0")
        assert sweeps[0].endswith(", 1 exported transcripts removed")
        assert all("deleted 0," in ln for ln in sweeps[1:])
        text = "\n".join(lines)
        assert secret not in text and "stale" not in text and "live" not in text
    finally:
        store.close()


def test_no_background_sweep_without_retention(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from assistant.project import Project
    from assistant.server import create_app

    proj = Project(root=tmp_path, state=tmp_path)
    proj.ensure_dirs()
    store = SessionStore(proj.sessions_db)
    try:
        app = create_app(SimpleNamespace(project=proj, config=BotConfig(), store=store))
        with TestClient(app):
            assert app.state.sweeper is None
    finally:
        store.close()


def test_a_reader_delaying_the_scrub_is_reported_and_the_next_sweep_finishes_it(
    store: SessionStore,
) -> None:
    """An open read transaction (another process, say) pins the WAL: the delete commits, says
    its bytes are not cleared yet, and the next sweep, even with nothing due, clears them."""
    import sqlite3

    canaries = fill_with_canaries(store, "gone", turns=5)
    store.create("other")
    reader = sqlite3.connect(str(store.path), isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM turns").fetchone()  # holds its snapshot
        store._db.execute("PRAGMA busy_timeout=200")  # do not wait 30 s for the reader
        with pytest.raises(SessionBusyError, match="kept the write-ahead log from being cleared"):
            store.delete("gone")
        assert not store.exists("gone")
        assert hits(raw_bytes(store.path), canaries) != {}  # still in the log, as reported
        reader.execute("COMMIT")
    finally:
        reader.close()
    report = store.sweep(DAY)
    assert (report.deleted, report.scrubbed) == (0, True)
    assert hits(raw_bytes(store.path), canaries) == {}
    assert [s.id for s in store.list_sessions()] == ["other"]
