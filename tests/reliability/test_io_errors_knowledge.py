"""I/O-error injection into the knowledge store, its files and model checkpoints (A4, D1, D2).

SQLite side (A4 + D1): the VFS shim of :mod:`tests.reliability._faultvfs` fails the N-th
``xWrite`` / ``xSync`` / ``xTruncate`` (SQLITE_IOERR or SQLITE_FULL, once or from N on) while
a real :class:`knowledge.base.KnowledgeBase` ingests a folder (two notes, an FAQ CSV, a triples
TSV), forgets a document, or syncs a folder where a file changed and one was deleted. N runs
1, 2, 3, ... on a fresh copy of the store until the operation no longer meets the fault. At
every N, with the fault off:

* the error reached the caller as the package's one-line error (a ``KnowledgeError`` raised,
  or a line in the ingest report), never a raw ``sqlite3`` error; a silent fault must have
  been harmless (the store then equals a clean run's);
* the store, re-opened from a snapshot of the disk, passes ``integrity_check`` and D1 (index
  ids == chunk ids, no duplicate, every stored vector is found under its own id, searches
  return stored chunks only), and each document is wholly its old version, its new version
  or absent (row, chunks, vectors and graph facts alike);
* the in-process index still mirrors SQLite, and the *same* ``KnowledgeBase`` object then
  repeats the operation successfully (recovery without restart), after which a re-open needs
  no repair.

File side (D2): the index file, the graph JSON, the router's weights and LM checkpoints are
written with Python file I/O, ``os.fsync``, ``os.replace`` and safetensors, not through
SQLite. :mod:`tests.reliability._osfaults` fails the N-th of those calls under the store
(EIO or ENOSPC, once or persistent). Pass: the error is one clear line of the package's type,
no temp file is left, every file on disk is the old or the new generation (its manifest or
recorded sha256 matches), and a retry on the same objects succeeds.

The default suite runs one full N sweep per store (knowledge ingest, IOERR, fail-once; each
file writer, EIO, fail-once); the other modes and kinds are ``slow``.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from knowledge.base import IngestReport, KnowledgeBase
from knowledge.errors import KnowledgeError
from tests.reliability import _osfaults
from tests.reliability._faultvfs import FaultVFS

N_CAP = 400
EDGE = 8  # sampled sweeps still try every N of the first and last EDGE calls

NOTES = {
    "returns.md": "# Returns\n\nAcme Store accepts returns within thirty days of delivery. "
    "Refunds go back to the original card within five business days.\n\n"
    "Acme Store is based in Lyon. Items on sale cannot be returned.",
    "shipping.md": "# Shipping\n\nParcels leave the Lyon warehouse every weekday. "
    "Express delivery takes one day and costs twelve euros.\n\n"
    "Acme Store ships to France, Belgium and Spain.",
}
FAQ = "question,answer\nDo you ship abroad?,Yes: to Belgium and Spain.\n" \
      "How long do refunds take?,Five business days.\n"  # fmt: skip
TRIPLES = "Acme Store\tlocated in\tLyon\nLyon\tlocated in\tFrance\nAcme Store\tfounded in\t1998\n"
OLD = {"hours.md": "# Opening hours\n\nThe Lyon shop opens at nine and closes at six."}


# -- fixtures ------------------------------------------------------------------------------
class CachedEmbedder:
    """The real MiniLM encoder, memoised per text: each N embeds the same texts again, and
    the vectors must be identical for the generations to be comparable byte for byte."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.dim = int(getattr(real, "dim", 384))
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str], *args: Any, **kwargs: Any) -> np.ndarray:
        texts = list(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            for t, v in zip(missing, self.real.encode(missing), strict=True):
                self._cache[t] = np.asarray(v, dtype=np.float32)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._cache[t] for t in texts])

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture(scope="module")
def emb(embedder: Any) -> CachedEmbedder:
    return CachedEmbedder(embedder)


def write_files(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


# -- what a store holds --------------------------------------------------------------------
DocState = tuple[str, tuple[str, ...], frozenset[tuple[str, str, str]]]


def doc_states(kb: KnowledgeBase) -> dict[str, DocState]:
    """Per document: content hash, its chunk texts, and the graph facts it supports."""
    facts: dict[str, set[tuple[str, str, str]]] = {}
    if kb.graph is not None:
        for s, r, o, docs in kb.graph.facts():
            for d in docs:
                facts.setdefault(d, set()).add((s, r, o))
    out: dict[str, DocState] = {}
    rows = kb.store._query(
        "SELECT d.path, d.sha256, c.text FROM documents d LEFT JOIN chunks c ON c.doc_id = d.id"
    )
    by_doc: dict[str, tuple[str, list[str]]] = {}
    for r in rows:
        sha, texts = by_doc.setdefault(r[0], (r[1], []))
        if r[2] is not None:
            texts.append(r[2])
    for path, (sha, texts) in by_doc.items():
        out[path] = (sha, tuple(sorted(texts)), frozenset(facts.get(path, set())))
    for path in set(facts) - set(out):  # facts of a document that is not stored: orphaned
        out[path] = ("<absent>", (), frozenset(facts[path]))
    return out


def d1_problems(kb: KnowledgeBase) -> list[str]:
    """D1: the FAISS index and SQLite agree id for id, vector for vector."""
    problems = []
    rows = kb.store._query("SELECT id, vec, text FROM chunks")
    db_ids = [int(r[0]) for r in rows]
    ids = kb.index.ids()
    if len(ids) != len(set(ids.tolist())):
        problems.append("the index holds an id twice")
    if set(ids.tolist()) != set(db_ids) or kb.index.ntotal != len(db_ids):
        problems.append(f"index ids {sorted(ids.tolist())} != chunk ids {sorted(db_ids)}")
    vec_of = {int(r[0]): np.frombuffer(r[1], dtype=np.float32) for r in rows}
    for cid, vec in vec_of.items():
        _, got = kb.index.search(vec, 1)
        g = int(got[0][0]) if got.size else -1
        if g not in vec_of or not np.allclose(vec_of[g], vec, atol=1e-5):
            problems.append(f"chunk {cid}'s vector is found under id {g}")
            break
    text_of = {int(r[0]): r[2] for r in rows}
    for q in ("When do refunds arrive?", "Where is Acme Store?", "opening hours"):
        for p in kb.search(q, k=5):
            if p.chunk_id not in text_of:
                problems.append(f"search returned chunk {p.chunk_id}, not in the store")
            elif p.text not in text_of[p.chunk_id]:
                problems.append(f"search returned chunk {p.chunk_id} with text not stored")
    return problems


def integrity(path: Path) -> str:
    db = sqlite3.connect(str(path))
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def snapshot(src: Path, dst: Path) -> Path:
    """Copy a store that an open ``KnowledgeBase`` holds: the DB via the backup API."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("knowledge.db"):
            shutil.copy2(f, dst / f.name)
    s = sqlite3.connect(str(src / "knowledge.db"))
    d = sqlite3.connect(str(dst / "knowledge.db"))
    try:
        s.backup(d)
    finally:
        d.close()
        s.close()
    return dst


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or ".tmp-" in p.name)


def one_line_problem(msg: str) -> str | None:
    if not msg.strip():
        return "empty error message"
    if "\n" in msg or "Traceback" in msg:
        return f"not one clean line: {msg!r}"
    return None


# -- the SQLite loop (A4 + D1) -------------------------------------------------------------
@dataclass
class KbScenario:
    """``prepare(src)`` writes the sources and returns (what the pristine store ingests,
    a callback that changes the sources afterwards); ``run(kb, src)`` is the operation."""

    name: str
    prepare: Callable[[Path], tuple[list[Path], Callable[[], None]]]
    run: Callable[[KnowledgeBase, Path], IngestReport | bool]


def _prep_ingest(src: Path) -> tuple[list[Path], Callable[[], None]]:
    write_files(src / "old", OLD)
    write_files(src / "new", {**NOTES, "faq.csv": FAQ, "facts.tsv": TRIPLES})
    return [src / "old"], lambda: None


def _prep_forget(src: Path) -> tuple[list[Path], Callable[[], None]]:
    write_files(src / "docs", {**OLD, **NOTES, "faq.csv": FAQ, "facts.tsv": TRIPLES})
    return [src / "docs"], lambda: None


def _prep_sync(src: Path) -> tuple[list[Path], Callable[[], None]]:
    docs = write_files(src / "docs", {**OLD, **NOTES, "faq.csv": FAQ, "facts.tsv": TRIPLES})

    def change() -> None:
        (docs / "returns.md").write_text(
            NOTES["returns.md"].replace("thirty", "sixty") + "\n\nGift cards are final.",
            encoding="utf-8",
        )
        (docs / "facts.tsv").write_text(TRIPLES + "Acme Store\tfounded by\tJane Roe\n")
        (docs / "shipping.md").unlink()

    return [docs], change


KB_SCENARIOS = {
    "ingest": KbScenario("ingest", _prep_ingest, lambda kb, src: kb.ingest([src / "new"])),
    "forget": KbScenario(
        "forget", _prep_forget, lambda kb, src: kb.forget(src / "docs" / "returns.md")
    ),
    "sync": KbScenario("sync", _prep_sync, lambda kb, src: kb.ingest([src / "docs"], sync=True)),
}


@dataclass
class LoopReport:
    what: str
    last_n: int = 0
    points: int = 0  # how many N were tried
    failed_at: list[int] = field(default_factory=list)
    silent_at: list[int] = field(default_factory=list)  # fault fired, no error, state = after
    repaired_on_open: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def error(self, msg: str) -> None:
        key = msg.split("(", 1)[-1][:60] if "(" in msg else msg[:60]
        self.errors[key] = self.errors.get(key, 0) + 1

    def line(self) -> str:
        return (
            f"{self.what}: N=1..{self.last_n} ({self.points or self.last_n} points), errors at {len(self.failed_at)} N, silent "
            f"(harmless) faults at {self.silent_at or 'none'}, repaired on re-open at "
            f"{self.repaired_on_open} N, clean-run calls {self.calls}, {self.seconds:.1f} s; "
            f"errors seen: {self.errors}"
        )

    def sweep_done(self, n: int, fired: int, msgs: list[str]) -> bool:
        """The sweep ends at the first N the operation completes without meeting the fault;
        an error there is a failure with no fault to blame."""
        if fired == 0 and msgs:
            self.problems.append(f"N={n}: failed with no fault injected: {msgs}")
        return fired == 0

    def assert_clean(self) -> None:
        assert self.problems == [], "\n".join([self.line(), *self.problems[:20]])
        assert self.failed_at, f"the fault never reached the caller: {self.line()}"


def _run_op(sc: KbScenario, kb: KnowledgeBase, src: Path, rep: LoopReport, n: int) -> list[str]:
    """Run the operation; return the error lines the caller saw (problems go to ``rep``)."""
    msgs: list[str] = []
    try:
        result = sc.run(kb, src)
    except KnowledgeError as exc:
        msgs.append(str(exc))
    except Exception as exc:  # judged: an untyped error is a finding
        rep.problems.append(f"N={n}: untyped {type(exc).__name__} reached the caller: {exc}")
        msgs.append(str(exc))
    else:
        if isinstance(result, IngestReport):
            msgs.extend(m for _, m in result.errors)
    for m in msgs:
        if (p := one_line_problem(m)) is not None:
            rep.problems.append(f"N={n}: {p}")
        rep.error(m)
    return msgs


def _allowed(cur: dict[str, DocState], before: dict, after: dict, n: int, where: str) -> list[str]:
    out = []
    for path in set(cur) | set(before) | set(after):
        state = cur.get(path)
        if state != before.get(path) and state != after.get(path):
            out.append(f"N={n} ({where}): {Path(path).name} is neither old, new nor absent")
    return out


def schedule(total: int, stride: int) -> Iterator[int]:
    """N = 1, 2, ...; with ``stride`` > 1 only every stride-th N between the first and last
    ``EDGE`` calls of a clean run (``total`` calls), then every N until the fault is missed."""
    if stride <= 1 or total <= 3 * EDGE:
        yield from range(1, N_CAP + 1)
        return
    yield from range(1, EDGE + 1)
    yield from range(EDGE + stride, total - EDGE, stride)
    yield from range(total - EDGE, N_CAP + 1)


def run_kb_loop(
    sc: KbScenario,
    mode: str,
    kind: str,
    fault: FaultVFS,
    emb: Any,
    tmp: Path,
    stride: int = 1,
) -> LoopReport:
    rep = LoopReport(f"A4 knowledge {sc.name}/{mode}/{kind}")
    t0 = time.perf_counter()
    src, pristine, root = tmp / "src", tmp / "pristine", tmp / "faulted"
    root.mkdir()
    fault.set_root(root)
    first, change = sc.prepare(src)
    with KnowledgeBase.open(pristine, emb) as kb:
        report = kb.ingest(first)
        assert not report.errors, report.errors
    change()

    def fresh(tag: str) -> Path:
        d = root / tag
        shutil.copytree(pristine, d)
        return d

    with KnowledgeBase.open(pristine, emb) as kb:
        before = doc_states(kb)
    d = fresh("reference")
    with KnowledgeBase.open(d, emb) as kb:
        fault.arm(10**9)  # counts, never fires
        try:
            res = sc.run(kb, src)
        finally:
            fault.disarm()
        rep.calls = dict(fault.calls)
        assert not isinstance(res, IngestReport) or not res.errors, res
        after = doc_states(kb)
    assert after != before, f"{sc.name}: the clean run changed nothing"
    shutil.rmtree(d)

    for n in schedule(sum(rep.calls.values()), stride):
        rep.last_n = n
        rep.points += 1
        d = fresh(f"n{n}")
        kb = KnowledgeBase.open(d, emb)
        fault.arm(n, mode=mode, kind=kind)
        try:
            msgs = _run_op(sc, kb, src, rep, n)
        finally:
            fault.disarm()
        fired = fault.fired
        if msgs:
            rep.failed_at.append(n)
        # the process's own view: the in-memory index still mirrors SQLite
        if kb.index.id_checksum() != kb.store.id_checksum():
            rep.problems.append(f"N={n}: in-process index != store after the fault (D1)")
        if (ok := integrity(d / "knowledge.db")) != "ok":
            rep.problems.append(f"N={n}: integrity_check: {ok}")
        # what a fresh process would find on disk
        snap = snapshot(d, tmp / "snap" / f"n{n}")
        with KnowledgeBase.open(snap, emb) as re_kb:
            rep.repaired_on_open += re_kb.rebuilt is not None
            rep.problems += [f"N={n} (re-open): {p}" for p in d1_problems(re_kb)]
            cur = doc_states(re_kb)
        rep.problems += _allowed(cur, before, after, n, "re-open")
        if fired and not msgs:
            if cur != after:
                rep.problems.append(f"N={n}: a fault changed the outcome but no error was seen")
            else:
                rep.silent_at.append(n)
        shutil.rmtree(snap)
        # recovery without restart: the same objects repeat the operation
        retry = _run_op(sc, kb, src, LoopReport("retry"), n)
        if retry:
            rep.problems.append(f"N={n}: the retry on the same object failed: {retry}")
        if doc_states(kb) != after:
            rep.problems.append(f"N={n}: after the retry the store differs from a clean run")
        rep.problems += [f"N={n} (after retry): {p}" for p in d1_problems(kb)]
        kb.close()
        if left := temp_files(d):
            rep.problems.append(f"N={n}: temp files left: {left}")
        with KnowledgeBase.open(d, emb) as re_kb:
            if re_kb.rebuilt is not None:
                rep.problems.append(f"N={n}: the retry left files needing repair: {re_kb.rebuilt}")
            if re_kb.store.pending_graph():
                rep.problems.append(f"N={n}: graph journal not cleared after the retry")
            if doc_states(re_kb) != after:
                rep.problems.append(f"N={n}: re-open after the retry differs from a clean run")
        shutil.rmtree(d)
        if rep.sweep_done(n, fired, msgs):
            break
    else:
        rep.problems.append(f"still meeting the fault at N={rep.last_n}")
    rep.seconds = time.perf_counter() - t0
    print(rep.line())
    return rep


def test_knowledge_ingest_survives_every_io_error(
    fault: FaultVFS, emb: Any, tmp_path: Path
) -> None:
    """PR tier: the ingest path, SQLITE_IOERR once, every N at the start and the end of the
    operation and every 4th N between (the full sweep is in the slow test below)."""
    sc = KB_SCENARIOS["ingest"]
    run_kb_loop(sc, "once", "ioerr", fault, emb, tmp_path, stride=4).assert_clean()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ioerr", "full"])
@pytest.mark.parametrize("mode", ["once", "persistent"])
@pytest.mark.parametrize("op", ["ingest", "forget", "sync"])
def test_knowledge_operations_survive_every_io_error(
    op: str, mode: str, kind: str, fault: FaultVFS, emb: Any, tmp_path: Path
) -> None:
    """NIGHTLY: ingest, forget and sync, both modes, SQLITE_IOERR and SQLITE_FULL, every N."""
    run_kb_loop(KB_SCENARIOS[op], mode, kind, fault, emb, tmp_path).assert_clean()


# -- the file loops (D2) -------------------------------------------------------------------
def sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def sweep(
    rep: LoopReport,
    faults: _osfaults.OsFaults,
    mode: str,
    kind: str,
    one: Callable[[int], list[str]],
) -> LoopReport:
    """N = 1, 2, ... until ``one(n)`` (which arms the fault at n and returns the errors the
    caller saw) no longer meets the fault."""
    t0 = time.perf_counter()
    for n in range(1, N_CAP + 1):
        rep.last_n = n
        msgs = one(n)
        fired = faults.fired
        if msgs:
            rep.failed_at.append(n)
        elif fired:
            rep.silent_at.append(n)
        if rep.sweep_done(n, fired, msgs):
            break
    else:
        rep.problems.append(f"still meeting the fault at N={rep.last_n}")
    rep.seconds = time.perf_counter() - t0
    print(rep.line())
    return rep


@contextlib.contextmanager
def armed(faults: _osfaults.OsFaults, n: int, mode: str, kind: str) -> Iterator[None]:
    faults.arm(n, mode=mode, kind=kind)
    try:
        yield
    finally:
        faults.disarm()


def _judge(exc: BaseException, types: tuple[type, ...], rep: LoopReport, n: int) -> str:
    msg = str(exc)
    if not isinstance(exc, types):
        rep.problems.append(f"N={n}: {type(exc).__name__} reached the caller: {msg}")
    if (p := one_line_problem(msg)) is not None:
        rep.problems.append(f"N={n}: {p}")
    rep.error(msg)
    return msg


def run_kb_files_loop(
    mode: str, kind: str, emb: Any, tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> LoopReport:
    """The index and graph checkpoint after an ingest (index file + graph JSON)."""
    rep = LoopReport(f"D2 index+graph save/{mode}/{kind}")
    src, pristine, root = tmp / "src", tmp / "pristine", tmp / "faulted"
    write_files(src / "base", {**OLD, "faq.csv": FAQ, "facts.tsv": TRIPLES})
    write_files(src / "extra", {**NOTES, "more.tsv": "Lyon\tpart of\tAuvergne-Rhone-Alpes\n"})
    with KnowledgeBase.open(pristine, emb) as kb:
        assert not kb.ingest([src / "base"]).errors
    root.mkdir()
    faults = _osfaults.install(monkeypatch, root)
    old = {"index": sha(pristine / "vectors.faiss"), "graph": sha(pristine / "graph.json")}

    def fresh(tag: str) -> Path:
        d = root / tag
        shutil.copytree(pristine, d)
        return d

    d = fresh("reference")
    with KnowledgeBase.open(d, emb) as kb:
        with armed(faults, 10**9, "once", "eio"):
            assert not kb.ingest([src / "extra"]).errors
        rep.calls = dict(faults.calls)
        after = doc_states(kb)
    new = {"index": sha(d / "vectors.faiss"), "graph": sha(d / "graph.json")}
    assert new != old
    shutil.rmtree(d)

    def generation_problems(d: Path, kb: KnowledgeBase, n: int, allow_old: bool) -> list[str]:
        out = []
        cur = {"index": sha(d / "vectors.faiss"), "graph": sha(d / "graph.json")}
        for what in ("index", "graph"):
            ok = {new[what], old[what]} if allow_old else {new[what]}
            if cur[what] not in ok:
                out.append(f"N={n}: {what} file is neither the old nor the new generation")
        meta = kb.store.get_meta("index") or {}
        if cur["index"] != meta.get("sha256"):
            out.append(f"N={n}: vectors.faiss does not match the sha256 recorded in SQLite")
        if left := temp_files(d):
            out.append(f"N={n}: temp files left: {left}")
        return out

    def one(n: int) -> list[str]:
        d = fresh(f"n{n}")
        kb = KnowledgeBase.open(d, emb)
        with armed(faults, n, mode, kind):
            report = kb.ingest([src / "extra"])
        msgs = [m for _, m in report.errors]
        for m in msgs:
            if (p := one_line_problem(m)) is not None:
                rep.problems.append(f"N={n}: {p}")
            rep.error(m)
        rep.problems += generation_problems(d, kb, n, allow_old=True)
        snap = snapshot(d, tmp / "snap" / f"n{n}")
        with KnowledgeBase.open(snap, emb) as re_kb:
            rep.repaired_on_open += re_kb.rebuilt is not None
            rep.problems += [f"N={n} (re-open): {p}" for p in d1_problems(re_kb)]
            if doc_states(re_kb) != after:
                rep.problems.append(f"N={n}: re-open does not hold every document")
        shutil.rmtree(snap)
        retry = kb.ingest([src / "extra"])  # the same object, fault gone
        if retry.errors:
            rep.problems.append(f"N={n}: retry failed: {retry.errors}")
        rep.problems += [f"N={n} (after retry): {p}" for p in d1_problems(kb)]
        rep.problems += generation_problems(d, kb, n, allow_old=False)
        kb.close()
        shutil.rmtree(d)
        return msgs

    return sweep(rep, faults, mode, kind, one)


def run_checkpoint_loop(
    mode: str, kind: str, tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> LoopReport:
    """An LM checkpoint as ``lm.train`` writes it: weights, tokenizer, optimizer state."""
    import torch

    from lm.checkpoint import (
        read_manifest,
        resolve_model_dir,
        save_training_state,
        sha256_file,
        validate_dir,
        write_checkpoint_dir,
    )
    from lm.errors import CheckpointError
    from lm.model import build_config, build_model, get_preset
    from lm.tokenizer import build_char_tokenizer

    rep = LoopReport(f"D2 LM checkpoint/{mode}/{kind}")
    torch.manual_seed(0)
    text = "the quick brown fox jumps over the lazy dog. " * 4
    tok = build_char_tokenizer(text)
    model = build_model(build_config(get_preset("tiny"), len(tok)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.tensor([tok.encode(text)[:64]])

    def step() -> None:
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()

    def fill(tmp_dir: Path) -> None:
        model.save_pretrained(str(tmp_dir), safe_serialization=True)
        tok.save_pretrained(str(tmp_dir))
        save_training_state(tmp_dir, opt, {"step": 1}, {"torch": torch.get_rng_state()})

    pristine, root = tmp / "pristine", tmp / "faulted"
    step()
    write_checkpoint_dir(pristine / "last", fill, {"kind": "lm", "step": 1})
    step()  # the new generation: different weights and optimizer state
    root.mkdir()
    faults = _osfaults.install(monkeypatch, root)
    old = read_manifest(pristine / "last")

    def fresh(tag: str) -> Path:
        shutil.copytree(pristine, root / tag)
        return root / tag / "last"

    target = fresh("reference")
    with armed(faults, 10**9, "once", "eio"):
        write_checkpoint_dir(target, fill, {"kind": "lm", "step": 2})
    rep.calls = dict(faults.calls)
    new = read_manifest(target)
    assert new["files"] != old["files"]
    shutil.rmtree(target.parent)

    def generation(target: Path, n: int) -> dict | None:
        try:  # what the loader does: recover <dir>.old-* if a rename was cut short
            manifest = validate_dir(resolve_model_dir(target))
        except CheckpointError as exc:
            rep.problems.append(f"N={n}: no loadable checkpoint: {exc}")
            return None
        for name, meta in manifest.get("files", {}).items():
            if sha256_file(target / name) != meta["sha256"]:
                rep.problems.append(f"N={n}: {name} does not match its manifest sha256")
        if manifest not in (old, new):
            rep.problems.append(f"N={n}: the checkpoint is neither the old nor the new one")
        left = sorted(p.name for p in target.parent.iterdir() if p.name != "last")
        if left:
            rep.problems.append(f"N={n}: left beside the checkpoint: {left}")
        return manifest

    def one(n: int) -> list[str]:
        target = fresh(f"n{n}")
        msgs = []
        with armed(faults, n, mode, kind):
            try:
                write_checkpoint_dir(target, fill, {"kind": "lm", "step": 2})
            except Exception as exc:  # judged below
                msgs.append(_judge(exc, (CheckpointError,), rep, n))
        got = generation(target, n)
        if msgs and got == new and "intact" in msgs[0]:
            rep.problems.append(f"N={n}: says the previous checkpoint is intact, but replaced it")
        if not msgs and got != new and faults.fired:
            rep.problems.append(f"N={n}: no error, yet the new checkpoint is not in place")
        write_checkpoint_dir(target, fill, {"kind": "lm", "step": 2})  # the retry
        if generation(target, n) != new:
            rep.problems.append(f"N={n}: the retry did not write the new checkpoint")
        shutil.rmtree(target.parent)
        return msgs

    return sweep(rep, faults, mode, kind, one)


ROUTER_A = {
    "lost_card": ["my card is lost", "i lost my card", "i can't find my card", "card missing"],
    "exchange": ["what is the exchange rate", "rate for euros", "dollar to pound rate"],
    "top_up": ["top up failed", "my top-up did not work", "could not add money"],
}


def run_router_loop(
    mode: str, kind: str, emb: Any, tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> LoopReport:
    """The router head (safetensors weights + JSON) written by ``IntentRouter.train``."""
    from assistant.errors import RouterError
    from assistant.router import Example, IntentRouter, fingerprint

    rep = LoopReport(f"D2 router head save/{mode}/{kind}")
    ex_a = [Example(i, i, t) for i, ts in ROUTER_A.items() for t in ts]
    ex_b = [
        *ex_a,
        Example("top_up", "top_up", "adding money failed"),
        Example("exchange", "exchange", "how many yen for a euro"),
    ]
    pristine, root = tmp / "pristine", tmp / "faulted"
    hp = {"cv_folds": 0}  # one fit, no calibration folds: the save path is what is tested
    IntentRouter(emb, pristine / "router", head_params=hp).train(ex_a)
    root.mkdir()
    faults = _osfaults.install(monkeypatch, root)
    params = IntentRouter(emb, None, head_params=hp)._fp_params()
    fp = {"old": fingerprint(ex_a, params), "new": fingerprint(ex_b, params)}
    size = {"old": len(ex_a), "new": len(ex_b)}

    def fresh(tag: str) -> Path:
        shutil.copytree(pristine, root / tag)
        return root / tag / "router"

    d = fresh("reference")
    with armed(faults, 10**9, "once", "eio"):
        IntentRouter(emb, d, head_params=hp).train(ex_b)
    rep.calls = dict(faults.calls)
    shutil.rmtree(d.parent)

    def loaded(d: Path, n: int) -> str:
        r = IntentRouter(emb, d, head_params=hp)
        if not r._load(None):
            return "refused"
        for gen in ("old", "new"):
            if r.fingerprint == fp[gen] and len(r.example_vecs) == size[gen] == len(
                r.example_intents
            ):
                return gen
        rep.problems.append(f"N={n}: the router loaded a mix of two generations")
        return "mixed"

    def one(n: int) -> list[str]:
        d = fresh(f"n{n}")
        router = IntentRouter(emb, d, head_params=hp)
        router.ensure_trained(ex_a)  # loads the stored (old) router
        msgs = []
        with armed(faults, n, mode, kind):
            try:
                router.train(ex_b)
            except Exception as exc:  # judged below
                msgs.append(_judge(exc, (RouterError,), rep, n))
        if left := temp_files(d):
            rep.problems.append(f"N={n}: temp files left: {left}")
        gen = loaded(d, n)
        if gen == "refused":
            rep.error("mixed generation refused on load")
        if not msgs and faults.fired and gen != "new":
            rep.problems.append(f"N={n}: no error, yet the new router is not on disk")
        router.train(ex_b)  # the retry, same object
        if loaded(d, n) != "new":
            rep.problems.append(f"N={n}: the retry did not store the new router")
        shutil.rmtree(d.parent)
        return msgs

    return sweep(rep, faults, mode, kind, one)


def test_index_and_graph_save_survive_every_os_error(
    emb: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PR tier: the index + graph checkpoint after an ingest, EIO once at every N."""
    run_kb_files_loop("once", "eio", emb, tmp_path, monkeypatch).assert_clean()


def test_lm_checkpoint_save_survives_every_os_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PR tier: an LM checkpoint (weights, tokenizer, optimizer state), EIO once at every N."""
    run_checkpoint_loop("once", "eio", tmp_path, monkeypatch).assert_clean()


def test_router_save_survives_every_os_error(
    emb: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PR tier: the router head's weights and JSON, EIO once at every N."""
    run_router_loop("once", "eio", emb, tmp_path, monkeypatch).assert_clean()


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "kind"), [("persistent", "eio"), ("once", "enospc"),
                                            ("persistent", "enospc")])  # fmt: skip
@pytest.mark.parametrize("target", ["index", "checkpoint", "router"])
def test_file_writes_survive_every_os_error(
    target: str, mode: str, kind: str, emb: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NIGHTLY: the other modes and kinds of the three file loops."""
    if target == "index":
        rep = run_kb_files_loop(mode, kind, emb, tmp_path, monkeypatch)
    elif target == "checkpoint":
        rep = run_checkpoint_loop(mode, kind, tmp_path, monkeypatch)
    else:
        rep = run_router_loop(mode, kind, emb, tmp_path, monkeypatch)
    rep.assert_clean()
