"""API keys for the HTTP service, stored hashed in the project's ``keys.db`` (SQLite, WAL).

A key is shown once, when it is created: ``llmos_wk_…`` (widget), ``llmos_ak_…`` (agent) or
``llmos_adm_…`` (admin), followed by 43 characters of ``secrets.token_urlsafe(32)`` (256
random bits). The store keeps an 8-character lookup prefix in clear (so ``llmos keys list``
can show which key is which), a random 16-byte salt and ``HMAC-SHA256(salt, key)``. A
presented key is looked up by its prefix and its digest compared with
``hmac.compare_digest``, so neither the lookup nor the comparison leaks how much of a guess
was right.

Why not scrypt: slow hashes protect low-entropy secrets (passwords) against offline
guessing. 256 random bits cannot be guessed offline at any hash speed, while scrypt's tens of
milliseconds per request would cap the service well below its throughput target. The salt
still makes equal keys hash differently and rules out precomputed tables.

Roles: ``widget`` may chat and read its own sessions; ``agent`` adds the handoff desk;
``admin`` adds document ingestion and statistics. Widget keys carry the browser origins
they may be used from (exact match, CORS) and every key may carry its own rate limit.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from assistant.errors import InputError, LlmosError
from assistant.sqlite_tx import connect, migrate, write_transaction

ROLES = ("widget", "agent", "admin")
KEY_PREFIXES = {"widget": "llmos_wk_", "agent": "llmos_ak_", "admin": "llmos_adm_"}
#: What each role may do; a route names the right it needs.
RIGHTS: dict[str, frozenset[str]] = {
    "widget": frozenset({"chat"}),
    "agent": frozenset({"chat", "desk"}),
    "admin": frozenset({"chat", "desk", "admin"}),
}
#: Requests a minute when a key has no limit of its own. A widget key is shared by every
#: visitor of a website, so its default is generous; tighten it per key with ``--rate``.
DEFAULT_RATES = {"widget": 600.0, "agent": 600.0, "admin": 1200.0}

LOOKUP_CHARS = 8
_TOKEN_BYTES = 32
_TOKEN_LEN = 43  # len(secrets.token_urlsafe(32))
_TOKEN_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
EPHEMERAL_ID = 0  # the demo page's key: memory only, never in keys.db


class KeyStoreError(LlmosError):
    """keys.db cannot be opened or written."""


class UnknownKeyError(KeyStoreError):
    pass


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    id: int
    role: str
    name: str
    prefix: str  # what `llmos keys list` shows: the type prefix and the lookup prefix
    created: float
    revoked: float | None = None
    origins: tuple[str, ...] = ()
    rate_per_min: float | None = None
    ephemeral: bool = False

    @property
    def active(self) -> bool:
        return self.revoked is None

    @property
    def rate(self) -> float:
        """Requests a minute this key may make."""
        return self.rate_per_min if self.rate_per_min is not None else DEFAULT_RATES[self.role]

    def can(self, right: str) -> bool:
        return right in RIGHTS.get(self.role, frozenset())

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "role": self.role,
            "name": self.name,
            "prefix": self.prefix,
            "created": self.created,
            "revoked": self.revoked,
            "origins": list(self.origins),
            "rate_per_min": self.rate,
        }


@dataclass
class _Ephemeral:
    key: ApiKey
    salt: bytes
    digest: bytes
    lookup: str


@dataclass
class _Cache:
    origins: frozenset[str] = frozenset()
    at: float = -1e9


# -- validation ---------------------------------------------------------------------------
def normalize_origin(origin: str) -> str:
    """``https://Shop.Example:443`` -> ``https://shop.example``; what a browser sends as Origin."""
    if not isinstance(origin, str) or not origin.strip():
        raise InputError("origin must be a URL like https://shop.example")
    text = origin.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise InputError(f"origin {origin!r} is not a valid URL") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InputError(f"origin {origin!r} must start with http:// or https:// and name a host")
    if parts.path not in {"", "/"} or parts.query or parts.fragment or parts.username:
        raise InputError(f"origin {origin!r} must be scheme://host[:port] with no path")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise InputError(f"unknown role {role!r}: use widget, agent or admin")
    return role


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if len(name) > 100 or any(ord(c) < 32 for c in name):
        raise InputError("key name must be at most 100 printable characters")
    return name


def split_key(secret: str) -> tuple[str, str] | None:
    """``(role, lookup prefix)`` of a well-formed key, else None (no database work)."""
    if not isinstance(secret, str) or len(secret) > 64:
        return None
    for role, pre in KEY_PREFIXES.items():
        if secret.startswith(pre):
            token = secret[len(pre) :]
            if len(token) == _TOKEN_LEN and set(token) <= _TOKEN_ALPHABET:
                return role, token[:LOOKUP_CHARS]
            return None
    return None


def generate_secret(role: str) -> str:
    """A new key for ``role``: its type prefix and 256 random bits."""
    prefix = KEY_PREFIXES[_check_role(role)]
    while True:
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        if len(token) == _TOKEN_LEN:
            return prefix + token


def _digest(salt: bytes, secret: str) -> bytes:
    return hmac.new(salt, secret.encode("ascii"), hashlib.sha256).digest()


# -- the store ----------------------------------------------------------------------------
def _m001_keys(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE keys (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            role TEXT NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            lookup TEXT NOT NULL,
            salt BLOB NOT NULL,
            digest BLOB NOT NULL,
            created REAL NOT NULL,
            revoked REAL,
            origins TEXT NOT NULL DEFAULT '[]',
            rate_per_min REAL
        )"""
    )
    db.execute("CREATE INDEX keys_lookup ON keys(lookup)")
    # which key started a conversation: a widget key may only read and continue its own
    db.execute(
        """CREATE TABLE session_owners (
            session_id TEXT PRIMARY KEY,
            key_id INTEGER NOT NULL,
            idem_key TEXT,
            created REAL NOT NULL
        )"""
    )
    db.execute(
        "CREATE UNIQUE INDEX session_owners_idem ON session_owners(key_id, idem_key)"
        " WHERE idem_key IS NOT NULL"
    )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_m001_keys]

_COLS = "id, role, name, lookup, created, revoked, origins, rate_per_min"


class KeyStore:
    """API keys and session ownership in SQLite; safe to share between threads.

    Args:
        path: the database file, ``<project state>/data/keys.db`` by default
            (see :meth:`for_project`).
        origins_ttl_s: how long the union of widget origins (CORS preflight) is cached.
    """

    def __init__(self, path: str | Path, *, origins_ttl_s: float = 2.0) -> None:
        self.path = Path(path)
        if self.path.is_symlink():
            raise KeyStoreError(f"refusing a key database behind a symlink: {self.path}")
        self._db = connect(self.path, KeyStoreError, "key database")
        self._lock = threading.RLock()
        self._ephemeral: dict[str, _Ephemeral] = {}
        self._origins_ttl = origins_ttl_s
        self._origins = _Cache()
        self._migrate()

    @staticmethod
    def path_for(project: Any) -> Path:
        """Where a bot project's key store lives (beside its sessions database)."""
        return Path(project.data_dir) / "keys.db"

    @classmethod
    def for_project(cls, project: Any) -> KeyStore:
        """The key store of a bot project, created when missing."""
        return cls(cls.path_for(project))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- plumbing ----------------------------------------------------------------------
    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return write_transaction(
            self._db,
            self._lock,
            KeyStoreError,
            "key database is busy or unwritable",
            "could not save the key",
        )

    def _migrate(self) -> None:
        migrate(self._db, self._lock, MIGRATIONS, self._tx)

    @staticmethod
    def _row(r: tuple[Any, ...]) -> ApiKey:
        return ApiKey(
            id=r[0],
            role=r[1],
            name=r[2],
            prefix=f"{KEY_PREFIXES[r[1]]}{r[3]}",
            created=r[4],
            revoked=r[5],
            origins=tuple(json.loads(r[6])),
            rate_per_min=r[7],
        )

    # -- keys --------------------------------------------------------------------------
    def create(
        self,
        role: str,
        *,
        name: str = "",
        origins: Iterable[str] = (),
        rate_per_min: float | None = None,
    ) -> tuple[ApiKey, str]:
        """Make a key; returns it and its secret, which is not stored and cannot be shown again."""
        role, name, origin_list, rate = self._validate(role, name, origins, rate_per_min)
        secret, lookup = self._new_secret(role)
        salt = secrets.token_bytes(16)
        now = time.time()
        try:
            with self._tx() as db:
                cur = db.execute(
                    "INSERT INTO keys (role, name, lookup, salt, digest, created, origins,"
                    " rate_per_min) VALUES (?,?,?,?,?,?,?,?)",
                    (
                        role,
                        name,
                        lookup,
                        salt,
                        _digest(salt, secret),
                        now,
                        json.dumps(origin_list),
                        rate,
                    ),
                )
                key_id = int(cur.lastrowid or 0)
        except sqlite3.DatabaseError as exc:
            raise KeyStoreError(f"could not save the key: {exc}") from None
        self._origins.at = -1e9
        return self.get(key_id), secret

    def create_ephemeral(
        self,
        role: str,
        *,
        name: str = "demo page",
        origins: Iterable[str] = (),
        rate_per_min: float | None = None,
        secret: str | None = None,
    ) -> tuple[ApiKey, str]:
        """A key that lives in this process only (the demo page's widget key).

        ``secret`` lets several server workers share one demo key.
        """
        role, name, origin_list, rate = self._validate(role, name, origins, rate_per_min)
        if secret is None:
            secret, lookup = self._new_secret(role)
        else:
            parts = split_key(secret)
            if parts is None or parts[0] != role:
                raise InputError("the demo key is not a well-formed key for its role")
            lookup = parts[1]
        salt = secrets.token_bytes(16)
        key = ApiKey(
            id=EPHEMERAL_ID,
            role=role,
            name=name,
            prefix=f"{KEY_PREFIXES[role]}{lookup}",
            created=time.time(),
            origins=tuple(origin_list),
            rate_per_min=rate,
            ephemeral=True,
        )
        with self._lock:
            self._ephemeral = {lookup: _Ephemeral(key, salt, _digest(salt, secret), lookup)}
        self._origins.at = -1e9
        return key, secret

    def _validate(
        self, role: str, name: str, origins: Iterable[str], rate_per_min: float | None
    ) -> tuple[str, str, list[str], float | None]:
        role = _check_role(role)
        name = _check_name(name)
        origin_list = sorted({normalize_origin(o) for o in origins})
        if origin_list and role != "widget":
            raise InputError("only widget keys carry allowed origins (--origin)")
        if rate_per_min is not None and not (0 < float(rate_per_min) <= 10_000_000):
            raise InputError("rate must be a positive number of requests a minute")
        return role, name, origin_list, None if rate_per_min is None else float(rate_per_min)

    @staticmethod
    def _new_secret(role: str) -> tuple[str, str]:
        secret = generate_secret(role)
        return secret, secret[len(KEY_PREFIXES[role]) :][:LOOKUP_CHARS]

    def get(self, key_id: int) -> ApiKey:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLS} FROM keys WHERE id = ?", (key_id,)).fetchone()
        if row is None:
            raise UnknownKeyError(f"unknown key id {key_id}")
        return self._row(row)

    def list(self, include_revoked: bool = True) -> list[ApiKey]:
        q = f"SELECT {_COLS} FROM keys"
        if not include_revoked:
            q += " WHERE revoked IS NULL"
        with self._lock:
            rows = self._db.execute(q + " ORDER BY id").fetchall()
        return [self._row(r) for r in rows]

    def revoke(self, key_id: int) -> ApiKey:
        """Revoke a key; requests with it get 401 from the next request on."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE keys SET revoked = COALESCE(revoked, ?) WHERE id = ?", (now, key_id)
            )
            if cur.rowcount == 0:
                raise UnknownKeyError(f"unknown key id {key_id}")
        self._origins.at = -1e9
        return self.get(key_id)

    def verify(self, secret: str | None) -> ApiKey | None:
        """The active key whose secret this is, else None (unknown, malformed or revoked)."""
        parts = split_key(secret) if secret else None
        if parts is None:
            return None
        role, lookup = parts
        assert secret is not None
        with self._lock:
            eph = self._ephemeral.get(lookup)
            rows = self._db.execute(
                f"SELECT {_COLS}, salt, digest FROM keys WHERE lookup = ? AND role = ?",
                (lookup, role),
            ).fetchall()
        found: ApiKey | None = None
        if (
            eph is not None
            and eph.key.role == role
            and hmac.compare_digest(_digest(eph.salt, secret), eph.digest)
        ):
            found = eph.key
        for r in rows:
            if hmac.compare_digest(_digest(r[8], secret), r[9]):
                found = self._row(r[:8])
        if found is None or not found.active:
            return None
        return found

    def widget_origins(self) -> frozenset[str]:
        """Every origin that some active widget key allows (answers CORS preflights)."""
        now = time.monotonic()
        cache = self._origins
        if now - cache.at < self._origins_ttl:
            return cache.origins
        with self._lock:
            rows = self._db.execute(
                "SELECT origins FROM keys WHERE role = 'widget' AND revoked IS NULL"
            ).fetchall()
            eph = [e.key for e in self._ephemeral.values() if e.key.role == "widget"]
        out: set[str] = set()
        for (o,) in rows:
            out.update(json.loads(o))
        for k in eph:
            out.update(k.origins)
        self._origins = _Cache(frozenset(out), now)
        return self._origins.origins

    # -- session ownership -------------------------------------------------------------
    def bind_session(self, session_id: str, key_id: int, idem_key: str | None = None) -> str:
        """Record that ``key_id`` started ``session_id``; returns the session id now bound.

        With an idempotency key, a retried "start a conversation" request finds the session
        the first attempt started (the returned id may then differ from ``session_id``).
        """
        try:
            with self._tx() as db:
                if idem_key is not None:
                    row = db.execute(
                        "SELECT session_id FROM session_owners WHERE key_id = ? AND idem_key = ?",
                        (key_id, idem_key),
                    ).fetchone()
                    if row is not None:
                        return str(row[0])
                db.execute(
                    "INSERT OR IGNORE INTO session_owners (session_id, key_id, idem_key, created)"
                    " VALUES (?,?,?,?)",
                    (session_id, key_id, idem_key, time.time()),
                )
        except sqlite3.DatabaseError as exc:
            raise KeyStoreError(f"could not save the session owner: {exc}") from None
        return session_id

    def session_for(self, key_id: int, idem_key: str) -> str | None:
        """The session a key started with this idempotency key, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT session_id FROM session_owners WHERE key_id = ? AND idem_key = ?",
                (key_id, idem_key),
            ).fetchone()
        return str(row[0]) if row else None

    def forget_session(self, session_id: str) -> None:
        """Drop a deleted session's owner row (and the idempotency key that started it)."""
        try:
            with self._tx() as db:
                db.execute("DELETE FROM session_owners WHERE session_id = ?", (session_id,))
        except sqlite3.DatabaseError as exc:
            raise KeyStoreError(f"could not forget the session owner: {exc}") from None

    def prune_owners(self, exists: Callable[[str], bool]) -> int:
        """Drop the owner rows of sessions that no longer exist (swept); returns how many."""
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT session_id FROM session_owners")]
        gone = [(sid,) for sid in ids if not exists(sid)]
        if gone:
            try:
                with self._tx() as db:
                    db.executemany("DELETE FROM session_owners WHERE session_id = ?", gone)
            except sqlite3.DatabaseError as exc:
                raise KeyStoreError(f"could not prune session owners: {exc}") from None
        return len(gone)

    def session_owner(self, session_id: str) -> int | None:
        with self._lock:
            row = self._db.execute(
                "SELECT key_id FROM session_owners WHERE session_id = ?", (session_id,)
            ).fetchone()
        return int(row[0]) if row else None
