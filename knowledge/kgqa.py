"""Question answering over the knowledge graph.

:class:`GraphReasoner` links the entities a question names, takes the k-hop subgraph around
the best one and ranks its entities as answers, each with the graph path that explains it and
the documents behind that path.

- With a trained model (``llmos train gnn`` writes ``models/gnn/``) it runs
  :class:`knowledge.gnn.KGQANet`: question-conditioned relation attention per hop plus GNN
  message passing over the subgraph.
- Without one it answers zero-shot: every relation path of up to ``max_hops`` hops from the
  topic entity is read as a phrase ("made by located in") and compared with the question by
  MiniLM cosine; the end entities of the best paths are the answers.

The subgraph is capped (neighbours per node, nodes per question) so a hub entity cannot make
a question slow or unbounded.
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from knowledge.errors import KnowledgeError, QueryError
from knowledge.graph import KnowledgeGraph, relation_phrase
from knowledge.kgqa_data import mask_question

MAX_QUESTION_CHARS = 2000
MAX_PATHS = 20_000
MAX_PATH_TYPES = 96
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


@dataclass
class GraphAnswer:
    """An answer entity, its score, the path from the question's entity, and its sources."""

    entity: str
    score: float
    path: list[str] = field(default_factory=list)  # ["Lumo Kettle", "-made_by->", "Juniper Labs"]
    doc_ids: list[str] = field(default_factory=list)


class CompiledGraph:
    """Integer arrays for fast traversal: node ids, and a CSR of typed message edges.

    Edge type ``2k`` carries a message along fact ``u -rel_k-> v`` from ``u`` to ``v``;
    type ``2k+1`` carries it backwards (``v`` to ``u``), so questions can walk either way.
    Facts whose relation is not in ``relations`` are left out.
    """

    def __init__(self, kg: KnowledgeGraph, relations: list[str] | None = None) -> None:
        self.kg = kg
        self.version = kg._version
        self.nodes: list[str] = list(kg.g.nodes)
        self.index = {n: i for i, n in enumerate(self.nodes)}
        self.relations = relations if relations is not None else kg.relations()
        rel_ix = {r: i for i, r in enumerate(self.relations)}
        src, dst, typ = [], [], []
        for u, v, k in kg.g.edges(keys=True):
            r = rel_ix.get(k)
            if r is None:
                continue
            a, b = self.index[u], self.index[v]
            src += [a, b]
            dst += [b, a]
            typ += [2 * r, 2 * r + 1]
        src_a = np.asarray(src, dtype=np.int64)
        order = np.argsort(src_a, kind="stable")
        self.dst = np.asarray(dst, dtype=np.int64)[order]
        self.typ = np.asarray(typ, dtype=np.int64)[order]
        self.indptr = np.zeros(len(self.nodes) + 1, dtype=np.int64)
        np.add.at(self.indptr, src_a[order] + 1, 1)
        self.indptr = np.cumsum(self.indptr)
        self._scratch_lock = threading.Lock()
        self._local: np.ndarray | None = None
        self._done: np.ndarray | None = None

    def type_label(self, t: int) -> str:
        rel = self.relations[t // 2]
        return f"-{rel}->" if t % 2 == 0 else f"<-{rel}-"

    def subgraph(
        self, topics: list[int], hops: int, max_neighbors: int = 64, max_nodes: int = 2000,
        seed: int = 0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        """k-hop neighbourhood: ``(global node ids, local src, local dst, edge type)``.

        Neighbours beyond ``max_neighbors`` per node are sampled (fixed seed); no new nodes
        are added past ``max_nodes``. Membership tests use a node-indexed scratch array
        (touched entries are reset afterwards), not set operations on sorted copies.
        """
        rng = np.random.default_rng(seed)
        nodes = np.asarray(list(dict.fromkeys(int(t) for t in topics)), dtype=np.int64)
        if nodes.size and (nodes.min() < 0 or nodes.max() >= len(self.nodes)):
            raise ValueError(f"topic node index out of range 0..{len(self.nodes) - 1}")
        local, done, held = self._scratch()
        parts: list[np.ndarray] = [nodes]
        expanded: list[np.ndarray] = []
        es, ed, et = [], [], []
        try:
            local[nodes] = np.arange(nodes.size)
            frontier, n = nodes, nodes.size
            for _ in range(hops):
                frontier = frontier[~done[frontier]]
                if frontier.size == 0:
                    break
                starts = self.indptr[frontier]
                deg = self.indptr[frontier + 1] - starts
                total = int(deg.sum())
                if total == 0:
                    break
                offs = np.repeat(np.cumsum(deg) - deg, deg)
                grp = np.repeat(np.arange(frontier.size), deg)
                pos = np.arange(total) - offs + np.repeat(starts, deg)
                if int(deg.max()) > max_neighbors:  # sample each big neighbourhood to the cap
                    perm = np.lexsort((rng.random(total), grp))
                    keep = (np.arange(total) - offs) < max_neighbors
                    pos, grp = pos[perm][keep], grp[perm][keep]
                u, v, t = frontier[grp], self.dst[pos], self.typ[pos]
                new = v[local[v] < 0]
                _, first = np.unique(new, return_index=True)
                new = new[np.sort(first)][: max(max_nodes - n, 0)]
                local[new] = np.arange(n, n + new.size)
                parts.append(new)
                n += new.size
                keep = local[v] >= 0
                es.append(local[u[keep]])
                ed.append(local[v[keep]])
                et.append(t[keep])
                done[frontier] = True
                expanded.append(frontier)
                frontier = new
            nodes = np.concatenate(parts)
        finally:
            for arr in parts:
                local[arr] = -1
            for arr in expanded:
                done[arr] = False
            if held:
                self._scratch_lock.release()
        if not es:
            z = np.zeros(0, dtype=np.int64)
            return nodes, z, z, z
        return nodes, np.concatenate(es), np.concatenate(ed), np.concatenate(et)

    def _scratch(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """Node-indexed ``(local id or -1, expanded flag)`` arrays, all -1 / False on entry.

        One pair is kept and reused (callers reset what they touched); a concurrent caller
        gets a fresh pair rather than waiting.
        """
        if self._scratch_lock.acquire(blocking=False):
            if self._local is None:
                self._local = np.full(len(self.nodes), -1, dtype=np.int64)
                self._done = np.zeros(len(self.nodes), dtype=bool)
            assert self._done is not None
            return self._local, self._done, True
        return np.full(len(self.nodes), -1, np.int64), np.zeros(len(self.nodes), bool), False


_COMPILED: weakref.WeakKeyDictionary[KnowledgeGraph, dict] = weakref.WeakKeyDictionary()
_COMPILED_LOCK = threading.Lock()


def compiled_graph(kg: KnowledgeGraph, relations: list[str] | None = None) -> CompiledGraph:
    """A :class:`CompiledGraph` of ``kg``, shared while the graph is unchanged.

    Training, prediction and the baseline each need one; building it walks every edge in
    Python (about a second for 130k facts), so it is built once per graph version.
    """
    rels = relations if relations is not None else kg.relations()
    key = tuple(rels)
    with _COMPILED_LOCK:
        per = _COMPILED.setdefault(kg, {})
        cg = per.get(key)
        if cg is not None and cg.version == kg._version:
            return cg
    cg = CompiledGraph(kg, list(rels))
    with _COMPILED_LOCK:
        per = _COMPILED.setdefault(kg, {})
        if len(per) >= 4:  # a handful of relation vocabularies at most; drop the oldest
            per.pop(next(iter(per)))
        per[key] = cg
    return cg


def load_model(model_dir: Path):
    """A trained :class:`knowledge.gnn.KGQANet` from ``model_dir`` (safetensors + JSON)."""
    import hashlib

    from safetensors.torch import load

    from knowledge.gnn import KGQAConfig, KGQANet

    model_dir = Path(model_dir)
    try:
        cfg = json.loads((model_dir / CONFIG_FILE).read_text("utf-8"))
        meta = cfg.pop("_meta", {})
        blob = (model_dir / MODEL_FILE).read_bytes()
        if meta.get("weights_sha256") not in (None, hashlib.sha256(blob).hexdigest()):
            raise ValueError("weights do not match config.json (interrupted save?)")
        config = KGQAConfig(**cfg)
        state = load(blob)
        model = KGQANet(config)
        model.load_state_dict(state)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise KnowledgeError(f"could not load the GNN model from {model_dir}: {exc}") from exc
    model.eval()
    return model


def mask_span(question: str, name: str) -> str:
    """Mask the topic entity's mention (brackets, exact or case-insensitive name) with ``NE``."""
    if "[" in question:
        return mask_question(question, None)
    for form in (name, name.replace("_", " ")):
        m = re.search(re.escape(form), question, flags=re.IGNORECASE)
        if m:
            return " ".join((question[: m.start()] + "NE" + question[m.end() :]).split())
    return " ".join(question.split())


class GraphReasoner:
    """Answers questions from a :class:`KnowledgeGraph` (trained GNN if present, else zero-shot).

    Args:
        graph: the knowledge graph.
        embedder: a :class:`knowledge.embed.Embedder` (entity, relation and question vectors).
        model_dir: directory holding ``model.safetensors`` + ``config.json`` from training.
        max_hops: longest path considered by the zero-shot reader.
    """

    def __init__(
        self, graph: KnowledgeGraph, embedder, model_dir: Path | None = None, max_hops: int = 2
    ) -> None:
        self.graph = graph
        self.embedder = embedder
        self.max_hops = max_hops
        self.model = None
        if model_dir is not None and (Path(model_dir) / MODEL_FILE).is_file():
            self.model = load_model(Path(model_dir))
        self._compiled: CompiledGraph | None = None
        self._lock = threading.Lock()

    def compiled(self) -> CompiledGraph:
        with self._lock:
            if self._compiled is None or self._compiled.version != self.graph._version:
                rels = self.model.config.relations if self.model is not None else None
                self._compiled = CompiledGraph(self.graph, rels)
            return self._compiled

    def linked_entities(self, question: str) -> list[tuple[str, float]]:
        return self.graph.link(question, self.embedder)

    def answer(
        self, question: str, *, context_entities: list[str] | None = None, k: int = 3
    ) -> list[GraphAnswer]:
        """Up to ``k`` answers, best first; empty when no entity of the graph is recognised."""
        if not isinstance(question, str) or not question.strip():
            raise QueryError("the question is empty")
        if len(question) > MAX_QUESTION_CHARS:
            raise QueryError(f"the question is longer than {MAX_QUESTION_CHARS} characters")
        if self.graph.g.number_of_nodes() == 0:
            return []
        cg = self.compiled()
        links = [(n, s) for n, s in self.linked_entities(question) if s >= 0.6]
        topics = [(n, s) for n, s in links if self.graph.resolve(n) is not None][:2]
        if not topics and context_entities:
            topics = [(n, 0.7) for n in context_entities if self.graph.resolve(n) is not None][:2]
        if not topics:
            return []
        if self.model is not None:
            name = topics[0][0]
            return self._answer_model(question, name, cg, k)
        out: dict[str, GraphAnswer] = {}
        for name, link_score in topics:
            for a in self._answer_zero_shot(question, name, cg, k):
                a.score = round(a.score * link_score, 4)
                if a.entity not in out or out[a.entity].score < a.score:
                    out[a.entity] = a
        return sorted(out.values(), key=lambda a: -a.score)[:k]

    # -- zero-shot ---------------------------------------------------------------------
    def _answer_zero_shot(
        self, question: str, topic_name: str, cg: CompiledGraph, k: int
    ) -> list[GraphAnswer]:
        node = self.graph.resolve(topic_name)
        assert node is not None  # answer() only passes topics that resolve
        t0 = cg.index[node]
        # Enumerate paths (node, [(edge type, node), ...]) up to max_hops, capped.
        paths: list[tuple[int, ...]] = []
        frontier: list[tuple[int, ...]] = [(t0,)]
        for _ in range(self.max_hops):
            nxt = []
            for p in frontier:
                u = p[-1]
                for j in range(cg.indptr[u], min(cg.indptr[u + 1], cg.indptr[u] + 200)):
                    v = int(cg.dst[j])
                    if v == t0 or v in p[::2]:
                        continue
                    nxt.append((*p, int(cg.typ[j]), v))
                if len(nxt) >= MAX_PATHS:  # hub entities: bounded work per question
                    break
            paths += nxt
            frontier = nxt[:2000]
        if not paths:
            return []
        counts: dict[tuple[int, ...], int] = {}
        for p in paths:
            counts[p[1::2]] = counts.get(p[1::2], 0) + 1
        # every 1-hop relation, and the most common longer ones (each is one encoder input)
        seqs = sorted(counts, key=lambda s: (len(s), -counts[s]))[:MAX_PATH_TYPES]
        keep = set(seqs)
        paths = [p for p in paths if p[1::2] in keep]
        phrases = [" ".join(relation_phrase(cg.relations[t // 2]) for t in s) for s in seqs]
        masked = mask_span(question, topic_name)
        vecs = self.embedder.encode([masked, *phrases])
        sims = vecs[1:] @ vecs[0]
        seq_score = {}
        for s, sim in zip(seqs, sims, strict=True):
            penalty = 0.08 * (len(s) - 1) + 0.02 * sum(t % 2 for t in s)
            seq_score[s] = float(sim) - penalty
        best: dict[int, tuple[float, tuple[int, ...]]] = {}
        wants = _answer_type(question)
        for p in paths:
            sc = seq_score[p[1::2]] + _type_prior(wants, cg.kg.g.nodes[cg.nodes[p[-1]]]["name"])
            end = p[-1]
            if end not in best or best[end][0] < sc:
                best[end] = (sc, p)
        ranked = sorted(best.items(), key=lambda kv: -kv[1][0])[:k]
        return [self._make_answer(cg, p, max(sc, 0.0)) for _, (sc, p) in ranked]

    def _make_answer(self, cg: CompiledGraph, p: tuple[int, ...], score: float) -> GraphAnswer:
        g = self.graph.g
        path = [g.nodes[cg.nodes[p[0]]]["name"]]
        docs: set[str] = set()
        for i in range(1, len(p), 2):
            t, a, b = p[i], cg.nodes[p[i - 1]], cg.nodes[p[i + 1]]
            rel = cg.relations[t // 2]
            u, v = (a, b) if t % 2 == 0 else (b, a)
            if g.has_edge(u, v, key=rel):
                docs |= g.edges[u, v, rel]["docs"]
            path += [cg.type_label(t), g.nodes[b]["name"]]
        return GraphAnswer(
            entity=path[-1], score=round(float(score), 4), path=path, doc_ids=sorted(docs)
        )

    # -- trained model -----------------------------------------------------------------
    def _answer_model(
        self, question: str, topic_name: str, cg: CompiledGraph, k: int
    ) -> list[GraphAnswer]:
        import torch

        from knowledge.kgqa_train import build_batch

        model = self.model
        assert model is not None
        c = model.config
        node = self.graph.resolve(topic_name)
        assert node is not None  # answer() only passes topics that resolve
        t0 = cg.index[node]
        sub = cg.subgraph([t0], c.hops, c.max_neighbors, c.max_nodes)
        nodes_all, ent = self.graph.entity_embeddings(self.embedder)
        if nodes_all != cg.nodes:  # same order unless the graph changed meanwhile
            pos = {n: i for i, n in enumerate(nodes_all)}
            ent = ent[[pos[n] for n in cg.nodes]]
        masked = mask_span(question, topic_name)
        q = self.embedder.encode([masked])
        batch = build_batch([sub], ent, q, [masked], c, [None])
        with torch.no_grad():
            logits, _, attn = model(batch)
        logits = logits.numpy().copy()
        if not c.topic_answers:  # the topic is its own answer only where training said so
            logits[0] = -np.inf
        top = np.argsort(-logits)[:k]
        probs = torch.softmax(torch.from_numpy(logits), 0).numpy()
        out = []
        for j in top:
            if not np.isfinite(logits[j]):
                continue
            p = _best_path(sub, attn[:, 0].numpy(), int(j))
            gp = tuple(int(sub[0][x]) if i % 2 == 0 else x for i, x in enumerate(p))
            ans = self._make_answer(cg, gp, float(probs[j]))
            if len(gp) == 1:  # no attended path (should not happen inside the k-hop subgraph)
                name = self.graph.g.nodes[cg.nodes[int(sub[0][j])]]["name"]
                ans = GraphAnswer(name, ans.score, [topic_name, "-?->", name], [])
            out.append(ans)
        return out


_MONEY = re.compile(r"[$€£¥]|\b\d+(?:[.,]\d+)?\s*(?:usd|eur|gbp|dollars?|euros?|kr|nok)\b", re.I)
_YEAR = re.compile(r"\b(1[5-9]\d\d|20\d\d)\b")


def _answer_type(question: str) -> str:
    """A coarse expected answer type from the question words (zero-shot reader only)."""
    q = question.lower()
    if re.search(r"\b(how much|price|cost|costs|pay)\b", q):
        return "money"
    if re.search(r"\b(when|what year|which year|since when)\b", q):
        return "time"
    if re.search(r"\b(who|whom)\b", q):
        return "agent"
    return ""


def _type_prior(wants: str, answer: str) -> float:
    """Small score nudges: a "who" question rarely has a number for an answer, and so on."""
    has_digit = any(ch.isdigit() for ch in answer)
    if wants == "money":
        return 0.08 if _MONEY.search(answer) else (0.0 if has_digit else -0.05)
    if wants == "time":
        return 0.08 if _YEAR.search(answer) else -0.05
    if wants == "agent":
        return -0.1 if has_digit else 0.0
    return 0.0


def _best_path(sub, attn: np.ndarray, target: int) -> tuple[int, ...]:
    """Most attended path (local ids, alternating node/type) from node 0 to ``target``."""
    _, src, dst, typ = sub
    T = attn.shape[0]
    best: dict[int, tuple[float, tuple[int, ...]]] = {0: (1.0, (0,))}
    found: list[tuple[float, tuple[int, ...]]] = []
    for t in range(T):
        nxt: dict[int, tuple[float, tuple[int, ...]]] = {}
        for e in range(len(src)):
            u = int(src[e])
            if u not in best:
                continue
            v = int(dst[e])
            sc = best[u][0] * float(attn[t, typ[e]])
            if v not in nxt or nxt[v][0] < sc:
                nxt[v] = (sc, (*best[u][1], int(typ[e]), v))
        if target in nxt:
            sc, p = nxt[target]
            found.append((sc ** (1.0 / (t + 1)), p))  # geometric mean: fair across lengths
        best = nxt
    return max(found, key=lambda x: x[0])[1] if found else (0,)
