import sqlite3
import threading

import pytest

from assistant.errors import InputError, SessionError, UnknownSessionError
from assistant.sessions import SessionStore


@pytest.fixture
def store(tmp_path):
    s = SessionStore(tmp_path / "sessions.db")
    yield s
    s.close()


def test_wal_and_migrations(store):
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = [r[0] for r in store._db.execute("SELECT name FROM _migrations ORDER BY name")]
    assert names == ["m001_initial", "m002_tickets"]


def test_turns_survive_restart(tmp_path):
    path = tmp_path / "s.db"
    s = SessionStore(path)
    sid = s.create(title="hello").id
    s.append(
        sid, "hi", "hello!", skill="smalltalk", confidence=0.9, state={"last_skill": "smalltalk"}
    )
    s.append(sid, "bye", "goodbye", skill="smalltalk", confidence=0.8)
    s.close()
    s2 = SessionStore(path)
    turns = s2.turns(sid)
    assert [(t.n, t.user_text, t.reply_text) for t in turns] == [
        (1, "hi", "hello!"),
        (2, "bye", "goodbye"),
    ]
    assert s2.get(sid).state == {"last_skill": "smalltalk"}
    assert s2.get(sid).turns == 2
    assert s2.integrity_check() == "ok"
    s2.close()


def test_idempotency_key_stores_once(store):
    sid = store.create().id
    a = store.append(sid, "where is my order", "on its way", idempotency_key="k1")
    b = store.append(sid, "where is my order", "DIFFERENT", idempotency_key="k1")
    assert a.n == b.n == 1
    assert b.reply_text == "on its way"
    assert len(store.turns(sid)) == 1


def test_unknown_and_invalid_session(store):
    with pytest.raises(UnknownSessionError, match="unknown session id: nope"):
        store.get("nope")
    with pytest.raises(SessionError, match="invalid session id"):
        store.get("../../etc/passwd")
    with pytest.raises(UnknownSessionError):
        store.append("missing", "a", "b")


def test_lone_surrogate_rejected_and_nothing_stored(store):
    sid = store.create().id
    with pytest.raises(InputError, match="lone surrogate"):
        store.append(sid, "bad \ud800 text", "reply")
    assert store.turns(sid) == []
    assert store.integrity_check() == "ok"


def test_concurrent_turns_one_session_in_order(store):
    sid = store.create().id
    order: list[int] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with store.lock(sid):
                t = store.append(sid, f"msg {i}", f"reply {i}", idempotency_key=f"k{i}")
                order.append(t.n)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    turns = store.turns(sid)
    assert [t.n for t in turns] == list(range(1, 51))
    assert len({t.user_text for t in turns}) == 50
    assert order == sorted(order)


def test_session_locks_are_not_kept_for_every_session_ever_seen(store):
    import gc

    held = store.lock("busy")
    with held:
        for i in range(200):
            with store.lock(f"s{i}"):
                pass
        gc.collect()
        # the lock in use is shared, the 200 finished sessions left nothing behind
        assert store.lock("busy") is held
        assert list(store._session_locks) == ["busy"]
        got: list[bool] = []
        other = threading.Thread(target=lambda: got.append(store.lock("busy").acquire(0.05)))
        other.start()
        other.join()
        assert got == [False]  # another thread still waits for the same lock
    assert store.lock("busy").acquire(timeout=1)  # free again once released
    store.lock("busy").release()


def test_tickets(store):
    sid = store.create().id
    t1 = store.open_ticket(sid, "asked for a person")
    t2 = store.open_ticket(sid, "again")
    assert t1.id == t2.id  # one open ticket per session
    store.set_ticket_status(t1.id, "claimed", agent="ana")
    assert store.tickets("claimed")[0].agent == "ana"
    with pytest.raises(SessionError):
        store.set_ticket_status(999, "closed")


def test_symlinked_db_refused(tmp_path):
    real = tmp_path / "real.db"
    sqlite3.connect(real).close()
    link = tmp_path / "link.db"
    link.symlink_to(real)
    with pytest.raises(SessionError, match="symlink"):
        SessionStore(link)


def test_list_rename_delete(store):
    a = store.create(title="first").id
    b = store.create().id
    store.rename(b, "second")
    assert {s.title for s in store.list_sessions()} == {"first", "second"}
    store.delete(a)
    assert [s.id for s in store.list_sessions()] == [b]


def test_secure_delete_on_and_wal_truncated_after_delete(store):
    assert store._db.execute("PRAGMA secure_delete").fetchone()[0] == 1
    a = store.create().id
    store.append(a, "my iban is DE89370400440532013000", "noted")
    wal = store.path.with_name(store.path.name + "-wal")
    assert wal.stat().st_size > 0
    store.delete(a)
    assert wal.stat().st_size == 0  # checkpointed into the (zeroed) pages, then truncated
    assert b"DE8937040044" not in store.path.read_bytes()


def test_sweep_deletes_idle_sessions_only(store):
    import time

    old = store.create().id
    store.append(old, "hi", "hello")
    t = time.time()
    time.sleep(0.01)
    new = store.create().id
    report = store.sweep(60.0, now=t + 60.0)
    assert (report.deleted, report.skipped_busy, report.kept_open_ticket) == (1, 0, 0)
    assert [s.id for s in store.list_sessions()] == [new]
    assert store.turns(old) == []
