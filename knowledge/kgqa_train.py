"""Training and evaluation of the graph QA model, and the GNN-free baseline it is compared with.

``train_gnn`` fits :class:`knowledge.gnn.KGQANet` on questions with known answers over a
:class:`KnowledgeGraph` and writes ``model.safetensors`` + ``config.json`` + ``loss.png``.
``evaluate`` reports hits@1. :class:`PathClassifier` is the baseline with the GNN switched
off: entity link -> a classifier picks one relation path -> traversal.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from knowledge.atomic import atomic_write
from knowledge.errors import KnowledgeError
from knowledge.gnn import GraphBatch, KGQAConfig, KGQANet, question_ngrams
from knowledge.graph import KnowledgeGraph, relation_phrase
from knowledge.kgqa import CONFIG_FILE, MODEL_FILE, CompiledGraph, compiled_graph
from knowledge.kgqa_data import KGQAExample, mask_question

ProgressFn = Callable[[int, int, dict], None]


@dataclass
class Prepared:
    """An example resolved against the graph: topic node index and answer node indices."""

    ex: KGQAExample
    topic: int | None
    answers: set[int]
    masked: str


@dataclass
class TrainResult:
    model: KGQANet
    losses: list[float]
    seconds: float
    used: int
    skipped: int
    history: list[dict] = field(default_factory=list)
    examples_seen: int = 0  # questions processed over all epochs (throughput = seen / time)
    setup_seconds: float = 0.0  # linking, encoding, graph compilation before the first step
    cache_bytes: int = 0  # memory held by the per-question cache at the end


def prepare(examples: list[KGQAExample], kg: KnowledgeGraph, cg: CompiledGraph) -> list[Prepared]:
    """Resolve topics (marked, or linked by exact name) and answers to node indices."""
    out = []
    for ex in examples:
        topic = None
        if ex.topic:
            node = kg.resolve(ex.topic)
            topic = cg.index.get(node) if node is not None else None
        if topic is None:
            links = kg.link(ex.question)
            if links and links[0][1] >= 0.99:
                ex.topic = links[0][0]
                node = kg.resolve(ex.topic)
                topic = cg.index.get(node) if node is not None else None
        answers = set()
        for a in ex.answers:
            node = kg.resolve(a)
            if node is not None and node in cg.index:
                answers.add(cg.index[node])
        out.append(Prepared(ex, topic, answers, mask_question(ex.question, ex.topic)))
    return out


# Share of training questions answered by their own topic above which the topic stays a
# candidate. PathQuestion: 6.3% (PQ-2H) and 1.5% (PQ-3H) of questions are round trips such
# as "the parent of X's child"; MetaQA: none. Masking the topic made every one a miss.
TOPIC_ANSWER_SHARE = 0.01


def topic_answer_share(prep: list[Prepared]) -> float:
    """Share of resolved questions whose gold answers include their own topic entity."""
    known = [p for p in prep if p.topic is not None and p.answers]
    return sum(p.topic in p.answers for p in known) / len(known) if known else 0.0


Subgraph = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def collate(
    subs: list[Subgraph],
    grams: list[np.ndarray],
    labels: list[np.ndarray] | None,
    ent_table: np.ndarray,
    q_feat: np.ndarray,
) -> GraphBatch:
    """Disjoint union of per-question subgraphs (PyG style), without a per-question loop.

    Each subgraph is ``(global node ids, local src, local dst, edge type)`` with the topic at
    local index 0; node indices are offset by the sizes of the subgraphs before it, so one
    scatter per step covers the whole batch. ``labels`` are per-question 0/1 answer masks.
    """
    sizes = np.fromiter((s[0].shape[0] for s in subs), dtype=np.int64, count=len(subs))
    n_edges = np.fromiter((s[1].shape[0] for s in subs), dtype=np.int64, count=len(subs))
    offs = np.cumsum(sizes) - sizes
    eoff = np.repeat(offs, n_edges)
    nodes = np.concatenate([s[0] for s in subs]).astype(np.int64, copy=False)
    src = np.concatenate([s[1] for s in subs]).astype(np.int64, copy=False) + eoff
    dst = np.concatenate([s[2] for s in subs]).astype(np.int64, copy=False) + eoff
    typ = np.concatenate([s[3] for s in subs]).astype(np.int64, copy=False)
    topic = np.zeros(int(sizes.sum()), dtype=np.float32)
    topic[offs[sizes > 0]] = 1.0
    glen = np.fromiter((g.shape[0] for g in grams), dtype=np.int64, count=len(grams))
    uniq, inv = np.unique(nodes, return_inverse=True)  # shared entities projected once
    return GraphBatch(
        ent_feat=torch.from_numpy(ent_table[uniq]),
        ent_index=torch.from_numpy(inv.reshape(-1)),
        topic=torch.from_numpy(topic),
        node_batch=torch.from_numpy(np.repeat(np.arange(len(subs), dtype=np.int64), sizes)),
        edge_index=torch.from_numpy(np.stack([src, dst])),
        edge_type=torch.from_numpy(typ),
        q_feat=torch.from_numpy(np.ascontiguousarray(q_feat, dtype=np.float32)),
        q_ngrams=torch.from_numpy(np.concatenate(grams).astype(np.int64, copy=False)),
        q_offsets=torch.from_numpy(np.cumsum(glen) - glen),
        labels=torch.from_numpy(np.concatenate(labels)) if labels is not None else None,
    )


def _label_mask(nodes: np.ndarray, answers: set[int] | None) -> np.ndarray:
    if not answers:
        return np.zeros(nodes.shape[0], np.float32)
    return np.isin(nodes, np.fromiter(answers, dtype=np.int64)).astype(np.float32)


def _grams(masked: str, config: KGQAConfig) -> np.ndarray:
    return np.asarray(question_ngrams(masked, config.ngram_buckets), dtype=np.int32)


def build_batch(
    subs: list[Subgraph],
    ent_table: np.ndarray,
    q_feat: np.ndarray,
    masked: list[str],
    config: KGQAConfig,
    answers: list[set[int] | None],
) -> GraphBatch:
    """Stack per-question subgraphs into one :class:`GraphBatch` (PyG-style disjoint union)."""
    labels = [_label_mask(s[0], a) for s, a in zip(subs, answers, strict=True)]
    return collate(
        subs, [_grams(m, config) for m in masked], labels if any(answers) else None,
        ent_table, q_feat,
    )  # fmt: skip


_ENTRY_OVERHEAD = 600  # Python objects around each cached entry (array headers, tuple, dict slot)


class QuestionCache:
    """Each question's subgraph, answer mask and n-gram ids, computed once, reused every epoch.

    Extracting a subgraph is deterministic (its neighbour sampling is seeded by the topic),
    so a cached one is exactly what a fresh extraction would give. Questions about the same
    topic share one subgraph. Memory is bounded: past ``budget_bytes`` new entries are
    computed on every use instead of kept (``nbytes`` says what is held).
    """

    def __init__(self, cg: CompiledGraph, config: KGQAConfig, budget_bytes: int) -> None:
        self.cg, self.config, self.budget = cg, config, budget_bytes
        self.subs: dict[int, Subgraph] = {}
        self.items: dict[int, tuple[Subgraph, np.ndarray, np.ndarray]] = {}
        self.nbytes = 0

    def subgraph(self, topic: int) -> Subgraph:
        sub = self.subs.get(topic)
        if sub is not None:
            return sub
        c = self.config
        nodes, src, dst, typ = self.cg.subgraph([topic], c.hops, c.max_neighbors, c.max_nodes,
                                                seed=topic)  # fmt: skip
        # int32 halves the memory; collate widens once per batch
        sub = (nodes.astype(np.int32), src.astype(np.int32), dst.astype(np.int32),
               typ.astype(np.int32))  # fmt: skip
        size = sum(a.nbytes for a in sub) + _ENTRY_OVERHEAD
        if self.nbytes + size <= self.budget:
            self.subs[topic] = sub
            self.nbytes += size
        return sub

    def item(self, key: int, p: Prepared) -> tuple[Subgraph, np.ndarray, np.ndarray]:
        """``(subgraph, answer mask, n-gram ids)`` of prepared question ``key``."""
        it = self.items.get(key)
        if it is not None:
            return it
        assert p.topic is not None  # callers keep only examples whose topic resolved
        sub = self.subgraph(p.topic)
        it = (sub, _label_mask(sub[0], p.answers), _grams(p.masked, self.config))
        size = it[1].nbytes + it[2].nbytes + _ENTRY_OVERHEAD
        if self.nbytes + size <= self.budget:
            self.items[key] = it
            self.nbytes += size
        return it

    def batch(self, keys, prep: list[Prepared], ent: np.ndarray, q_feat: np.ndarray,
              labels: bool = True) -> GraphBatch:  # fmt: skip
        """A :class:`GraphBatch` of the questions ``prep[k] for k in keys``."""
        its = [self.item(int(k), prep[int(k)]) for k in keys]
        return collate([i[0] for i in its], [i[2] for i in its],
                       [i[1] for i in its] if labels else None, ent, q_feat)  # fmt: skip


def _optimizer(model: KGQANet, lr: float) -> torch.optim.Optimizer:
    """AdamW, fused where this torch has it: one kernel over all parameters instead of a loop
    per tensor (with the dense n-gram table, the per-tensor update was a fifth of a step)."""
    params = list(model.parameters())
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=1e-4, fused=True)
    except (RuntimeError, TypeError, ValueError):  # a build without the fused CPU kernel
        return torch.optim.AdamW(params, lr=lr, weight_decay=1e-4, foreach=True)


def relation_features(relations: list[str], embedder) -> torch.Tensor:
    """MiniLM vectors of relation phrases, forward and inverse: ``(2R, 384)``."""
    texts = []
    for r in relations:
        p = relation_phrase(r)
        texts += [p, f"inverse of {p}"]
    return torch.from_numpy(embedder.encode(texts)) if texts else torch.zeros(0, 384)


def train_gnn(
    kg: KnowledgeGraph,
    examples: list[KGQAExample],
    embedder,
    out_dir: Path | None = None,
    *,
    hops: int = 2,
    dim: int = 64,
    layers: int = 2,
    aggr: str = "mean",
    use_gnn: bool = True,
    epochs: int = 5,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    max_neighbors: int = 64,
    max_nodes: int = 2000,
    time_budget_s: float | None = None,
    on_progress: ProgressFn | None = None,
    show_progress: bool = True,
    cache_mb: float = 1024.0,
    topic_answers: bool | None = None,
) -> TrainResult:
    """Train a :class:`KGQANet`; save it to ``out_dir`` (safetensors, JSON, loss-curve PNG).

    ``batch_size`` questions make one step (their subgraphs as one disjoint graph); each
    question's subgraph, answer mask and n-grams are kept for later epochs, up to
    ``cache_mb`` megabytes (:class:`QuestionCache`). ``topic_answers`` lets the topic be
    its own answer; ``None`` decides from the data (:func:`topic_answer_share`).
    """
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    t_start = time.perf_counter()
    relations = kg.relations()
    if not relations:
        raise KnowledgeError("the graph has no facts to learn from")
    cg = compiled_graph(kg, relations)
    prep = [p for p in prepare(examples, kg, cg) if p.topic is not None and p.answers]
    skipped = len(examples) - len(prep)
    if not prep:
        raise KnowledgeError(
            "no training question could be linked to a graph entity with an answer in the graph"
        )
    if topic_answers is None:
        topic_answers = topic_answer_share(prep) >= TOPIC_ANSWER_SHARE
    config = KGQAConfig(relations=relations, hops=hops, dim=dim, layers=layers, aggr=aggr,
                        use_gnn=use_gnn, max_neighbors=max_neighbors, max_nodes=max_nodes,
                        topic_answers=topic_answers)  # fmt: skip
    model = KGQANet(config, relation_features(relations, embedder))
    nodes, ent = kg.entity_embeddings(embedder)
    assert nodes == cg.nodes
    q_all = embedder.encode([p.masked for p in prep])
    cache = QuestionCache(cg, config, int(cache_mb * 2**20))
    opt = _optimizer(model, lr)
    steps_per_epoch = math.ceil(len(prep) / batch_size)
    total = steps_per_epoch * epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(total, 1))
    rng = np.random.default_rng(seed)
    losses: list[float] = []
    bar = tqdm(total=total, desc="train gnn", unit="step", disable=not show_progress)
    step = seen = 0
    setup_s = time.perf_counter() - t_start
    model.train()
    for epoch in range(epochs):
        perm = rng.permutation(len(prep))
        for i in range(0, len(prep), batch_size):
            idx = perm[i : i + batch_size]
            loss = model.loss(cache.batch(idx, prep, ent, q_all[idx]))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            seen += len(idx)
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", epoch=epoch + 1)
            if on_progress is not None:
                on_progress(step, total, {"loss": losses[-1], "epoch": epoch + 1})
            if time_budget_s is not None and time.perf_counter() - t_start > time_budget_s:
                break
        else:
            continue
        break
    bar.close()
    model.eval()
    seconds = time.perf_counter() - t_start
    if out_dir is not None:
        save_model(model, Path(out_dir))
        plot_losses(losses, Path(out_dir) / "loss.png", title=f"GNN ({aggr}, {hops} hops)")
    return TrainResult(model, losses, seconds, len(prep), skipped, examples_seen=seen,
                       setup_seconds=setup_s, cache_bytes=cache.nbytes)  # fmt: skip


def save_model(model: KGQANet, out_dir: Path) -> None:
    """Weights as safetensors, then the config (with the weights' sha256) atomically."""
    from safetensors.torch import save

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    blob = save(state)
    atomic_write(out_dir / MODEL_FILE, blob)
    cfg = model.config.to_dict()
    meta = {"weights_sha256": hashlib.sha256(blob).hexdigest()}
    atomic_write(out_dir / CONFIG_FILE, json.dumps(cfg | {"_meta": meta}, indent=1).encode())


def plot_losses(losses: list[float], path: Path, title: str = "training loss") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(losses) + 1), losses, lw=1, label="batch loss")
    if len(losses) >= 10:
        w = max(len(losses) // 20, 2)
        sm = np.convolve(losses, np.ones(w) / w, mode="valid")
        ax.plot(range(w, len(losses) + 1), sm, lw=2, label=f"mean of {w}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def predict(
    model: KGQANet, kg: KnowledgeGraph, examples: list[KGQAExample], embedder,
    batch_size: int = 128, cache_mb: float = 256.0,
) -> list[str | None]:  # fmt: skip
    """Top-1 answer name per question (``None`` when the topic cannot be linked).

    Questions go through the model ``batch_size`` at a time as one disjoint graph; the
    best candidate of each is picked for the whole batch at once.
    """
    c = model.config
    cg = compiled_graph(kg, c.relations)
    prep = prepare(examples, kg, cg)
    nodes, ent = kg.entity_embeddings(embedder)
    assert nodes == cg.nodes
    out: list[str | None] = [None] * len(prep)
    ok = [i for i, p in enumerate(prep) if p.topic is not None]
    if not ok:
        return out
    q_all = embedder.encode([prep[i].masked for i in ok])
    cache = QuestionCache(cg, c, int(cache_mb * 2**20))
    with torch.no_grad():
        for s in range(0, len(ok), batch_size):
            ids = ok[s : s + batch_size]
            its = [cache.item(i, prep[i]) for i in ids]
            subs = [it[0] for it in its]
            b = collate(subs, [it[2] for it in its], None, ent, q_all[s : s + len(ids)])
            logits = model(b)[0]
            if not c.topic_answers:
                logits = logits.masked_fill(b.topic > 0.5, -1e9)
            logits = logits.numpy()
            nb = b.node_batch.numpy()
            sizes = np.bincount(nb, minlength=len(ids))
            # per question, the first node with the highest logit (np.argmax of each segment)
            best = np.lexsort((-logits, nb))[np.cumsum(sizes) - sizes]
            gids = np.concatenate([sub[0] for sub in subs])
            for k, i in enumerate(ids):
                j = int(best[k])
                if sizes[k] > 1 and logits[j] > -1e8:
                    out[i] = kg.g.nodes[cg.nodes[int(gids[j])]]["name"]
    return out


def hits_at_1(preds: list[str | None], examples: list[KGQAExample], kg: KnowledgeGraph) -> float:
    """Share of questions whose top answer is one of the gold answers (alias-aware)."""
    if not examples:
        return 0.0
    hit = 0
    for p, ex in zip(preds, examples, strict=True):
        if p is None:
            continue
        gold = {kg.resolve(a) or a for a in ex.answers}
        hit += (kg.resolve(p) or p) in gold
    return hit / len(examples)


class PathClassifier:
    """Baseline without the GNN: link the topic, classify the relation path, traverse it.

    Training labels are the relation paths (up to ``hops`` hops) from the topic whose end
    set best matches the gold answers (F1); the classifier reads the same question features
    as the GNN (MiniLM vector + hashed n-grams). Answers are ranked by how many paths of the
    predicted type reach them.
    """

    def __init__(self, kg: KnowledgeGraph, embedder, hops: int = 2, max_nodes: int = 500) -> None:
        self.kg, self.embedder, self.hops, self.max_nodes = kg, embedder, hops, max_nodes
        self.cg = compiled_graph(kg)
        self.classes: list[tuple[int, ...]] = []
        self.buckets = 1 << 14
        self.net: torch.nn.ModuleList | None = None
        self.topic_answers = False  # set by fit(), from the data as for the GNN

    def _walk(self, start: int, seq: tuple[int, ...]) -> dict[int, int]:
        """Nodes reached from ``start`` along edge types ``seq`` -> number of paths."""
        cur = {start: 1}
        for t in seq:
            nxt: dict[int, int] = {}
            for u, c in list(cur.items())[: self.max_nodes]:
                lo, hi = self.cg.indptr[u], self.cg.indptr[u + 1]
                m = self.cg.typ[lo:hi] == t
                for v in self.cg.dst[lo:hi][m]:
                    nxt[int(v)] = nxt.get(int(v), 0) + c
            cur = nxt
        if not self.topic_answers:
            cur.pop(start, None)
        return cur

    def _label(self, topic: int, answers: set[int]) -> tuple[int, ...] | None:
        best, best_f1 = None, 0.0
        level: list[tuple[int, ...]] = [()]
        for _ in range(self.hops):
            nxt_level = []
            for seq in level:
                reach = self._walk(topic, seq) if seq else {topic: 1}
                types = set()
                for u in list(reach)[: self.max_nodes]:
                    types |= set(self.cg.typ[self.cg.indptr[u] : self.cg.indptr[u + 1]].tolist())
                for t in sorted(types):
                    s2 = (*seq, t)
                    got = set(self._walk(topic, s2))
                    tp = len(got & answers)
                    if tp:
                        f1 = 2 * tp / (len(got) + len(answers))
                        if f1 > best_f1 + 1e-9:
                            best, best_f1 = s2, f1
                    nxt_level.append(s2)
            level = nxt_level[:50]
        return best

    def _features(self, masked: list[str]):
        q = torch.from_numpy(self.embedder.encode(masked))
        grams = [question_ngrams(m, self.buckets) for m in masked]
        offs = torch.tensor(np.cumsum([0] + [len(g) for g in grams[:-1]]), dtype=torch.long)
        flat = torch.tensor([x for g in grams for x in g], dtype=torch.long)
        return q, flat, offs

    def fit(self, examples: list[KGQAExample], epochs: int = 200, seed: int = 0) -> float:
        """Label paths and train the classifier; returns seconds taken."""
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        prep = [p for p in prepare(examples, self.kg, self.cg) if p.topic is not None]
        self.topic_answers = topic_answer_share(prep) >= TOPIC_ANSWER_SHARE
        labels, keep = [], []
        for p in prep:
            assert p.topic is not None  # filtered above
            seq = self._label(p.topic, p.answers) if p.answers else None
            if seq is not None:
                labels.append(seq)
                keep.append(p)
        if not keep:
            raise KnowledgeError("no training question has a relation path to its answers")
        self.classes = sorted(set(labels))
        cix = {c: i for i, c in enumerate(self.classes)}
        y = torch.tensor([cix[s] for s in labels])
        C = len(self.classes)
        lin, bag = torch.nn.Linear(384, C), torch.nn.EmbeddingBag(self.buckets, C, mode="mean")
        self.net = torch.nn.ModuleList([lin, bag])
        q, flat, offs = self._features([p.masked for p in keep])
        opt = torch.optim.Adam(self.net.parameters(), lr=0.05)
        for _ in range(epochs):
            loss = torch.nn.functional.cross_entropy(lin(q) + bag(flat, offs), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - t0

    def predict(self, examples: list[KGQAExample]) -> list[str | None]:
        assert self.net is not None, "call fit() first"
        prep = prepare(examples, self.kg, self.cg)
        out: list[str | None] = [None] * len(prep)
        ok = [i for i, p in enumerate(prep) if p.topic is not None]
        if not ok:
            return out
        q, flat, offs = self._features([prep[i].masked for i in ok])
        with torch.no_grad():
            pred = (self.net[0](q) + self.net[1](flat, offs)).argmax(-1).tolist()
        for i, c in zip(ok, pred, strict=True):
            topic = prep[i].topic
            assert topic is not None  # ``ok`` holds only resolved topics
            reach = self._walk(topic, self.classes[c])
            if reach:
                best = max(reach.items(), key=lambda kv: (kv[1], -kv[0]))[0]
                out[i] = self.kg.g.nodes[self.cg.nodes[best]]["name"]
        return out


def evaluate_reasoner(
    kg: KnowledgeGraph, examples: list[KGQAExample], embedder, model_dir: Path | None = None,
    on_progress: ProgressFn | None = None,
) -> dict:  # fmt: skip
    """Hits@1 of :class:`knowledge.kgqa.GraphReasoner` (trained model if present) on ``examples``."""
    from knowledge.kgqa import GraphReasoner

    reasoner = GraphReasoner(kg, embedder, model_dir)
    rows, hits, linked = [], 0, 0
    for i, ex in enumerate(examples):
        ans = reasoner.answer(ex.question, k=1)
        pred = ans[0].entity if ans else None
        gold = {kg.resolve(a) or a for a in ex.answers}
        hit = pred is not None and (kg.resolve(pred) or pred) in gold
        hits += hit
        linked += bool(ans)
        rows.append({"question": ex.question, "gold": ex.answers, "predicted": pred,
                     "hit": bool(hit), "path": ans[0].path if ans else []})  # fmt: skip
        if on_progress is not None:
            on_progress(i + 1, len(examples), {"hits": hits})
    return {
        "mode": "trained GNN" if reasoner.model is not None else "zero-shot path reader",
        "questions": len(examples),
        "linked": linked,
        "hits_at_1": hits / max(len(examples), 1),
        "examples": rows,
    }
