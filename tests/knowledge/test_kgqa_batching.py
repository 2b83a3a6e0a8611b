"""Batched KGQA: a disjoint-union batch computes what one question at a time computes,
and the per-question cache changes nothing but the speed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from knowledge.gnn import KGQAConfig, KGQANet, group_log_softmax
from knowledge.kgqa_train import QuestionCache, collate

torch.set_num_threads(1)


def _three_subgraphs():
    """Subgraphs of 2, 5 and 4 nodes over a 12-entity table (topic first; entity 4 in two)."""
    rng = np.random.default_rng(0)
    ent = rng.standard_normal((12, 384)).astype(np.float32)
    ent /= np.linalg.norm(ent, axis=1, keepdims=True)
    subs = [
        (np.array([3, 7]), np.array([0, 1]), np.array([1, 0]), np.array([0, 1])),
        (np.array([0, 4, 5, 9, 11]), np.array([0, 1, 0, 2, 3, 4, 1]),
         np.array([1, 2, 2, 3, 4, 0, 3]), np.array([0, 2, 4, 1, 3, 5, 2])),
        (np.array([8, 2, 6, 4]), np.array([0, 1, 1, 2]), np.array([1, 2, 3, 3]),
         np.array([2, 0, 4, 5])),
    ]  # fmt: skip
    grams = [np.array([1, 5, 9]), np.array([2, 3]), np.array([7, 8, 9, 10, 11])]
    labels = [np.array([0, 1.0], np.float32), np.array([0, 0, 1.0, 0, 1.0], np.float32),
              np.array([0, 0, 0, 1.0], np.float32)]  # fmt: skip
    q = rng.standard_normal((3, 384)).astype(np.float32)
    return ent, subs, grams, labels, q


@pytest.mark.parametrize("aggr", ["mean", "max"])
def test_batched_forward_equals_one_question_at_a_time(aggr: str) -> None:
    torch.manual_seed(0)
    cfg = KGQAConfig(relations=["a", "b", "c"], hops=2, dim=16, aggr=aggr, ngram_buckets=64)
    model = KGQANet(cfg, torch.nn.functional.normalize(torch.randn(6, 384), dim=-1)).eval()
    ent, subs, grams, labels, q = _three_subgraphs()
    b = collate(subs, grams, labels, ent, q)
    assert b.node_batch.tolist() == [0] * 2 + [1] * 5 + [2] * 4
    assert b.topic.nonzero().squeeze(-1).tolist() == [0, 2, 7]
    assert b.edge_index.max() == 10 and b.edge_index[:, 2:9].min() == 2  # offsets applied
    assert b.ent_index is not None and b.ent_feat.shape[0] == 10  # 11 nodes, 10 entities
    nodes = np.concatenate([sub[0] for sub in subs])
    assert torch.equal(b.ent_feat[b.ent_index], torch.from_numpy(ent[nodes]))
    with torch.no_grad():
        logits, s, attn = model(b)
        # projecting each distinct entity once and gathering = projecting every node
        full = dataclasses.replace(b, ent_feat=torch.from_numpy(ent[nodes]), ent_index=None)
        assert torch.allclose(model(full)[0], logits, atol=1e-5)
        logp = group_log_softmax(logits, b.node_batch, 3)
        start = 0
        for k in range(3):
            one = collate([subs[k]], [grams[k]], [labels[k]], ent, q[k : k + 1])
            lk, sk, ak = model(one)
            n = subs[k][0].shape[0]
            assert torch.allclose(logits[start : start + n], lk, atol=1e-5)
            assert torch.allclose(s[start : start + n], sk, atol=1e-6)
            assert torch.allclose(attn[:, k], ak[:, 0], atol=1e-6)
            assert torch.allclose(logp[start : start + n], torch.log_softmax(lk, 0), atol=1e-5)
            start += n
    # the batched loss still trains: it falls on these three questions
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    first = float(model.loss(b).detach())
    for _ in range(20):
        loss = model.loss(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first


def test_cached_items_equal_fresh_extraction_and_budget_holds(embedder) -> None:
    from knowledge.kgqa import CompiledGraph
    from knowledge.kgqa_data import parse_line
    from knowledge.kgqa_train import prepare
    from tests.knowledge.test_kgqa import PRODUCTS, toy_graph, toy_questions

    kg = toy_graph()
    cg = CompiledGraph(kg, kg.relations())
    cfg = KGQAConfig(relations=kg.relations(), hops=2, max_neighbors=3, max_nodes=6)
    prep = prepare([ex for x in toy_questions(PRODUCTS[:4]) if (ex := parse_line(x))], kg, cg)
    _, ent = kg.entity_embeddings(embedder)
    q = np.zeros((len(prep), 384), np.float32)
    big, none = QuestionCache(cg, cfg, 1 << 20), QuestionCache(cg, cfg, 0)
    keys = np.arange(len(prep))
    b1, b2 = big.batch(keys, prep, ent, q), big.batch(keys, prep, ent, q)  # 2nd from the cache
    b0 = none.batch(keys, prep, ent, q)
    assert none.nbytes == 0 and not none.items
    assert 0 < big.nbytes <= 1 << 20 and len(big.subs) == 4  # six questions per product
    for other in (b2, b0):
        for f in ("ent_feat", "ent_index", "topic", "node_batch", "edge_index", "edge_type",
                  "q_ngrams", "q_offsets", "labels"):  # fmt: skip
            assert torch.equal(getattr(b1, f), getattr(other, f)), f
    for i, p in enumerate(prep):
        assert p.topic is not None
        fresh = cg.subgraph([p.topic], 2, 3, 6, seed=p.topic)
        for a, c in zip(big.item(i, p)[0], fresh, strict=True):
            assert np.array_equal(a, c)
    assert b1.labels is not None and float(b1.labels.sum()) == len(prep)  # one answer each


def test_training_with_or_without_cache_is_identical(embedder) -> None:
    from knowledge.kgqa_data import parse_line
    from knowledge.kgqa_train import predict, train_gnn
    from tests.knowledge.test_kgqa import PRODUCTS, toy_graph, toy_questions

    kg = toy_graph()
    train = [ex for x in toy_questions(PRODUCTS[:6]) if (ex := parse_line(x))]
    test = [ex for x in toy_questions(PRODUCTS[6:8]) if (ex := parse_line(x))]

    def fit(cache_mb: float):
        return train_gnn(kg, train, embedder, hops=2, epochs=2, batch_size=8, lr=1e-2, dim=16,
                         show_progress=False, cache_mb=cache_mb)  # fmt: skip

    cached, fresh = fit(1024.0), fit(0.0)
    assert cached.losses == pytest.approx(fresh.losses, rel=1e-5)
    assert cached.cache_bytes > 0 and fresh.cache_bytes == 0
    assert cached.examples_seen == 2 * len(train) and cached.setup_seconds <= cached.seconds
    one = predict(cached.model, kg, test, embedder, batch_size=1)
    assert predict(cached.model, kg, test, embedder, batch_size=64) == one
    assert all(p is not None for p in one)


def _reference_subgraph(cg, topics, hops, max_neighbors, max_nodes, seed):
    """The set-operation extraction the scratch-array version replaced (kept as the oracle)."""
    rng = np.random.default_rng(seed)
    nodes = np.asarray(list(dict.fromkeys(int(t) for t in topics)), dtype=np.int64)
    frontier, expanded = nodes, np.zeros(0, dtype=np.int64)
    es, ed, et = [], [], []
    for _ in range(hops):
        frontier = frontier[~np.isin(frontier, expanded)]
        if frontier.size == 0:
            break
        starts, deg = cg.indptr[frontier], np.diff(cg.indptr)[frontier]
        total = int(deg.sum())
        if total == 0:
            break
        offs = np.repeat(np.cumsum(deg) - deg, deg)
        grp = np.repeat(np.arange(frontier.size), deg)
        pos = np.arange(total) - offs + np.repeat(starts, deg)
        if int(deg.max()) > max_neighbors:
            perm = np.lexsort((rng.random(total), grp))
            keep = (np.arange(total) - offs) < max_neighbors
            pos, grp = pos[perm][keep], grp[perm][keep]
        u, v, t = frontier[grp], cg.dst[pos], cg.typ[pos]
        new = v[~np.isin(v, nodes)]
        _, first = np.unique(new, return_index=True)
        new = new[np.sort(first)][: max(max_nodes - nodes.size, 0)]
        nodes = np.concatenate([nodes, new])
        keep = np.isin(v, nodes)
        es.append(u[keep])
        ed.append(v[keep])
        et.append(t[keep])
        expanded = np.concatenate([expanded, frontier])
        frontier = new
    if not es:
        z = np.zeros(0, dtype=np.int64)
        return nodes, z, z, z
    sorter = np.argsort(nodes)
    src, dst = np.concatenate(es), np.concatenate(ed)
    loc_src = sorter[np.searchsorted(nodes, src, sorter=sorter)]
    loc_dst = sorter[np.searchsorted(nodes, dst, sorter=sorter)]
    return nodes, loc_src, loc_dst, np.concatenate(et)


def test_subgraph_extraction_matches_the_reference_with_hubs_and_caps() -> None:
    from knowledge.graph import KnowledgeGraph
    from knowledge.kgqa import CompiledGraph, compiled_graph

    rng = np.random.default_rng(1)
    triples = {(f"e{a}", f"r{r}", f"e{b}") for a, r, b in zip(
        rng.zipf(1.6, 900) % 120, rng.integers(0, 4, 900), rng.integers(0, 120, 900),
        strict=True) if a != b}  # fmt: skip
    kg = KnowledgeGraph()
    kg.add_triples(sorted(triples), doc_id="random")
    cg = CompiledGraph(kg)
    assert int(np.diff(cg.indptr).max()) > 8  # hubs: the sampling branch runs
    for topic in range(0, len(cg.nodes), 7):
        for hops, cap, max_nodes in [(1, 8, 50), (2, 8, 40), (3, 5, 1000), (2, 64, 2000)]:
            got = cg.subgraph([topic, topic], hops, cap, max_nodes, seed=topic)
            want = _reference_subgraph(cg, [topic], hops, cap, max_nodes, topic)
            for g, w in zip(got, want, strict=True):
                assert np.array_equal(g, w)
    assert cg._local is not None and cg._done is not None
    assert bool((cg._local == -1).all()) and not cg._done.any()  # scratch left clean
    with pytest.raises(ValueError, match="out of range"):
        cg.subgraph([len(cg.nodes)], 2)
    assert cg.subgraph([0], 1)[0][0] == 0  # still usable after the error
    assert compiled_graph(kg) is compiled_graph(kg)
    kg.add_triples([("e1", "r0", "e2b")], doc_id="more")
    assert compiled_graph(kg).version == kg._version  # rebuilt after a change
