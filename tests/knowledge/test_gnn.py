"""GNN layer: resolver, shapes, permutation invariance, and a KGQA model whose loss falls."""

from __future__ import annotations

import pytest
import torch

from knowledge.gnn import (
    AGGREGATORS,
    KGQAConfig,
    KGQANet,
    RelationalAggregation,
    resolve_aggregation,
    scatter,
)

torch.set_num_threads(1)


def test_resolver_accepts_aliases_and_lists_choices() -> None:
    assert resolve_aggregation("MeanAggregation") == "mean"
    assert resolve_aggregation("add") == "sum"
    assert resolve_aggregation("max") == "max"
    with pytest.raises(ValueError, match=r"Could not resolve 'median' among choices \{"):
        resolve_aggregation("median")


def test_scatter_reducers() -> None:
    src = torch.tensor([[1.0], [3.0], [5.0]])
    idx = torch.tensor([0, 0, 2])
    assert scatter(src, idx, 4, "sum").squeeze(-1).tolist() == [4.0, 0.0, 5.0, 0.0]
    assert scatter(src, idx, 4, "mean").squeeze(-1).tolist() == [2.0, 0.0, 5.0, 0.0]
    assert scatter(-src, idx, 4, "max").squeeze(-1).tolist() == [-1.0, 0.0, -5.0, 0.0]


def _four_node_graph():
    torch.manual_seed(0)
    x = torch.randn(4, 8)
    edge_index = torch.tensor([[0, 1, 2, 3, 0, 2], [1, 2, 3, 0, 2, 1]])
    edge_type = torch.tensor([0, 1, 0, 2, 1, 2])
    edge_weight = torch.rand(6)
    return x, edge_index, edge_type, edge_weight


@pytest.mark.parametrize("aggr", AGGREGATORS)
def test_layer_shapes_and_permutation_invariance(aggr: str) -> None:
    x, ei, et, ew = _four_node_graph()
    layer = RelationalAggregation(8, 16, num_relations=3, aggr=aggr)
    out = layer(x, ei, et, ew)
    assert out.shape == (4, 16)
    assert "aggr='" + aggr + "'" in repr(layer)
    perm = torch.tensor([2, 0, 3, 1])  # new node i is old node perm[i]
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(4)
    out_p = layer(x[perm], inv[ei], et, ew)
    assert torch.allclose(out_p, out[perm], atol=1e-6)
    # Edge order does not matter either.
    e_perm = torch.tensor([5, 3, 1, 0, 4, 2])
    assert torch.allclose(layer(x, ei[:, e_perm], et[e_perm], ew[e_perm]), out, atol=1e-6)


def test_layer_relations_are_distinct_and_weights_matter() -> None:
    x, ei, et, _ = _four_node_graph()
    layer = RelationalAggregation(8, 8, num_relations=3, aggr="sum", activation=False)
    base = layer(x, ei, et)
    assert not torch.allclose(layer(x, ei, (et + 1) % 3), base)  # relation type changes output
    zero = layer(x, ei, et, torch.zeros(6))
    assert torch.allclose(zero, layer.lin_self(x))  # zero-weighted messages: only W_self h


def _toy_batch():
    from knowledge.gnn import GraphBatch

    # Two questions over tiny subgraphs; node 0 of each subgraph is the topic.
    torch.manual_seed(0)
    return GraphBatch(
        ent_feat=torch.nn.functional.normalize(torch.randn(7, 384), dim=-1),
        topic=torch.tensor([1.0, 0, 0, 1.0, 0, 0, 0]),
        node_batch=torch.tensor([0, 0, 0, 1, 1, 1, 1]),
        edge_index=torch.tensor([[0, 1, 0, 3, 4, 3, 5], [1, 2, 2, 4, 5, 6, 4]]),
        edge_type=torch.tensor([0, 2, 4, 0, 2, 4, 3]),
        q_feat=torch.nn.functional.normalize(torch.randn(2, 384), dim=-1),
        q_ngrams=torch.tensor([1, 2, 3, 4, 5]),
        q_offsets=torch.tensor([0, 3]),
        labels=torch.tensor([0, 0, 1.0, 0, 0, 1.0, 0]),
    )


@pytest.mark.parametrize("use_gnn", [True, False])
def test_kgqa_net_shapes_and_loss_falls(use_gnn: bool) -> None:
    torch.manual_seed(0)
    cfg = KGQAConfig(relations=["made_by", "located_in", "costs"], hops=2, dim=16,
                     use_gnn=use_gnn, ngram_buckets=64)  # fmt: skip
    rel_feat = torch.nn.functional.normalize(torch.randn(6, 384), dim=-1)  # like MiniLM
    model = KGQANet(cfg, rel_feat)
    b = _toy_batch()
    logits, s, attn = model(b)
    assert logits.shape == (7,) and s.shape == (7,) and attn.shape == (2, 2, 6)
    assert torch.allclose(attn.sum(-1), torch.ones(2, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    first = float(model.loss(b).detach())
    for _ in range(25):
        loss = model.loss(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first
    logits, _, _ = model(b)
    assert int(logits[:3].argmax()) == 2 and 3 + int(logits[3:].argmax()) == 5
