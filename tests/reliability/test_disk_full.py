"""Disk full while writing sessions, the vector index and LM checkpoints (RELIABILITY.md A3, D2).

Each scenario runs in its own process on a 4 MiB tmpfs mounted in a private mount namespace
(``unshare -m``; skipped where mounting is impossible). Ballast files fill the disk, the
real component writes, the ballast is freed and the same process writes again.
"""

from __future__ import annotations

from tests.reliability.conftest import run_on_small_fs


def test_session_append_on_full_disk_is_one_clear_error_and_recovers() -> None:
    r = run_on_small_fs("sessions")
    err = r["error"]
    assert err is not None, r  # the disk did fill up
    # a SessionError, typed as a full disk (the server answers it with 503 + Retry-After)
    assert err["type"] == "StorageFullError" and err["one_line"], err
    assert "full" in err["message"], err  # the real cause, not a follow-up error
    assert r["acked"] > 0
    assert r["stored_equals_acked"], r  # acknowledged rows intact, nothing half-written
    assert r["integrity_when_full"] == "ok" and r["integrity_after"] == "ok"
    assert r["after"] == {"ok": True, "n": r["acked"] + 1}, r  # no restart needed
    assert r["turns_after"] == r["acked"] + 1


def test_index_save_on_full_disk_keeps_old_index_and_recovers() -> None:
    r = run_on_small_fs("index")
    err = r["error"]
    assert err is not None and err["type"] == "StoreError" and err["one_line"], r
    assert "No space left" in err["message"]
    assert r["old_index_intact"], r  # file still matches the hash SQLite recorded
    assert r["temps_when_full"] == [], r
    assert r["integrity_when_full"] == "ok"
    assert r["after"]["ok"], r
    full = r["sqlite_full"]  # no room even for SQLite's commit: the file is reported, not lost
    assert not full.get("unexpected"), full
    assert full["integrity"] == "ok" and full["after_ok"], full
    assert any("database or disk is full" in e[1] for e in full.get("errors", [])) or (
        full["raised"] and "full" in full["message"]
    ), full
    # nothing lost or duplicated: the reopened store agrees with the live one
    assert r["reopened"]["stats"] == r["stats_after"], r
    assert r["reopened"]["rebuilt"] is None, r
    assert r["stats_after"]["documents"] == r["before"]["documents"] + 2
    direct = r["direct"]
    assert direct["raised"] and direct["type"] == "StoreError" and not direct["temp_left"]


def test_checkpoint_save_on_full_disk_keeps_old_checkpoint_and_recovers() -> None:
    r = run_on_small_fs("checkpoint")
    err = r["error"]
    assert err is not None and err["type"] == "CheckpointError" and err["one_line"], r
    assert "No space left" in err["message"]
    assert r["old_intact"], r
    assert r["leftovers"] == [], r  # no *.tmp-* or *.old-* directories
    assert r["after"] == {"ok": True, "step": 2}, r
