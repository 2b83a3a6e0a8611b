"""kill -9 harness for conversation writes (RELIABILITY.md A1), shared by tests and benchmark.

The client side of the experiment: it sends turns with idempotency keys to a driver process
(:mod:`tests.reliability._session_driver`), records a turn as acknowledged only when the
driver's ack line arrives, SIGKILLs the driver after a random delay, restarts it, resends
every unacknowledged request with the same key, and after each cycle compares the database
with its ledger:

* 0 acknowledged turns missing (and each stored with the acknowledged number);
* 0 duplicated turns (every request text is stored at most once);
* per session, turn numbers are exactly 1..N;
* every stored turn carries its reply (user and bot halves written together);
* ``PRAGMA integrity_check`` is ``ok``.

The random generator is seeded and the seed is reported, so a failing run can be replayed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SESSION_DRIVER = Path(__file__).with_name("_session_driver.py")


@dataclass
class CrashStats:
    """What a run of cycles saw; ``problems`` lists every broken invariant (empty = pass)."""

    seed: int
    cycles: int = 0
    sent: int = 0
    acknowledged: int = 0
    lost: int = 0
    duplicated: int = 0
    gaps: int = 0
    integrity_failures: int = 0
    wrong_number: int = 0
    missing_reply: int = 0
    unknown_rows: int = 0
    committed_unacked: int = 0  # committed but killed before the ack: the retry must dedupe
    restarts: int = 0
    restart_seconds: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def mean_restart_s(self) -> float:
        rs = self.restart_seconds
        return sum(rs) / len(rs) if rs else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "cycles": self.cycles,
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "gaps": self.gaps,
            "integrity_failures": self.integrity_failures,
            "wrong_number": self.wrong_number,
            "missing_reply": self.missing_reply,
            "unknown_rows": self.unknown_rows,
            "committed_unacked": self.committed_unacked,
            "restarts": self.restarts,
            "mean_restart_s": round(self.mean_restart_s, 4),
            "max_restart_s": round(max(self.restart_seconds, default=0.0), 4),
            "seconds": round(self.seconds, 2),
            "problems": self.problems[:20],
        }


class SessionCrashHarness:
    """Drive turns into ``db`` through the driver, killing it every cycle."""

    def __init__(
        self,
        db: Path,
        seed: int,
        *,
        sessions: int = 4,
        delay_ms: tuple[float, float] = (50.0, 500.0),
        python: str = sys.executable,
        max_rate: float = 500.0,
    ) -> None:
        self.db = Path(db)
        # a busy chat server, not a flood: unbounded sending grows the database by ~900 turns
        # a cycle and the per-cycle check with it, so 1,000 cycles would take hours
        self.send_interval = 1.0 / max_rate if max_rate > 0 else 0.0
        self.rng = random.Random(seed)
        self.stats = CrashStats(seed=seed)
        self.sessions = [f"s{i}" for i in range(sessions)]
        self.delay_ms = delay_ms
        self.python = python
        self.requests: dict[str, tuple[str, str]] = {}  # key -> (session, text)
        self.order: list[str] = []  # keys in first-send order
        self.acked: dict[str, int] = {}  # key -> acknowledged turn number
        self._next = 0

    # -- one cycle -----------------------------------------------------------------------
    def _new_request(self) -> str:
        self._next += 1
        key = f"k{self._next}"
        sid = self.rng.choice(self.sessions)
        self.requests[key] = (sid, f"message {self._next} to {sid}")
        self.order.append(key)
        self.stats.sent += 1
        return key

    def _start(self) -> tuple[subprocess.Popen[str], float]:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [self.python, "-S", str(SESSION_DRIVER), str(self.db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            cwd=str(REPO),
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith('{"ready"'):
            err = proc.stderr.read() if proc.stderr else ""
            proc.kill()
            proc.wait()
            raise RuntimeError(f"session driver failed to start: {line!r} {err[-2000:]}")
        return proc, time.perf_counter() - t0

    def cycle(self) -> None:
        """Start, send (resends first), kill after U(delay) ms, restart-check invariants."""
        proc, startup = self._start()
        self.stats.restarts += 1
        self.stats.restart_seconds.append(startup)
        resend = [k for k in self.order if k not in self.acked]
        stop = threading.Event()
        acks: list[dict[str, Any]] = []

        def send() -> None:
            assert proc.stdin is not None
            queue = list(resend)
            try:
                while not stop.is_set():
                    key = queue.pop(0) if queue else self._new_request()
                    sid, text = self.requests[key]
                    proc.stdin.write(
                        json.dumps({"op": "turn", "session": sid, "key": key, "text": text}) + "\n"
                    )
                    proc.stdin.flush()
                    if self.send_interval:
                        time.sleep(self.send_interval)
            except (BrokenPipeError, OSError, ValueError):
                pass

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                try:
                    acks.append(json.loads(line))
                except ValueError:  # a line cut by the kill is no acknowledgement
                    break

        sender = threading.Thread(target=send, daemon=True)
        reader = threading.Thread(target=read, daemon=True)
        sender.start()
        reader.start()
        time.sleep(self.rng.uniform(*self.delay_ms) / 1000.0)
        os.kill(proc.pid, signal.SIGKILL)
        stop.set()
        proc.wait()
        reader.join(10)
        sender.join(10)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        for a in acks:
            if "error" in a:
                self.stats.problems.append(f"driver error: {a}")
                continue
            key, n = a["key"], int(a["n"])
            prev = self.acked.get(key)
            if prev is not None and prev != n:
                self.stats.wrong_number += 1
                self.stats.problems.append(f"{key} acknowledged as {prev} then as {n}")
            self.acked[key] = n
        self.stats.cycles += 1
        self.check()

    # -- invariants ----------------------------------------------------------------------
    def check(self) -> None:
        """Compare the database with the ledger (a plain sqlite3 connection: an outside view)."""
        s = self.stats
        db = sqlite3.connect(str(self.db), timeout=30)
        try:
            ok = db.execute("PRAGMA integrity_check").fetchone()[0]
            if ok != "ok":
                s.integrity_failures += 1
                s.problems.append(f"cycle {s.cycles}: integrity_check: {ok}")
            rows = db.execute(
                "SELECT session_id, n, user_text, reply_text, idem_key FROM turns"
            ).fetchall()
        finally:
            db.close()
        by_key: dict[str, list[tuple[str, int]]] = {}
        by_session: dict[str, list[int]] = {}
        texts: dict[str, int] = {}
        for sid, n, user, reply, key in rows:
            by_session.setdefault(sid, []).append(n)
            texts[user] = texts.get(user, 0) + 1
            if key is None or key not in self.requests:
                s.unknown_rows += 1
                s.problems.append(f"row with unknown key {key!r}")
                continue
            by_key.setdefault(key, []).append((sid, n))
            if reply != "re: " + user or self.requests[key] != (sid, user):
                s.missing_reply += 1
                s.problems.append(f"{key}: stored turn is not the request+reply sent")
        s.duplicated = sum(c - 1 for c in texts.values() if c > 1)
        if s.duplicated:
            s.problems.append(f"cycle {s.cycles}: {s.duplicated} duplicated turns")
        lost = [k for k in self.acked if k not in by_key]
        s.lost = len(lost)
        if lost:
            s.problems.append(f"cycle {s.cycles}: acknowledged but missing: {lost[:5]}")
        for k, n in self.acked.items():
            stored = by_key.get(k)
            if stored and stored[0][1] != n:
                s.wrong_number += 1
                s.problems.append(f"{k}: acknowledged as turn {n}, stored as {stored[0][1]}")
        gaps = 0
        for sid, ns in by_session.items():
            ns.sort()
            if ns != list(range(1, len(ns) + 1)):
                gaps += 1
                s.problems.append(f"session {sid}: turn numbers not 1..N")
        s.gaps = gaps
        s.acknowledged = len(self.acked)
        # committed rows whose ack never arrived: the next cycle's resend must not duplicate them
        s.committed_unacked += sum(1 for k in by_key if k not in self.acked)

    def run(self, cycles: int) -> CrashStats:
        t0 = time.perf_counter()
        for _ in range(cycles):
            self.cycle()
        # a last clean pass: every request sent is acknowledged exactly once
        self.drain()
        self.stats.seconds = time.perf_counter() - t0
        return self.stats

    def drain(self) -> None:
        """Resend everything unacknowledged without a kill, then check again."""
        proc, startup = self._start()
        self.stats.restarts += 1
        self.stats.restart_seconds.append(startup)
        assert proc.stdin is not None and proc.stdout is not None
        for key in [k for k in self.order if k not in self.acked]:
            sid, text = self.requests[key]
            proc.stdin.write(
                json.dumps({"op": "turn", "session": sid, "key": key, "text": text}) + "\n"
            )
            proc.stdin.flush()
            a = json.loads(proc.stdout.readline())
            if "error" in a:
                self.stats.problems.append(f"driver error: {a}")
            else:
                self.acked[key] = int(a["n"])
        proc.stdin.close()
        proc.wait(30)
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
        self.check()
        unacked = [k for k in self.order if k not in self.acked]
        if unacked:
            self.stats.problems.append(f"never acknowledged after drain: {unacked[:5]}")


# -- ingestion (RELIABILITY.md A2) ---------------------------------------------------------
INGEST_DRIVER = Path(__file__).with_name("_ingest_driver.py")

_WORDS = [
    "refund",
    "shipping",
    "invoice",
    "parcel",
    "warranty",
    "battery",
    "charger",
    "screen",
    "laptop",
    "phone",
    "order",
    "account",
    "password",
    "delivery",
    "courier",
    "receipt",
    "voucher",
    "discount",
    "return",
    "exchange",
    "repair",
]
_PEOPLE = ["Alice", "Bruno", "Chen", "Dana", "Emil", "Farah", "Goran", "Hana"]
_ORGS = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay"]


def _prose(rng: random.Random, n_sent: int) -> str:
    out = []
    for _ in range(n_sent):
        if rng.random() < 0.3:
            out.append(f"{rng.choice(_PEOPLE)} works at {rng.choice(_ORGS)}.")
        else:
            words = rng.choices(_WORDS, k=rng.randint(6, 18))
            out.append(" ".join(words).capitalize() + ".")
    paras = [" ".join(out[i : i + 5]) for i in range(0, len(out), 5)]
    return "\n\n".join(paras) + "\n"


def make_file(rng: random.Random, path: Path, version: int) -> bytes:
    """Content for ``path`` by its suffix; ``version`` makes each rewrite differ."""
    name = path.name
    if name.endswith(".triples.csv"):
        rows = ["head,relation,tail"]
        for i in range(rng.randint(2, 6)):
            rows.append(f"{rng.choice(_PEOPLE)} v{version},manages,{rng.choice(_ORGS)} unit {i}")
        return ("\n".join(rows) + "\n").encode()
    if name.endswith(".csv"):
        rows = ["question,answer"]
        for i in range(rng.randint(2, 8)):
            rows.append(
                f"How do I {rng.choice(_WORDS)} item {i} v{version}?,"
                f"Use the {rng.choice(_WORDS)} page ({rng.choice(_WORDS)} {i})."
            )
        return ("\n".join(rows) + "\n").encode()
    if name.endswith(".md"):
        return (f"# Notes v{version}\n\n" + _prose(rng, rng.randint(3, 40))).encode()
    return (f"Version {version}.\n\n" + _prose(rng, rng.randint(3, 60))).encode()


@dataclass
class IngestStats:
    seed: int
    cycles: int = 0
    killed_mid_ingest: int = 0
    completed: int = 0
    rebuilt_on_open: int = 0
    documents_checked: int = 0
    problems: list[str] = field(default_factory=list)
    restart_seconds: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        rs = self.restart_seconds
        return {
            "seed": self.seed,
            "cycles": self.cycles,
            "killed_mid_ingest": self.killed_mid_ingest,
            "completed": self.completed,
            "rebuilt_on_open": self.rebuilt_on_open,
            "documents_checked": self.documents_checked,
            "mean_restart_s": round(sum(rs) / len(rs), 4) if rs else 0.0,
            "seconds": round(self.seconds, 2),
            "problems": self.problems[:20],
        }


class IngestCrashHarness:
    """Ingest a changing corpus, SIGKILL mid-way, reopen, check every document is all-or-nothing."""

    SUFFIXES = (".txt", ".md", ".csv", ".triples.csv")

    def __init__(
        self,
        workdir: Path,
        seed: int,
        *,
        files: int = 24,
        kill_window_s: float = 0.6,
        python: str = sys.executable,
    ) -> None:
        self.work = Path(workdir)
        self.corpus = self.work / "corpus"
        self.store = self.work / "store"
        self.corpus.mkdir(parents=True, exist_ok=True)
        self.rng = random.Random(seed)
        self.stats = IngestStats(seed=seed)
        self.kill_window_s = kill_window_s  # first guess; then 1.2x the mean ingest time seen
        self._ingest_times: list[float] = []
        self.python = python
        self.versions: dict[str, set[str]] = {}  # resolved path -> sha256 of every version
        self.contents: dict[str, bytes] = {}  # sha256 -> bytes
        self._n = 0
        for _ in range(files):
            self._add_file()

    # -- corpus --------------------------------------------------------------------------
    def _write(self, path: Path, version: int) -> None:
        import hashlib

        data = make_file(self.rng, path, version)
        path.write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        self.versions.setdefault(os.path.realpath(path), set()).add(sha)
        self.contents[sha] = data

    def _add_file(self) -> None:
        self._n += 1
        suffix = self.rng.choice(self.SUFFIXES)
        self._write(self.corpus / f"doc{self._n:04d}{suffix}", 0)

    def mutate(self) -> None:
        """Between cycles: rewrite a few files, delete one, add one (exercises replace/remove)."""
        files = sorted(self.corpus.iterdir())
        for p in self.rng.sample(files, max(1, len(files) // 3)):
            self._write(p, self.rng.randint(1, 10**6))
        if len(files) > 4 and self.rng.random() < 0.5:
            self.rng.choice(files).unlink(missing_ok=True)
        if self.rng.random() < 0.6:
            self._add_file()

    # -- one cycle -----------------------------------------------------------------------
    def _start(self, store: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
        proc = subprocess.Popen(
            [self.python, str(INGEST_DRIVER), str(store), str(self.corpus)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(REPO),
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith('{"ready"'):
            err = proc.stderr.read() if proc.stderr else ""
            proc.kill()
            proc.wait()
            raise RuntimeError(f"ingest driver failed to start: {line!r} {err[-3000:]}")
        return proc, json.loads(line)

    def cycle(self) -> None:
        t0 = time.perf_counter()
        proc, ready = self._start(self.store)
        self.stats.restart_seconds.append(time.perf_counter() - t0)
        if ready.get("rebuilt"):
            self.stats.rebuilt_on_open += 1
        window = self.kill_window_s
        if self._ingest_times:
            window = 1.2 * sum(self._ingest_times[-5:]) / len(self._ingest_times[-5:])
        time.sleep(self.rng.uniform(0.0, window))
        finished = proc.poll() is not None
        if not finished:
            os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        if finished and proc.returncode != 0:
            self.stats.problems.append(f"driver exited {proc.returncode}: {err[-500:]}")
        if "done" in out:
            self.stats.completed += 1
            done = json.loads(out.strip().splitlines()[-1])
            # how long a whole ingest takes, to aim the next kill inside one
            self._ingest_times.append(float(done.get("seconds", window)))
        else:
            self.stats.killed_mid_ingest += 1
        self.stats.cycles += 1
        self.check(self.store)
        self.mutate()

    def finish(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Re-ingest without a kill and ingest the same corpus into a fresh store: both stats."""
        final: list[dict[str, Any]] = []
        for store in (self.store, self.work / "clean"):
            proc, _ = self._start(store)
            _, err = proc.communicate(timeout=300)
            if proc.returncode != 0:
                self.stats.problems.append(f"final ingest failed: {err[-500:]}")
            final.append(self.check(store))
        return final[0], final[1]

    def run(self, cycles: int) -> IngestStats:
        t0 = time.perf_counter()
        for _ in range(cycles):
            self.cycle()
        resumed, clean = self.finish()
        if resumed != clean:
            self.stats.problems.append(f"re-ingest does not converge: {resumed} != {clean}")
        self.stats.seconds = time.perf_counter() - t0
        return self.stats

    # -- invariants ----------------------------------------------------------------------
    def check(self, store: Path) -> dict[str, Any]:
        """Reopen (repair) and check documents, chunks, vectors and facts agree; return counts."""
        sys.path.insert(0, str(REPO))
        import numpy as np

        from knowledge.base import KnowledgeBase
        from knowledge.documents import chunk_document, load_document
        from knowledge.graph import KnowledgeGraph, normalize
        from tests.reliability._ingest_driver import HashEmbedder

        p = self.stats.problems
        kb = KnowledgeBase.open(store, HashEmbedder(), index_kind="flat")
        if kb.rebuilt:
            self.stats.rebuilt_on_open += 1
        try:
            db = kb.store._db
            ok = db.execute("PRAGMA integrity_check").fetchone()[0]
            if ok != "ok":
                p.append(f"knowledge.db integrity_check: {ok}")
            docs = db.execute("SELECT id, path, kind, sha256 FROM documents").fetchall()
            chunk_rows = db.execute("SELECT id, doc_id, vec FROM chunks").fetchall()
            by_doc: dict[int, int] = {}
            for _, doc_id, _ in chunk_rows:
                by_doc[doc_id] = by_doc.get(doc_id, 0) + 1
            signature = []
            for doc_id, path, _kind, sha in docs:
                self.stats.documents_checked += 1
                if sha not in self.versions.get(path, set()):
                    p.append(f"{path}: stored version {sha[:8]} was never written")
                    continue
                doc = load_document(Path(path), self.contents[sha])
                want = (
                    len(doc.faq)
                    if doc.kind == "faq"
                    else 0
                    if doc.kind == "triples"
                    else len(chunk_document(doc))
                )
                got = by_doc.get(doc_id, 0)
                if got != want:
                    p.append(f"{path}: {got} chunk rows, its text makes {want} (partial document)")
                signature.append((path, sha, got))
            if sum(by_doc.values()) != len(chunk_rows) or set(by_doc) - {d[0] for d in docs}:
                p.append("chunk rows without their document")
            # vectors: the index holds exactly the chunk ids, each with the stored vector
            ids = sorted(int(i) for i in kb.index.ids())
            want_ids = sorted(int(r[0]) for r in chunk_rows)
            if ids != want_ids:
                p.append(f"index ids differ from chunk ids ({len(ids)} vs {len(want_ids)})")
            else:
                faiss_index = kb.index._index
                for cid, _, blob in chunk_rows:
                    v = faiss_index.reconstruct(int(cid))
                    if not np.array_equal(v, np.frombuffer(blob, dtype=np.float32)):
                        p.append(f"chunk {cid}: index vector differs from the stored one")
                        break
            # graph: equal to a graph rebuilt from the stored documents, no orphan facts
            fresh = KnowledgeGraph()
            stored_paths = {d[1] for d in docs}
            for key in sorted(kb.store.graph_documents()):
                kind, data = kb.store.graph_payload(key) or ("", "")
                if kind == "triples":
                    fresh.add_triples([tuple(t) for t in json.loads(data)], doc_id=key)
                else:
                    fresh.add_document(key, kb.store.document_text(key) or "")

            def facts(g: Any) -> set[tuple[str, str, str, tuple[str, ...]]]:
                return {(normalize(s), r, normalize(o), tuple(d)) for s, r, o, d in g.facts()}

            have = facts(kb.graph) if kb.graph is not None else set()
            if have != facts(fresh):
                p.append(
                    f"graph facts differ from the stored documents' "
                    f"({len(have)} vs {len(facts(fresh))})"
                )
            orphans = {d for f in have for d in f[3]} - stored_paths
            if orphans:
                p.append(f"graph facts of absent documents: {sorted(orphans)[:3]}")
            temps = [
                f.name
                for f in store.iterdir()
                if f.name.endswith(".tmp") or ".tmp-" in f.name or ".tmp." in f.name
            ]
            if temps:
                p.append(f"orphan temp files after reopen: {temps}")
            stats = kb.stats()
            return {"signature": sorted(signature), **stats}
        finally:
            kb.close()
