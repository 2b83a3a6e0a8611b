"""API keys (hashed in SQLite), token buckets, and the ``llmos keys`` commands."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assistant.errors import InputError
from assistant.keys import KEY_PREFIXES, KeyStore, UnknownKeyError, normalize_origin, split_key
from assistant.ratelimit import RateLimiter, parse_rate

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path):
    ks = KeyStore(tmp_path / "keys.db")
    yield ks
    ks.close()


def test_keys_have_role_prefixes_and_verify(store):
    for role, prefix in KEY_PREFIXES.items():
        key, secret = store.create(role, name=f"{role} key")
        assert secret.startswith(prefix) and len(secret) == len(prefix) + 43
        assert key.prefix == secret[: len(prefix) + 8]
        assert store.verify(secret) == key
    assert store.verify(None) is None
    assert store.verify("") is None
    assert store.verify("llmos_wk_short") is None
    assert store.verify("Bearer " + secret) is None


def test_only_salted_digests_are_stored(store, tmp_path):
    _, a = store.create("widget")
    _, b = store.create("widget")
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("keys.db*"))
    for secret in (a, b):
        assert secret.encode() not in raw
        assert secret[len("llmos_wk_") :].encode() not in raw
    db = sqlite3.connect(tmp_path / "keys.db")
    salts = [r[0] for r in db.execute("SELECT salt FROM keys")]
    db.close()
    assert len(set(salts)) == 2 and all(len(s) == 16 for s in salts)


def test_wrong_keys_with_a_known_prefix_fail(store):
    _, secret = store.create("admin")
    same_prefix = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert store.verify(same_prefix) is None
    assert store.verify(secret.replace("llmos_adm_", "llmos_ak_")) is None


def test_secrets_are_compared_in_constant_time_only():
    """F2: digests are compared with hmac.compare_digest, never with ==."""
    src = (REPO / "assistant" / "keys.py").read_text()
    assert src.count("hmac.compare_digest(") >= 2
    assert not re.search(r"(digest|secret)\s*==|==\s*(digest|secret)", src)


def test_revoke_and_list(store):
    k1, s1 = store.create("widget", name="shop", origins=["https://Shop.Example:443/"])
    k2, _ = store.create("agent", name="desk", rate_per_min=30)
    assert k1.origins == ("https://shop.example",)
    assert store.get(k2.id).rate == 30
    revoked = store.revoke(k1.id)
    assert revoked.revoked is not None and store.verify(s1) is None
    assert [k.id for k in store.list(include_revoked=False)] == [k2.id]
    assert [k.id for k in store.list()] == [k1.id, k2.id]
    with pytest.raises(UnknownKeyError):
        store.revoke(999)


def test_a_revoke_from_another_process_is_seen(store, tmp_path):
    key, secret = store.create("widget")
    other = KeyStore(tmp_path / "keys.db")  # `llmos keys revoke` while the server runs
    other.revoke(key.id)
    other.close()
    assert store.verify(secret) is None


@pytest.mark.parametrize(
    "bad",
    ["shop.example", "ftp://shop.example", "https://shop.example/path", "null", "*", "", "http://"],
)
def test_origins_are_validated(store, bad):
    with pytest.raises(InputError):
        store.create("widget", origins=[bad])


def test_origin_normalisation():
    assert normalize_origin("HTTP://Shop.Example:80") == "http://shop.example"
    assert normalize_origin("https://shop.example:8443") == "https://shop.example:8443"
    assert normalize_origin("http://[::1]:8000") == "http://[::1]:8000"


def test_only_widget_keys_take_origins_and_roles_are_checked(store):
    with pytest.raises(InputError):
        store.create("admin", origins=["https://shop.example"])
    with pytest.raises(InputError):
        store.create("root")
    with pytest.raises(InputError):
        store.create("widget", rate_per_min=0)


def test_widget_origins_union_follows_revocation(tmp_path):
    ks = KeyStore(tmp_path / "keys.db", origins_ttl_s=0)
    a, _ = ks.create("widget", origins=["https://a.example"])
    ks.create("widget", origins=["https://b.example"])
    ks.create_ephemeral("widget", origins=["http://127.0.0.1:8000"])
    assert ks.widget_origins() == {
        "https://a.example",
        "https://b.example",
        "http://127.0.0.1:8000",
    }
    ks.revoke(a.id)
    assert "https://a.example" not in ks.widget_origins()
    ks.close()


def test_ephemeral_key_lives_in_memory_only(tmp_path):
    ks = KeyStore(tmp_path / "keys.db")
    key, secret = ks.create_ephemeral("widget", origins=["http://127.0.0.1:9"])
    assert ks.verify(secret) == key and key.ephemeral
    assert ks.list() == []
    again = KeyStore(tmp_path / "keys.db")
    assert again.verify(secret) is None
    # workers share a demo key by passing its secret
    shared, _ = again.create_ephemeral("widget", secret=secret)
    assert again.verify(secret) == shared
    ks.close()
    again.close()


def test_split_key():
    assert split_key("llmos_wk_" + "a" * 43) == ("widget", "a" * 8)
    assert split_key("llmos_wk_" + "a" * 42 + "!") is None
    assert split_key("x" * 500) is None


def test_session_ownership_and_idempotent_start(store):
    key, _ = store.create("widget")
    assert store.bind_session("s1", key.id, "idem-1") == "s1"
    assert store.bind_session("s2", key.id, "idem-1") == "s1"  # a retried start
    assert store.session_for(key.id, "idem-1") == "s1"
    assert store.session_owner("s1") == key.id
    assert store.session_owner("s2") is None


def test_symlinked_key_db_is_refused(tmp_path):
    from assistant.keys import KeyStoreError

    real = tmp_path / "real.db"
    real.write_bytes(b"")
    link = tmp_path / "keys.db"
    os.symlink(real, link)
    with pytest.raises(KeyStoreError):
        KeyStore(link)


# -- rate limits --------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_burst_then_refill():
    clock = Clock()
    rl = RateLimiter(clock=clock)
    results = [rl.hit("k", 60) for _ in range(65)]
    assert sum(d.allowed for d in results) == 60
    refused = results[-1]
    assert not refused.allowed and refused.retry_after == 1
    clock.t += 1.0
    assert rl.hit("k", 60).allowed
    assert not rl.hit("k", 60).allowed
    assert rl.hit("other", 60).allowed  # buckets are per identity


def test_retry_after_is_the_wait_for_one_token():
    clock = Clock()
    rl = RateLimiter(clock=clock)
    for _ in range(6):
        rl.hit("slow", 6)  # 6 a minute: one token every 10 s
    d = rl.hit("slow", 6)
    assert not d.allowed and d.retry_after == 10
    clock.t += 9.5
    assert not rl.hit("slow", 6).allowed
    clock.t += 0.6
    assert rl.hit("slow", 6).allowed


def test_rate_limiter_is_thread_safe():
    import threading

    rl = RateLimiter(clock=Clock())
    allowed = []

    def worker():
        allowed.extend(rl.hit("shared", 100).allowed for _ in range(50))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 100


def test_buckets_are_pruned():
    clock = Clock()
    rl = RateLimiter(clock=clock, max_buckets=10)
    for i in range(50):
        rl.hit(f"id{i}", 60)
        clock.t += 0.01
    assert len(rl._buckets) <= 10


@pytest.mark.parametrize(
    ("spec", "per_min"), [("120/min", 120), ("5/s", 300), ("600/h", 10), ("30", 30), (2.5, 2.5)]
)
def test_parse_rate(spec, per_min):
    assert parse_rate(spec) == pytest.approx(per_min)


@pytest.mark.parametrize("spec", ["lots", "5/week", "-1/min", "0", "nan/min", "inf"])
def test_parse_rate_rejects(spec):
    with pytest.raises(InputError):
        parse_rate(spec)


# -- the commands -------------------------------------------------------------------------
def test_keys_create_prints_the_key_last(tmp_path, monkeypatch):
    from assistant.cli import app
    from assistant.commands.serve_cmds import _key_store

    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "keys",
            "create",
            "--role",
            "widget",
            "--name",
            "shop",
            "--origin",
            "https://shop.example",
            "--rate",
            "2/s",
        ],
    )
    assert r.exit_code == 0, r.output
    secret = r.output.strip().splitlines()[-1]
    assert secret.startswith("llmos_wk_")
    ks = _key_store(None)
    key = ks.verify(secret)
    assert key is not None and key.origins == ("https://shop.example",) and key.rate == 120
    ks.close()
    listed = runner.invoke(app, ["keys", "list"]).output
    assert "shop" in listed and secret not in listed and secret[:17] in listed
    r = runner.invoke(app, ["keys", "revoke", str(key.id)])
    assert r.exit_code == 0 and "revoked" in r.output
    assert "shop" not in runner.invoke(app, ["keys", "list"]).output
    assert "[revoked]" in runner.invoke(app, ["keys", "list", "--all"]).output


def test_keys_errors_are_one_line_with_exit_1(tmp_path):
    env = {**os.environ, "LLMOS_HOME": str(tmp_path / "home")}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "assistant.cli",
            "keys",
            "create",
            "--role",
            "widget",
            "--origin",
            "shop",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert r.returncode == 1
    assert r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run(
        [sys.executable, "-m", "assistant.cli", "keys", "revoke", "7"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert r.returncode == 1 and "unknown key id 7" in r.stderr and "Traceback" not in r.stderr
