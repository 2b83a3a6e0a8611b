"""The knowledge base: ingest files, search passages, answer questions with citations.

Layout of ``store_dir``::

    knowledge.db     SQLite: documents, chunks (text, offsets, vector BLOBs), bookkeeping
    vectors.faiss    FAISS index of the chunk vectors (derived; rebuilt when it disagrees)
    graph.json       knowledge graph (derived from documents and triples files)

Each document lands in SQLite in one transaction; the index and graph files follow with
atomic replaces, and :meth:`KnowledgeBase.open` checks them against SQLite and repairs
them, so a document is wholly present or absent even after ``kill -9`` mid-ingest.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from knowledge.documents import (
    MAX_BYTES,
    LoadedDocument,
    chunk_document,
    load_document,
    read_confined,
)
from knowledge.errors import IngestError, KnowledgeError, QueryError, StoreError
from knowledge.index import HNSW_THRESHOLD, VectorIndex, fsync_dir, resolve_kind
from knowledge.lexical import BM25
from knowledge.store import ChunkRow, Store

LOG = logging.getLogger(__name__)
MAX_QUESTION_CHARS = 4_000
ProgressFn = Callable[[int, int, dict], None]


@dataclass
class Citation:
    """Where an answer came from; same fields as ``skills.base.Source``."""

    kind: str  # "document" | "faq" | "graph"
    title: str
    ref: str = ""
    span: tuple[int, int] | None = None
    page: int | None = None
    snippet: str = ""
    score: float = 0.0
    path: list[str] = field(default_factory=list)


@dataclass
class Passage:
    text: str
    citation: Citation
    score: float
    chunk_id: int


@dataclass
class Answer:
    text: str
    citations: list[Citation]
    confidence: float
    found: bool
    kind: str  # "faq" | "passage" | "graph" | "none"
    data: dict = field(default_factory=dict)

    def follow_up(self, question: str, previous: dict | None = None) -> dict:
        """The ``context`` the next question needs to resolve "it" or "and the Brio grinder?".

        The entities this answer was about and the question as resolved ("Lumo Kettle the
        warranty"); an answer that found nothing leaves the earlier context in place.
        """
        previous = previous or {}
        if not self.found:
            return {k: previous[k] for k in ("entities", "last_question") if k in previous}
        return {
            "entities": list(self.data.get("entities", [])) or list(previous.get("entities", [])),
            "last_question": str(self.data.get("query") or question),
        }


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    chunks: int = 0
    seconds: float = 0.0


class KnowledgeBase:
    """Documents, FAQ and graph of one bot, searchable and answerable.

    Use :meth:`open`; searches are safe from many threads, ingestion is serialised.
    """

    def __init__(
        self,
        store_dir: Path,
        embedder: Any,
        *,
        index_kind: str = "auto",
        max_bytes: int = MAX_BYTES,
        hnsw_threshold: int = HNSW_THRESHOLD,
        ef_search: int | None = None,
    ) -> None:
        from knowledge.fusion import DEFAULT_THRESHOLDS, DEFAULT_WEIGHTS

        resolve_kind(index_kind, 0)  # validates the name
        self.store_dir = Path(store_dir)
        self.embedder = embedder
        self.dim = int(getattr(embedder, "dim", 384))
        self.index_kind = index_kind
        self.max_bytes = max_bytes
        self.hnsw_threshold = hnsw_threshold
        self.ef_search = ef_search
        self.weights = DEFAULT_WEIGHTS
        self.thresholds = DEFAULT_THRESHOLDS
        self.rebuilt: str | None = None  # why the index was rebuilt on open, if it was
        self._write = threading.Lock()
        self._bm25: BM25 | None = None
        self._bm25_lock = threading.Lock()
        self._graph: Any = None
        self._reasoner: Any = None
        self._graph_lock = threading.RLock()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.store_dir / "knowledge.db")
        self.index_path = self.store_dir / "vectors.faiss"
        self.graph_path = self.store_dir / "graph.json"
        self.index = self._open_index()
        self._recover_graph()

    @classmethod
    def open(
        cls, store_dir: Path, embedder: Any, *, index_kind: str = "auto", **kwargs: Any
    ) -> KnowledgeBase:
        """Open (or create) the store in ``store_dir``, repairing a stale index or graph."""
        return cls(Path(store_dir), embedder, index_kind=index_kind, **kwargs)

    # -- index lifecycle ---------------------------------------------------------------
    def _open_index(self) -> VectorIndex:
        tmp = self.index_path.with_name(self.index_path.name + ".tmp")
        if tmp.exists():
            tmp.unlink()  # a write that never got recorded: the old generation still stands
        count, checksum = self.store.id_checksum()
        want = resolve_kind(self.index_kind, count, self.hnsw_threshold)
        meta = self.store.get_meta("index")
        reason = None
        if meta is None:
            reason = None if count == 0 else "no index recorded"
        else:
            try:
                index = VectorIndex.load(self.index_path, meta["sha256"], ef_search=self.ef_search)
                if index.id_checksum() != (count, checksum):
                    reason = f"index holds {index.ntotal} vectors, store {count}"
                elif index.kind != want:
                    reason = f"index kind {index.kind} -> {want}"
                else:
                    return index
            except StoreError as exc:
                reason = str(exc)
        if reason is None:
            return VectorIndex(self.dim, want, ef_search=self.ef_search)
        LOG.warning("rebuilding the vector index: %s", reason)
        self.rebuilt = reason
        return self._rebuild(want)

    def _rebuild(self, kind: str) -> VectorIndex:
        index = VectorIndex(self.dim, kind, ef_search=self.ef_search)
        for ids, vecs in self.store.iter_vectors():
            index.add(ids, vecs)
        self._save_index(index)
        return index

    def _save_index(self, index: VectorIndex | None = None) -> None:
        """Temp file, record its sha256 in SQLite, rename. A failure removes the temp file and
        puts the old record back, so the file on disk always matches what SQLite names."""
        index = index or self.index
        tmp, sha = index.write_temp(self.index_path)
        count, checksum = index.id_checksum()
        meta = {"sha256": sha, "count": count, "checksum": checksum, "kind": index.kind}
        try:
            old = self.store.get_meta("index")
            self.store.set_meta("index", meta)
            try:
                os.replace(tmp, self.index_path)
            except OSError as exc:
                if old is not None:  # best effort; a mismatch is still caught on open
                    with contextlib.suppress(KnowledgeError):
                        self.store.set_meta("index", old)
                raise StoreError(
                    f"{self.index_path}: cannot save the index ({exc.strerror or exc})"
                ) from None
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(self.store_dir)

    def _checkpoint(self) -> None:
        """Persist index and graph after SQLite commits (called under the write lock)."""
        n = self.index.ntotal
        want = resolve_kind(self.index_kind, n, self.hnsw_threshold)
        try:
            if self.index.needs_rebuild or want != self.index.kind:
                self.index = self._rebuild(want)
            else:
                self._save_index()
            self._save_graph()
        except OSError as exc:  # disk full: SQLite holds everything; the next save catches up
            raise StoreError(
                f"{self.store_dir}: cannot save the index or graph ({exc.strerror or exc})"
            ) from None

    # -- graph -------------------------------------------------------------------------
    def _graph_module(self):
        try:
            from knowledge import graph
        except ImportError:
            return None
        return graph if hasattr(graph, "KnowledgeGraph") else None

    @property
    def graph(self) -> Any:
        """The :class:`knowledge.graph.KnowledgeGraph`, or None where it is not installed."""
        return self._graph

    def _recover_graph(self) -> None:
        # A kill between atomic_write's temp file and its rename leaves ".graph.json.*.tmp":
        # the old graph.json still stands (or is rebuilt below), so the temp file is litter.
        for tmp in self.store_dir.glob(f".{self.graph_path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
        mod = self._graph_module()
        if mod is None:
            return
        try:
            self._graph = mod.KnowledgeGraph.load(self.graph_path)
        except Exception as exc:
            LOG.warning("graph unreadable, rebuilding it from the store: %s", exc)
            self._graph = mod.KnowledgeGraph()
            pending = self.store.graph_documents()
        else:
            pending = self.store.pending_graph()
            if not self.graph_path.exists():
                pending = sorted(set(pending) | set(self.store.graph_documents()))
        if pending:
            for key in pending:
                self._graph.remove_document(key)
                self._apply_graph(key)
            self._save_graph()

    def _apply_graph(self, key: str) -> None:
        payload = self.store.graph_payload(key)
        if payload is None or self._graph is None:
            return
        kind, data = payload
        if kind == "triples":
            self._graph.add_triples([tuple(t) for t in json.loads(data)], doc_id=key)
        elif data:
            self._graph.add_document(key, self.store.document_text(key) or "")

    def _save_graph(self) -> None:
        if self._graph is None:
            return
        pending = self.store.pending_graph()
        with self._graph_lock:
            self._graph.save(self.graph_path)
            self._reasoner = None  # the reasoner caches entity embeddings of the old graph
        self.store.clear_pending_graph(pending)

    def reasoner(self) -> Any:
        """The graph reasoner (``knowledge.kgqa.GraphReasoner``) or None."""
        if self._graph is None:
            return None
        with self._graph_lock:
            if self._reasoner is None:
                try:
                    from knowledge.kgqa import GraphReasoner
                except ImportError:
                    return None
                model_dir = self.store_dir.parent.parent / "models" / "gnn"
                self._reasoner = GraphReasoner(
                    self._graph, self.embedder, model_dir if model_dir.is_dir() else None
                )
            return self._reasoner

    # -- lexical -----------------------------------------------------------------------
    def _lexical(self) -> BM25:
        with self._bm25_lock:
            if self._bm25 is None:
                bm = BM25()
                bm.add(self.store.all_texts())
                self._bm25 = bm
            return self._bm25

    # -- ingestion ---------------------------------------------------------------------
    def ingest(
        self,
        paths: Sequence[str | Path],
        *,
        roots: Sequence[Path] | None = None,
        sync: bool = False,
        show_progress: bool = False,
        on_progress: ProgressFn | None = None,
    ) -> IngestReport:
        """Ingest files and folders; unchanged files are skipped by content hash.

        Args:
            paths: files or folders (folders recursively).
            roots: folders every file must resolve into; default: the given paths.
            sync: also drop stored documents under ``roots`` whose files are gone.
            show_progress: draw a tqdm bar (rate and ETA) on stderr.
            on_progress: ``(done, total, info)`` after each file, for the TUI.
        """
        from knowledge.ingest import run_ingest

        if isinstance(paths, (str, Path)):
            paths = [paths]
        with self._write:
            return run_ingest(self, list(paths), roots, sync, show_progress, on_progress)

    def _store_document(self, path: Path, data: bytes, doc: LoadedDocument) -> int:
        """Embed and commit one parsed document; update index, BM25 and graph in memory."""
        sha = hashlib.sha256(data).hexdigest()
        rows: list[ChunkRow] = []
        graph_payload = ""
        if doc.kind == "faq":
            qv = self._encode([f.question for f in doc.faq])
            av = self._encode([f.answer for f in doc.faq])
            for f, q, a in zip(doc.faq, qv, av, strict=True):
                text = f"{f.question}\n{f.answer}"
                rows.append(ChunkRow("faq", text, q, question=f.question, answer=f.answer, avec=a))
            text = "\n\n".join(f"Q: {f.question}\nA: {f.answer}" for f in doc.faq)
        elif doc.kind == "triples":
            text = "\n".join(" ".join(t) for t in doc.triples)
            graph_payload = json.dumps(doc.triples, ensure_ascii=False)
        else:
            chunks = chunk_document(doc)
            vecs = self._encode([c.text for c in chunks])
            rows = [
                ChunkRow("passage", c.text, v, start=c.start, end=c.end, page=c.page)
                for c, v in zip(chunks, vecs, strict=True)
            ]
            text, graph_payload = doc.text, "text"
        key = str(path)
        ids, removed = self.store.put_document(
            path=key, name=doc.name, kind=doc.kind, sha256=sha, size=len(data), text=text,
            graph_payload=graph_payload, chunks=rows,
        )  # fmt: skip
        self._apply_memory(removed, ids, rows)
        self._graph_update(key, present=bool(graph_payload))
        return len(rows)

    def _apply_memory(self, removed: list[int], ids: list[int], rows: list[ChunkRow]) -> None:
        self.index.remove(removed)
        if ids:
            self.index.add(np.array(ids, np.int64), np.stack([r.vec for r in rows]))
        if self._bm25 is not None:
            self._bm25.remove(removed)
            self._bm25.add((i, r.text) for i, r in zip(ids, rows, strict=True))

    def _graph_update(self, key: str, present: bool) -> None:
        if self._graph is None:
            return
        with self._graph_lock:
            try:
                self._graph.remove_document(key)
                if present:
                    self._apply_graph(key)
            except Exception as exc:  # keep the document; the journal retries on next open
                LOG.warning("graph update failed for %s: %s", key, exc)
            self._reasoner = None

    def _read(self, path: Path, roots: Sequence[Path]) -> bytes:
        return read_confined(path, roots, self.max_bytes)

    def _parse(self, path: Path, data: bytes) -> LoadedDocument:
        return load_document(path, data)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        try:
            vecs = self.embedder.encode(list(texts))
        except Exception as exc:
            raise KnowledgeError(f"embedding failed: {exc}") from exc
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def forget(self, path: str | Path) -> bool:
        """Drop a document (or every document under a folder); True if anything went."""
        raw = str(path)
        if "\x00" in raw:
            raise IngestError(f"{raw!r}: path contains a NUL byte")
        target = os.path.realpath(os.path.expanduser(raw))
        keys = [
            p for p in self.store.paths()
            if p == target or p.startswith(target.rstrip(os.sep) + os.sep)
        ]  # fmt: skip
        if not keys:
            keys = [d["path"] for d in self.store.documents() if d["name"] == raw]
        with self._write:
            for key in keys:
                self._remove_key(key)
            # a pending graph journal: the last checkpoint failed (disk full); retry it now
            if keys or self.store.pending_graph():
                self._checkpoint()
        return bool(keys)

    def _remove_key(self, key: str) -> bool:
        removed = self.store.delete_document(key)
        if removed is None:
            return False
        self._apply_memory(removed, [], [])
        self._graph_update(key, present=False)
        return True

    # -- retrieval ---------------------------------------------------------------------
    def _check_query(self, text: str) -> str:
        if not isinstance(text, str):
            raise QueryError("the question must be text")
        text = text.encode("utf-8", "replace").decode("utf-8").replace("\x00", " ").strip()
        if not text:
            raise QueryError("the question is empty")
        if len(text) > MAX_QUESTION_CHARS:
            raise QueryError(f"the question is too long ({len(text)} > {MAX_QUESTION_CHARS} chars)")
        return text

    def candidates(self, query: str, qvec: np.ndarray, k: int = 20) -> list[dict]:
        """Dense top-``k`` plus BM25 top-``k``, each with cos, bm25 and fused ``score``."""
        from knowledge.fusion import fuse_faq, fuse_passage

        scores, ids = self.index.search(qvec[None, :], k)
        dense = {int(i): float(s) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0}
        bm25 = self._lexical()
        lex = dict(bm25.search(query, k))
        lex.update(bm25.score(query, dense))
        meta = self.store.chunks(sorted(set(dense) | set(lex)))
        missing = [i for i in meta if i not in dense]
        if missing:
            vecs = self._vectors(missing)
            dense.update({i: float(v @ qvec) for i, v in vecs.items()})
        # FAQ rows sharing one question are one entry with several answers: pool their answer
        # and lexical evidence so the entry's rows rank together (and tie-break as a group).
        group: dict[str, tuple[float, float]] = {}
        for cid, m in meta.items():
            if m["kind"] == "faq":
                acos = -1.0 if m["avec"] is None else float(m["avec"] @ qvec)
                a0, l0 = group.get(m["question"], (-1.0, 0.0))
                group[m["question"]] = (max(a0, acos), max(l0, lex.get(cid, 0.0)))
        out = []
        for cid, m in meta.items():
            cos, lx = dense.get(cid, 0.0), lex.get(cid, 0.0)
            if m["kind"] == "faq":
                acos, lx = group[m["question"]]
                score = fuse_faq(cos, acos if acos > -1.0 else None, lx, self.weights)
            else:
                score = fuse_passage(cos, lx, self.weights)
            out.append({**m, "id": cid, "cos": cos, "bm25": lx, "score": score})
        out.sort(key=lambda c: c["score"], reverse=True)
        return out

    def _vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        rows = self.store._query(
            f"SELECT id, vec FROM chunks WHERE id IN ({','.join('?' * len(ids))})", list(ids)
        )
        return {int(r[0]): np.frombuffer(r[1], dtype=np.float32) for r in rows}

    def search(self, query: str, k: int = 5) -> list[Passage]:
        """The ``k`` best passages and FAQ items for ``query``, best first."""
        query = self._check_query(query)
        if self.index.ntotal == 0:
            return []
        qvec = self._encode([query])[0]
        return [_passage(c) for c in self.candidates(query, qvec, max(k * 3, 20))[:k]]

    def answer(self, question: str, *, context: dict | None = None) -> Answer:
        """Answer from the FAQ, the graph or a passage, with citations; weak -> found=False."""
        from knowledge.answering import answer_question

        return answer_question(self, self._check_query(question), context or {})

    # -- browsing ----------------------------------------------------------------------
    def documents(self) -> list[dict]:
        """Ingested documents; ``title`` is the title line the text opens with, or ""."""
        heads = self.store.document_heads()
        return [
            {
                **{k: d[k] for k in ("name", "path", "kind", "chunks", "ingested_at")},
                "title": _title_line(heads.get(d["path"], "")),
            }
            for d in self.store.documents()
        ]

    def document_text(self, name: str) -> tuple[str, str] | None:
        """(file name, full text) of the document best matching ``name`` ("refund policy")."""
        docs = self.documents()
        if not docs or not name or not name.strip():
            return None
        want = _norm_title(name)
        best, best_score = None, 0.0
        for d in docs:
            title = _norm_title(d["name"])
            if d["name"] == name or d["path"] == name or title == want:
                best, best_score = d, 2.0
                break
            # a document is also named by its own title line: "summarize the greenhouse
            # notes" means garden.md, whose first line is "# Greenhouse notes"
            for t in (title, _norm_title(d["title"])):
                if not t:
                    continue
                score = 1.5 if t == want else difflib.SequenceMatcher(None, want, t).ratio()
                if want and (want in t or t in want):
                    score = max(score, 0.9)
                if score > best_score:
                    best, best_score = d, score
        if best is None or best_score < 0.6:
            return None
        text = self.store.document_text(best["path"])
        return (best["name"], text) if text is not None else None

    def stats(self) -> dict[str, int]:
        counts = self.store.counts()
        g = {"entities": 0, "facts": 0}
        if self._graph is not None:
            with self._graph_lock:
                g.update({k: int(v) for k, v in self._graph.stats().items() if k in g})
        return {**counts, **g, "vectors": self.index.ntotal}

    def close(self) -> None:
        with self._write:
            self.store.close()

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _title_line(head: str) -> str:
    """The title line at the top of a document's text ("# Greenhouse notes", an HTML page's
    title), or "" when its first line reads as prose rather than a title."""
    line = next((ln.strip() for ln in head.splitlines() if ln.strip()), "")
    line = line.lstrip("#").strip()
    if not line or len(line.split()) > _TITLE_WORDS or line.endswith((".", "?", "!", ":")):
        return ""
    return line


#: A first line longer than this is a sentence, not a title.
_TITLE_WORDS = 10


def _norm_title(name: str) -> str:
    stem = re.sub(r"\.(md|markdown|txt|html?|pdf|csv|jsonl?|tsv)$", "", name.strip().lower())
    return " ".join(re.findall(r"[^\W_]+", stem))


def _passage(c: dict) -> Passage:
    if c["kind"] == "faq":
        cit = Citation("faq", c["question"], c["path"], snippet=c["answer"][:300], score=c["score"])
        return Passage(c["answer"], cit, c["score"], c["id"])
    span = (c["start"], c["end"]) if c["start"] is not None else None
    cit = Citation("document", c["name"], c["path"], span, c["page"], c["text"][:300], c["score"])
    return Passage(c["text"], cit, c["score"], c["id"])


__all__ = ["Answer", "Citation", "IngestReport", "KnowledgeBase", "Passage"]
