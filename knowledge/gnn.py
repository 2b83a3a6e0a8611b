r"""Relation-aware message passing over the knowledge graph, in plain torch.

Two pieces:

- :class:`RelationalAggregation`, one GNN layer
  :math:`h_i' = \sigma(W_{self} h_i + \sum_r W_r \,\mathrm{AGG}_{j \in N_r(i)}\, w_{ji} h_j)`
  with a ``mean``/``sum``/``max`` aggregator picked by name (:func:`resolve_aggregation`).
- :class:`KGQANet`, the question answering model built from it (GraftNet / TransferNet
  style): the question embedding picks, for each hop, a soft distribution over relations;
  that attention moves a score from the topic entity along the graph, and it weights the
  messages of the GNN layers, whose output scores every entity of the k-hop subgraph.

Entity features are MiniLM embeddings of entity names; relation features are MiniLM
embeddings of relation names (so a relation never seen in training still gets a sensible
attention). Everything runs on a batch of disjoint subgraphs (one per question), as in PyG.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

AGGREGATORS = ("mean", "sum", "max")


def resolve_aggregation(name: str) -> str:
    """Normalise an aggregator name; ``ValueError`` listing the choices otherwise."""
    key = str(name).lower().replace("aggregation", "").replace("_", "").strip()
    key = {"add": "sum", "avg": "mean", "amax": "max"}.get(key, key)
    if key not in AGGREGATORS:
        raise ValueError(f"Could not resolve '{name}' among choices {set(AGGREGATORS)}")
    return key


def scatter(src: torch.Tensor, index: torch.Tensor, dim_size: int, reduce: str) -> torch.Tensor:
    """Reduce rows of ``src`` (E, F) into ``dim_size`` rows by ``index`` (E,).

    Rows that receive nothing are zero for every reducer.
    """
    reduce = resolve_aggregation(reduce)
    shape = (dim_size, *src.shape[1:])
    if reduce == "max":
        idx = index.view(-1, *([1] * (src.dim() - 1))).expand_as(src)
        out = src.new_zeros(shape)
        return out.scatter_reduce(0, idx, src, reduce="amax", include_self=False)
    out = src.new_zeros(shape).index_add_(0, index, src)
    if reduce == "mean":
        cnt = src.new_zeros(dim_size).index_add_(0, index, src.new_ones(index.shape[0]))
        out = out / cnt.clamp(min=1).view(-1, *([1] * (src.dim() - 1)))
    return out


class RelationalAggregation(nn.Module):
    r"""One relation-aware message passing layer.

    .. math::
        \mathbf{h}_i' = \sigma\Big(\mathbf{W}_{self}\mathbf{h}_i + \sum_{r}
        \mathbf{W}_r \,\mathrm{AGG}_{j \in \mathcal{N}_r(i)}\, w_{ji}\,\mathbf{h}_j\Big)

    where :math:`\mathcal{N}_r(i)` are the nodes with an edge of type ``r`` into ``i`` and
    :math:`w_{ji}` an optional edge weight (the question conditions messages through it).

    Args:
        in_dim: size of each input node vector.
        out_dim: size of each output node vector.
        num_relations: number of edge types (count an inverse direction as its own type).
        aggr: ``"mean"``, ``"sum"`` or ``"max"`` (default ``"mean"``).
        activation: apply ReLU as :math:`\sigma` (default ``True``).

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})`, edge indices
          :math:`(2, |\mathcal{E}|)` (row 0 source, row 1 target), edge types
          :math:`(|\mathcal{E}|)`, optional edge weights :math:`(|\mathcal{E}|)`
        - **output:** node features :math:`(|\mathcal{V}|, F_{out})`
    """

    def __init__(
        self, in_dim: int, out_dim: int, num_relations: int, aggr: str = "mean",
        activation: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.in_dim, self.out_dim, self.num_relations = in_dim, out_dim, num_relations
        self.aggr = resolve_aggregation(aggr)
        self.activation = activation
        self.lin_self = nn.Linear(in_dim, out_dim)
        self.weight = nn.Parameter(torch.empty(num_relations, in_dim, out_dim))
        nn.init.xavier_uniform_(self.weight.view(-1, out_dim))
        with torch.no_grad():
            self.weight.mul_(num_relations**0.5)  # xavier over the stacked view shrank it

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        edge_type: torch.Tensor,
        edge_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        N = x.shape[0]
        src, dst = edge_index[0], edge_index[1]
        msg = x[src]
        if edge_weight is not None:
            msg = msg * edge_weight.unsqueeze(-1)
        # One group per (relation, target) pair, sorted by relation: aggregate all groups in
        # one scatter, then project each relation's contiguous block with its own W_r.
        groups, inv = torch.unique(edge_type * N + dst, return_inverse=True)
        agg = scatter(msg, inv, groups.shape[0], self.aggr)
        rel, tgt = groups // N, groups % N
        counts = torch.bincount(rel, minlength=self.num_relations).tolist()
        weights = self.weight.unbind(0)  # one backward node instead of one per relation
        parts = [blk @ weights[r] for r, blk in enumerate(torch.split(agg, counts)) if blk.shape[0]]
        out = self.lin_self(x)
        if parts:
            out = out.index_add(0, tgt, torch.cat(parts))
        return F.relu(out) if self.activation else out

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_dim}, {self.out_dim}, "
            f"num_relations={self.num_relations}, aggr='{self.aggr}')"
        )


# -- the KGQA model ---------------------------------------------------------------------


@dataclass
class KGQAConfig:
    """What is needed to rebuild a :class:`KGQANet` (saved as ``config.json``)."""

    relations: list[str]  # relation vocabulary; edge type 2k is relation k, 2k+1 its inverse
    hops: int = 2
    dim: int = 64
    layers: int = 2
    aggr: str = "mean"
    use_gnn: bool = True
    text_dim: int = 384
    ngram_buckets: int = 1 << 14
    max_neighbors: int = 64
    max_nodes: int = 2000
    # The topic may be its own answer ("the parent of X's child" is X): PathQuestion has such
    # round trips, MetaQA never does. Off, the topic is left out of the candidates.
    topic_answers: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def num_edge_types(self) -> int:
        return 2 * len(self.relations)


def question_ngrams(text: str, buckets: int) -> list[int]:
    """Hashed word 1-3-grams: word order the frozen sentence embedding may blur."""
    toks = ["<s>", *text.lower().replace("?", " ? ").split(), "</s>"]
    grams = list(toks)
    grams += [f"{a} {b}" for a, b in itertools.pairwise(toks)]
    grams += [f"{a} {b} {c}" for a, b, c in zip(toks, toks[1:], toks[2:], strict=False)]
    return [zlib.crc32(g.encode("utf-8")) % buckets for g in grams]


@dataclass
class GraphBatch:
    """Disjoint union of per-question subgraphs (tensors; see :class:`KGQANet` Shapes)."""

    ent_feat: torch.Tensor  # (N, text_dim), or (U, text_dim) distinct entities with ent_index
    topic: torch.Tensor  # (N,) 1.0 at topic entities
    node_batch: torch.Tensor  # (N,) question index of each node
    edge_index: torch.Tensor  # (2, E)
    edge_type: torch.Tensor  # (E,)
    q_feat: torch.Tensor  # (B, text_dim)
    q_ngrams: torch.Tensor  # (G,) flat bucket ids
    q_offsets: torch.Tensor  # (B,)
    labels: torch.Tensor | None = None  # (N,) 1.0 at answers
    # (N,) row of ent_feat for each node: subgraphs of one batch share entities, so each
    # distinct one is projected once and gathered (same values, less work)
    ent_index: torch.Tensor | None = None

    @property
    def num_questions(self) -> int:
        return int(self.q_feat.shape[0])


def group_log_softmax(logits: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Log-softmax of ``logits`` (N,) within each group (question) given by ``group`` (N,)."""
    gmax = scatter(logits.detach().unsqueeze(-1), group, n_groups, "max").squeeze(-1)
    z = (logits - gmax[group]).exp()
    denom = scatter(z.unsqueeze(-1), group, n_groups, "sum").squeeze(-1)
    return logits - gmax[group] - denom[group].clamp(min=1e-30).log()


class KGQANet(nn.Module):
    r"""Scores the entities of each question's subgraph as answers.

    For hops :math:`t = 1..T` the question :math:`\mathbf{q}` gives a relation attention
    :math:`a_t = \mathrm{softmax}_r(\mathbf{W}_t\mathbf{q} \cdot \mathbf{e}_r)`; the topic
    score follows it, :math:`s_t(i) = \min(1, \sum_{(j,r,i)} s_{t-1}(j)\, a_t(r))`, and a
    hop attention mixes :math:`s = \sum_t \beta_t s_t`. With ``use_gnn`` the entity states
    :math:`\mathbf{h}^{(0)} = [\mathbf{W}_e \mathbf{x}_i; s_i]` pass through ``layers``
    :class:`RelationalAggregation` layers whose messages are weighted by :math:`a_t(r)` and
    gated by :math:`\mathbf{q}`; the answer logit is
    :math:`\mathrm{MLP}(\mathbf{h}_i \odot \mathbf{q}) + \alpha\,\mathrm{logit}(s_i)`.

    Shapes:
        - **input:** a :class:`GraphBatch` with :math:`N` nodes, :math:`E` edges, :math:`B`
          questions; relation features :math:`(2R, F_{text})` are a buffer.
        - **output:** ``(logits (N,), s (N,), attn (T, B, 2R))``
    """

    def __init__(self, config: KGQAConfig, rel_feat: torch.Tensor | None = None) -> None:
        super().__init__()
        c = self.config = config
        R2, d = c.num_edge_types, c.dim
        self.register_buffer(
            "rel_feat", rel_feat if rel_feat is not None else torch.zeros(R2, c.text_dim)
        )
        self.q_lin = nn.Linear(c.text_dim, d)
        self.q_bag = nn.EmbeddingBag(c.ngram_buckets, d, mode="mean")
        nn.init.normal_(self.q_bag.weight, std=0.02)
        self.rel_lin = nn.Linear(c.text_dim, d)
        self.rel_id = nn.Embedding(R2, d)
        self.hop_q = nn.ModuleList([nn.Linear(d, d) for _ in range(c.hops)])
        self.hop_att = nn.Linear(d, c.hops)
        self.alpha = nn.Parameter(torch.tensor(1.0))
        if c.use_gnn:
            self.ent_lin = nn.Linear(c.text_dim, d - 2)
            self.gnn = nn.ModuleList(
                [RelationalAggregation(d, d, R2, c.aggr) for _ in range(c.layers)]
            )
            self.q_gate = nn.ModuleList([nn.Linear(d, d) for _ in range(c.layers)])
            self.out = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 1))

    def question(self, b: GraphBatch) -> torch.Tensor:
        return torch.tanh(self.q_lin(b.q_feat) + self.q_bag(b.q_ngrams, b.q_offsets))

    def forward(self, b: GraphBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.config
        q = self.question(b)  # (B, d)
        rel = self.rel_lin(self.rel_feat) + self.rel_id.weight  # (2R, d)
        scale = 1.0  # MiniLM relation vectors are unit-norm, so logits start moderate
        src, dst = b.edge_index[0], b.edge_index[1]
        ebatch = b.node_batch[src]
        N = b.topic.shape[0]
        s = b.topic
        hop_scores, attns = [], []
        for t in range(c.hops):
            a = torch.softmax(torch.tanh(self.hop_q[t](q)) @ rel.T * scale, dim=-1)  # (B, 2R)
            attns.append(a)
            w = a[ebatch, b.edge_type]  # (E,)
            s = scatter((s[src] * w).unsqueeze(-1), dst, N, "sum").squeeze(-1).clamp(max=1.0)
            hop_scores.append(s)
        beta = torch.softmax(self.hop_att(q), dim=-1)  # (B, T)
        S = torch.stack(hop_scores, dim=-1)  # (N, T)
        # Squeeze into (eps, 1-eps) without clamping, so unreached nodes still pass gradients.
        s_mix = (S * beta[b.node_batch]).sum(-1) * (1 - 2e-6) + 1e-6
        logits = self.alpha * (s_mix.log() - (1 - s_mix).log())
        if c.use_gnn:
            ent = self.ent_lin(b.ent_feat)
            if b.ent_index is not None:
                ent = ent[b.ent_index]
            h = torch.cat([ent, s_mix.unsqueeze(-1), b.topic.unsqueeze(-1)], -1)
            for i, layer in enumerate(self.gnn):
                w = attns[min(i, c.hops - 1)][ebatch, b.edge_type]
                gate = torch.sigmoid(self.q_gate[i](q))[b.node_batch]
                h = h + layer(h * gate, b.edge_index, b.edge_type, w)
            logits = logits + self.out(h * q[b.node_batch]).squeeze(-1)
        return logits, s_mix, torch.stack(attns)

    def loss(self, b: GraphBatch) -> torch.Tensor:
        """Softmax over each question's candidates (answers share the target) + BCE on ``s``.

        Candidates are the subgraph's entities, the topic only with ``config.topic_answers``.
        """
        assert b.labels is not None
        logits, s, _ = self(b)
        cand = b.topic < 0.5
        if self.config.topic_answers:
            cand = torch.ones_like(cand)
        logits = logits.masked_fill(~cand, -1e4)
        logp = group_log_softmax(logits, b.node_batch, b.num_questions)
        y = b.labels * cand
        n_ans = scatter(y.unsqueeze(-1), b.node_batch, b.num_questions, "sum").squeeze(-1)
        has = n_ans > 0
        per_q = -scatter((logp * y).unsqueeze(-1), b.node_batch, b.num_questions, "sum")
        ce = (per_q.squeeze(-1)[has] / n_ans[has]).mean() if has.any() else logits.sum() * 0
        bce = F.binary_cross_entropy(s[cand], y[cand])
        return ce + bce
