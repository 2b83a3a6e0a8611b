"""Graph QA end to end: data readers, subgraph caps, zero-shot and trained reasoners, CLI."""

from __future__ import annotations

import json

import pytest
import torch

from knowledge.errors import KnowledgeError, QueryError
from knowledge.graph import KnowledgeGraph
from knowledge.kgqa import CompiledGraph, GraphReasoner
from knowledge.kgqa_data import KGQADataError, parse_line, read_kgqa

torch.set_num_threads(1)

PRODUCTS = ["Lumo Kettle", "Brisk Toaster", "Nimbus Fan", "Orbit Lamp", "Pico Blender", "Vela Heater",
            "Zephyr Iron", "Koru Mixer", "Tala Grill", "Rook Speaker", "Miro Clock", "Sora Radio"]  # fmt: skip
MAKERS = ["Juniper Labs", "Pella Works", "Corvid Systems", "Alder Group"]
CITIES = ["Oslo", "Bergen", "Lisbon", "Kyoto"]


def toy_graph() -> KnowledgeGraph:
    kg = KnowledgeGraph()
    triples = []
    for i, p in enumerate(PRODUCTS):
        triples += [(p, "made_by", MAKERS[i % 4]), (p, "costs", f"${20 + i}")]
    triples += [(m, "located_in", c) for m, c in zip(MAKERS, CITIES, strict=True)]
    kg.add_triples(triples, doc_id="catalog.tsv")
    return kg


def toy_questions(products: list[str]) -> list[str]:
    lines = []
    for p in products:
        i = PRODUCTS.index(p)
        m, c = MAKERS[i % 4], CITIES[i % 4]
        lines += [f"who makes [{p}]?\t{m}", f"which company produces [{p}]\t{m}",
                  f"how much does [{p}] cost?\t${20 + i}", f"what is the price of [{p}]\t${20 + i}",
                  f"where is the maker of [{p}] located?\t{c}",
                  f"in which city is the company that makes [{p}]\t{c}"]  # fmt: skip
    return lines


def test_readers_parse_all_formats(tmp_path) -> None:
    ex = parse_line("what movies did [Tom Cullen] act in\tWeekend|Other", "f:1")
    assert ex.topic == "Tom Cullen" and ex.answers == ["Weekend", "Other"]
    assert ex.masked == "what movies did NE act in"
    pq = parse_line("the nation of ann_b 's couple ?\tuk(uk/usa/)\tann_b#spouse#x#nation#uk", "f:2")
    assert pq.answers == ["uk", "usa"] and pq.topic is None  # gold path never read
    js = parse_line('{"question": "who makes it", "answers": ["A"], "topic": "Lumo"}', "f:3")
    assert js.topic == "Lumo" and js.answers == ["A"]
    for bad in ["no tab here", '{"question": 3}', '{"question": "q", "answers": []}', "\t\tx"]:
        with pytest.raises(KGQADataError):
            parse_line(bad, "f:9")
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\x00\x01garbage\xff")
    with pytest.raises(KGQADataError, match="binary"):
        read_kgqa(binary)
    with pytest.raises(KGQADataError, match="not found"):
        read_kgqa(tmp_path / "missing.txt")


def test_subgraph_is_capped_around_a_hub() -> None:
    kg = KnowledgeGraph()
    kg.add_triples([(f"Item {i}", "in", "Hub") for i in range(300)], doc_id="d")
    kg.add_triples([("Start", "near", "Hub")], doc_id="d")
    cg = CompiledGraph(kg)
    nodes, src, dst, typ = cg.subgraph([cg.index[kg.resolve("Start")]], hops=2, max_neighbors=20)
    assert len(nodes) <= 1 + 1 + 20 and len(src) == len(dst) == len(typ) <= 1 + 20
    assert int(nodes[0]) == cg.index[kg.resolve("Start")]
    nodes2, *_ = cg.subgraph(
        [cg.index[kg.resolve("Start")]], hops=2, max_neighbors=500, max_nodes=50
    )
    assert len(nodes2) == 50


def test_zero_shot_reasoner_answers_one_and_two_hops(embedder) -> None:
    kg = toy_graph()
    r = GraphReasoner(kg, embedder)
    one = r.answer("Who makes the Lumo Kettle?")
    assert one[0].entity == "Juniper Labs"
    assert one[0].path == ["Lumo Kettle", "-made_by->", "Juniper Labs"]
    assert one[0].doc_ids == ["catalog.tsv"]
    two = r.answer("Where is the maker of the Brisk Toaster located?")
    assert two[0].entity == "Bergen"
    assert two[0].path == ["Brisk Toaster", "-made_by->", "Pella Works", "-located_in->", "Bergen"]
    inverse = r.answer("What does Corvid Systems make?", k=5)
    assert {"Nimbus Fan", "Tala Grill"} & {a.entity for a in inverse}
    assert r.answer("what a lovely day") == []
    # a follow-up with no entity in the text uses the conversation's entities
    assert r.answer("how much does it cost?", context_entities=["Orbit Lamp"])[0].entity == "$23"
    with pytest.raises(QueryError):
        r.answer("   ")
    with pytest.raises(QueryError):
        r.answer("x" * 5000)


def test_trained_reasoner_answers_held_out_products(embedder, tmp_path) -> None:
    from knowledge.kgqa_data import parse_line
    from knowledge.kgqa_train import hits_at_1, predict, train_gnn

    kg = toy_graph()
    train = [parse_line(x) for x in toy_questions(PRODUCTS[:9])]
    test = [parse_line(x) for x in toy_questions(PRODUCTS[9:])]
    calls = []
    res = train_gnn(kg, train, embedder, tmp_path / "gnn", hops=2, epochs=8, batch_size=9,
                    lr=1e-2, dim=32, show_progress=False,
                    on_progress=lambda d, t, info: calls.append((d, t)))  # fmt: skip
    assert calls[-1][0] == calls[-1][1] == len(res.losses)
    assert sum(res.losses[-5:]) < sum(res.losses[:5])
    assert (tmp_path / "gnn" / "model.safetensors").is_file()
    assert (tmp_path / "gnn" / "loss.png").stat().st_size > 1000
    assert hits_at_1(predict(res.model, kg, test, embedder), test, kg) >= 0.8
    r = GraphReasoner(kg, embedder, model_dir=tmp_path / "gnn")
    assert r.model is not None
    a = r.answer("where is the maker of the Sora Radio located?")
    assert a[0].entity == "Kyoto"
    assert a[0].path == ["Sora Radio", "-made_by->", "Alder Group", "-located_in->", "Kyoto"]
    assert r.answer("who makes [Miro Clock]?")[0].entity == "Corvid Systems"


def test_damaged_model_is_a_clear_error(tmp_path, embedder) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(KnowledgeError, match="could not load the GNN model"):
        GraphReasoner(toy_graph(), embedder, model_dir=tmp_path)


def test_cli_train_and_eval(project_dir, tmp_path) -> None:
    from typer.testing import CliRunner

    from assistant.cli import app

    kb = tmp_path / "kb.tsv"
    kb.write_text("\n".join("\t".join(t[:3]) for t in toy_graph().facts()) + "\n", encoding="utf-8")
    data = tmp_path / "train.txt"
    data.write_text("\n".join(toy_questions(PRODUCTS[:2])) + "\n", encoding="utf-8")
    runner = CliRunner()
    args = ["train", "gnn", "--kgqa", str(data), "--kb", str(kb), "--project", str(project_dir),
            "--epochs", "1", "--dim", "16"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    gnn_dir = project_dir / "models" / "gnn"
    assert (gnn_dir / "loss.png").is_file() and (gnn_dir / "model.safetensors").is_file()
    assert json.loads((gnn_dir / "config.json").read_text())["relations"] == [
        "costs", "located_in", "made_by"]  # fmt: skip
    res = runner.invoke(app, ["eval", "kgqa", "--data", str(data), "--kb", str(kb),
                              "--project", str(project_dir), "--out", str(tmp_path / "rep")])  # fmt: skip
    assert res.exit_code == 0, res.output + repr(res.exception)
    report = json.loads((tmp_path / "rep" / "kgqa_eval.json").read_text())
    assert report["questions"] == 12 and 0.0 <= report["hits_at_1"] <= 1.0
    assert "hits@1" in (tmp_path / "rep" / "kgqa_eval.md").read_text()
    junk = tmp_path / "junk.txt"
    junk.write_bytes(b"\x00\x00\x00")
    res = runner.invoke(app, ["train", "gnn", "--kgqa", str(junk), "--kb", str(kb),
                              "--project", str(project_dir)])  # fmt: skip
    assert res.exit_code != 0 and "binary" in str(res.exception)
    res = runner.invoke(app, [*args, "--aggr", "median"])
    assert res.exit_code != 0 and "Could not resolve" in str(res.exception)


def test_distinct_names_keep_curated_entities_apart() -> None:
    from knowledge.kgqa_data import KGQAExample, distinct_names, rename

    kb = [("The Unknown", "starred_actors", "Lon Chaney"), ("Unknown", "starred_actors", "Liam Neeson"),
          ("Unknown", "release_year", "2011"), ("Hotel", "has_tags", "hotel"),
          ("Help!", "starred_actors", "John Lennon"), ("The Help", "starred_actors", "Emma Stone"),
          ("The Help", "release_year", "2011")]  # fmt: skip
    merged = KnowledgeGraph()
    merged.add_triples(kb, doc_id="kb")
    assert merged.resolve("The Unknown") == merged.resolve("Unknown")  # why the renames exist
    names = distinct_names(kb)
    assert set(names) == {"The Unknown", "hotel", "Help!"}  # the most frequent keeps its name
    qs = [KGQAExample("who acted in [The Unknown]", ["Lon Chaney"], "The Unknown"),
          KGQAExample("describe [Hotel]", ["hotel"], "Hotel")]  # fmt: skip
    kg = KnowledgeGraph()
    kg.add_triples(rename(kb, qs, names), doc_id="kb")
    assert qs[0].topic == names["The Unknown"] and qs[1].answers == [names["hotel"]]
    assert len({kg.resolve(n) for n in ["Unknown", "Help", qs[0].topic, names["Help!"]]}) == 4
    actors = {kg.name(v) for _, v in kg.g.out_edges(kg.resolve(qs[0].topic))}
    assert actors == {"Lon Chaney"}
    assert kg.g.has_edge(kg.resolve("Hotel"), kg.resolve(qs[1].answers[0]))  # no self-loop lost


def test_round_trip_questions_may_answer_their_own_topic(embedder) -> None:
    """Round trips ("the parent of X's child" is X) keep the topic as a candidate."""
    from knowledge.kgqa_train import hits_at_1, predict, train_gnn

    people = ["Ada", "Bram", "Cleo", "Dag", "Edda", "Finn", "Greta", "Hakon", "Ilse", "Jon"]
    kg = KnowledgeGraph()
    kg.add_triples([(p, "children", f"{p} Junior") for p in people], doc_id="family")
    kg.add_triples([(f"{p} Junior", "parents", p) for p in people], doc_id="family")

    def questions(names: list[str]) -> list:
        lines = []
        for p in names:
            lines += [f"who is the parent of [{p}] 's child\t{p}", f"who is the child of [{p}]\t{p} Junior",
                      f"the mom of the son of [{p}]\t{p}"]  # fmt: skip
        return [parse_line(x) for x in lines]

    train, test = questions(people[:7]), questions(people[7:])
    res = train_gnn(kg, train, embedder, None, hops=2, epochs=10, batch_size=7, lr=1e-2, dim=32,
                    show_progress=False)  # fmt: skip
    assert res.model.config.topic_answers  # two in three training questions are round trips
    assert hits_at_1(predict(res.model, kg, test, embedder), test, kg) == 1.0
    plain = train_gnn(kg, [q for q in train if "Junior" in q.answers[0]], embedder, None, hops=2,
                      epochs=1, dim=16, show_progress=False)  # fmt: skip
    assert not plain.model.config.topic_answers
    assert all(
        p != q.topic for p, q in zip(predict(plain.model, kg, test, embedder), test, strict=True)
    )
