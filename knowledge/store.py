"""SQLite store: documents, their chunks (text, offsets, vector BLOBs) and index bookkeeping.

SQLite is the source of truth. A document and all its chunks land in one transaction, so a
document is either wholly present or absent even if the process is killed. The FAISS index
is derived from the vectors kept here and can always be rebuilt without re-embedding; the
``meta`` table records the count, id checksum and file hash of the last index written, so a
stale or damaged index file is detected on open. ``graph_pending`` journals documents whose
graph facts changed and are not yet saved in ``graph.json``, so the graph can be repaired too.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from knowledge.errors import StoreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    ingested_at REAL NOT NULL,
    text TEXT NOT NULL DEFAULT '',
    graph_payload TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ord INTEGER NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    question TEXT,
    answer TEXT,
    start INTEGER,
    end INTEGER,
    page INTEGER,
    vec BLOB NOT NULL,
    avec BLOB
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS graph_pending (doc_key TEXT PRIMARY KEY);
"""


@dataclass
class ChunkRow:
    """One chunk to store: a passage of a document or one FAQ item."""

    kind: str  # "passage" | "faq"
    text: str
    vec: np.ndarray
    start: int | None = None
    end: int | None = None
    page: int | None = None
    question: str | None = None
    answer: str | None = None
    avec: np.ndarray | None = None


def _blob(v: np.ndarray | None) -> bytes | None:
    return None if v is None else np.ascontiguousarray(v, dtype=np.float32).tobytes()


class Store:
    """Thread-safe access to ``knowledge.db``: one connection, one lock, WAL journal."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: cannot open the knowledge store ({exc})") from exc
        self._lock = threading.RLock()

    # -- transactions ------------------------------------------------------------------
    def _tx(self):
        store = self

        class _Tx:
            def __enter__(self) -> sqlite3.Connection:
                store._lock.acquire()
                try:
                    store._db.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    store._lock.release()
                    raise StoreError(f"{store.path}: cannot write ({exc})") from None
                return store._db

            def __exit__(self, exc_type, exc, tb) -> None:
                try:
                    if exc_type is None:
                        try:
                            store._db.execute("COMMIT")
                            return
                        except sqlite3.OperationalError as err:
                            store._rollback()
                            raise StoreError(f"{store.path}: cannot write ({err})") from None
                    store._rollback()
                    if isinstance(exc, sqlite3.OperationalError):  # disk full, I/O error
                        raise StoreError(f"{store.path}: cannot write ({exc})") from None
                finally:
                    store._lock.release()

        return _Tx()

    def _rollback(self) -> None:
        # SQLite may have rolled back already (disk full); a bare ROLLBACK would then raise
        # "no transaction is active" and hide the real error.
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.OperationalError):
                self._db.execute("ROLLBACK")

    def _query(self, sql: str, args: Sequence = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- documents ---------------------------------------------------------------------
    def get_document(self, path: str) -> dict | None:
        rows = self._query(
            "SELECT id, path, name, kind, sha256, size, ingested_at FROM documents WHERE path=?",
            (path,),
        )
        return dict(rows[0]) if rows else None

    def put_document(
        self,
        *,
        path: str,
        name: str,
        kind: str,
        sha256: str,
        size: int,
        text: str,
        graph_payload: str,
        chunks: Sequence[ChunkRow],
    ) -> tuple[list[int], list[int]]:
        """Replace the document at ``path`` atomically; return (new chunk ids, removed ids)."""
        with self._tx() as db:
            removed = self._delete(db, path)
            cur = db.execute(
                "INSERT INTO documents (path, name, kind, sha256, size, ingested_at, text,"
                " graph_payload) VALUES (?,?,?,?,?,?,?,?)",
                (path, name, kind, sha256, size, time.time(), text, graph_payload),
            )
            doc_id = cur.lastrowid
            ids = []
            for i, c in enumerate(chunks):
                cur = db.execute(
                    "INSERT INTO chunks (doc_id, ord, kind, text, question, answer, start, end,"
                    " page, vec, avec) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (doc_id, i, c.kind, c.text, c.question, c.answer, c.start, c.end, c.page,
                     _blob(c.vec), _blob(c.avec)),
                )  # fmt: skip
                ids.append(int(cur.lastrowid))
            # Journal every replacement: the old version's facts must go even if the new
            # version has none. Recovery of a document without facts is a cheap no-op.
            db.execute("INSERT OR IGNORE INTO graph_pending VALUES (?)", (path,))
        return ids, removed

    def delete_document(self, path: str) -> list[int] | None:
        """Delete a document; return its chunk ids, or None if it was not stored."""
        with self._tx() as db:
            row = db.execute("SELECT id FROM documents WHERE path=?", (path,)).fetchone()
            if row is None:
                return None
            removed = self._delete(db, path)
            db.execute("INSERT OR IGNORE INTO graph_pending VALUES (?)", (path,))
        return removed

    @staticmethod
    def _delete(db: sqlite3.Connection, path: str) -> list[int]:
        row = db.execute("SELECT id FROM documents WHERE path=?", (path,)).fetchone()
        if row is None:
            return []
        ids = [int(r[0]) for r in db.execute("SELECT id FROM chunks WHERE doc_id=?", (row[0],))]
        db.execute("DELETE FROM documents WHERE id=?", (row[0],))
        return ids

    def documents(self) -> list[dict]:
        rows = self._query(
            "SELECT d.name, d.path, d.kind, d.ingested_at, count(c.id) AS chunks FROM documents d"
            " LEFT JOIN chunks c ON c.doc_id = d.id GROUP BY d.id ORDER BY d.name"
        )
        return [dict(r) for r in rows]

    def paths(self) -> list[str]:
        return [r[0] for r in self._query("SELECT path FROM documents")]

    def document_text(self, path: str) -> str | None:
        rows = self._query("SELECT text FROM documents WHERE path=?", (path,))
        return rows[0][0] if rows else None

    def document_heads(self, chars: int = 200) -> dict[str, str]:
        """The first ``chars`` characters of every document's text, by path (its title line)."""
        rows = self._query("SELECT path, substr(text, 1, ?) FROM documents", (int(chars),))
        return {r[0]: r[1] or "" for r in rows}

    def graph_payload(self, path: str) -> tuple[str, str] | None:
        rows = self._query("SELECT kind, graph_payload FROM documents WHERE path=?", (path,))
        return (rows[0][0], rows[0][1]) if rows else None

    def graph_documents(self) -> list[str]:
        return [r[0] for r in self._query("SELECT path FROM documents WHERE graph_payload != ''")]

    # -- chunks ------------------------------------------------------------------------
    def chunks(self, ids: Sequence[int]) -> dict[int, dict]:
        """Metadata (no vectors) of the given chunk ids, with their document's name/path."""
        out: dict[int, dict] = {}
        ids = [int(i) for i in ids]
        for s in range(0, len(ids), 500):
            part = ids[s : s + 500]
            rows = self._query(
                "SELECT c.id, c.kind, c.text, c.question, c.answer, c.start, c.end, c.page,"
                " c.avec, d.name, d.path FROM chunks c JOIN documents d ON d.id = c.doc_id"
                f" WHERE c.id IN ({','.join('?' * len(part))})",
                part,
            )
            for r in rows:
                d = dict(r)
                av = d.pop("avec")
                d["avec"] = None if av is None else np.frombuffer(av, dtype=np.float32)
                out[int(r["id"])] = d
        return out

    def iter_vectors(self, batch: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All (ids, vectors) in id order, in batches, for an index rebuild."""
        last = -1
        while True:
            rows = self._query(
                "SELECT id, vec FROM chunks WHERE id > ? ORDER BY id LIMIT ?", (last, batch)
            )
            if not rows:
                return
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
            yield ids, vecs.reshape(len(rows), -1)
            last = int(ids[-1])

    def all_texts(self) -> list[tuple[int, str]]:
        return [(int(r[0]), r[1]) for r in self._query("SELECT id, text FROM chunks")]

    def id_checksum(self) -> tuple[int, int]:
        """(count, checksum) of the chunk ids, to compare with what the index holds."""
        r = self._query("SELECT count(*), coalesce(sum((id * 2654435761) % 4294967291), 0)"
                        " FROM chunks")[0]  # fmt: skip
        return int(r[0]), int(r[1])

    def counts(self) -> dict[str, int]:
        r = self._query(
            "SELECT (SELECT count(*) FROM documents),"
            " (SELECT count(*) FROM chunks WHERE kind='passage'),"
            " (SELECT count(*) FROM chunks WHERE kind='faq')"
        )[0]
        return {"documents": r[0], "chunks": r[1], "faq": r[2]}

    # -- bookkeeping -------------------------------------------------------------------
    def get_meta(self, key: str) -> dict | None:
        rows = self._query("SELECT value FROM meta WHERE key=?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: dict) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def pending_graph(self) -> list[str]:
        return [r[0] for r in self._query("SELECT doc_key FROM graph_pending")]

    def clear_pending_graph(self, keys: Sequence[str]) -> None:
        with self._tx() as db:
            db.executemany("DELETE FROM graph_pending WHERE doc_key=?", [(k,) for k in keys])

    def close(self) -> None:
        with self._lock:
            self._db.close()
