"""KnowledgeGraph: building from triples and prose, aliases, retraction, persistence, linking."""

from __future__ import annotations

import json

import numpy as np
import pytest

from knowledge.errors import KnowledgeError
from knowledge.graph import GraphError, KnowledgeGraph, normalize

TRIPLES = [
    ("Lumo Kettle", "made by", "Juniper Labs"),
    ("Juniper Labs", "located in", "Oslo"),
    ("Lumo Kettle", "costs", "$49"),
    ("Brisk Toaster", "made_by", "Pella Works"),
]

PROSE = """The Lumo Kettle is made by Juniper Labs. Juniper Labs is located in Oslo, Norway.
The Lumo Kettle costs $49. The Lumo Kettle has a warranty of 2 years.
Juniper Labs, also known as Juniper Laboratories, was founded in 2011.
Q: How do I descale the Brisk Toaster?
A: Use vinegar."""


def test_normalize_merges_case_punctuation_articles() -> None:
    assert normalize("The Lumo Kettle.") == normalize("lumo  kettle") == "lumo kettle"
    assert normalize("frederica_of_mecklenburg-strelitz") == "frederica of mecklenburg strelitz"
    assert normalize("2.5 litres") == "2.5 litres"


def test_build_from_triples_and_aliases() -> None:
    kg = KnowledgeGraph()
    assert kg.add_triples(TRIPLES, doc_id="t.tsv") == 4
    assert kg.stats() == {"entities": 6, "facts": 4}
    # Same fact again from another doc adds support, not a new fact; case/article variants merge.
    assert kg.add_triples([("the lumo kettle", "Made by", "JUNIPER LABS.")], doc_id="b.md") == 0
    assert kg.stats()["entities"] == 6
    facts = {(s, r, o): docs for s, r, o, docs in kg.facts()}
    assert facts[("Lumo Kettle", "made_by", "Juniper Labs")] == ["b.md", "t.tsv"]
    # An explicit alias relation merges two existing entities and moves their facts.
    kg.add_triples([("Pella", "located_in", "Bergen")], doc_id="c.tsv")
    kg.add_triples([("Pella Works", "also_known_as", "Pella")], doc_id="c.tsv")
    assert kg.resolve("pella") == kg.resolve("Pella Works")
    assert ("Pella Works", "located_in", "Bergen") in {(s, r, o) for s, r, o, _ in kg.facts()}


def test_build_from_prose_finds_pattern_relations() -> None:
    kg = KnowledgeGraph()
    kg.add_document("kettle.md", PROSE)
    facts = {(s, r, o) for s, r, o, _ in kg.facts()}
    assert ("Lumo Kettle", "made_by", "Juniper Labs") in facts
    assert ("Juniper Labs", "located_in", "Oslo") in facts
    assert ("Lumo Kettle", "costs", "$49") in facts
    assert ("Lumo Kettle", "warranty", "2 years") in facts
    assert ("Juniper Labs", "founded_in", "2011") in facts
    # alias from prose, and the FAQ subject is an entity
    assert kg.resolve("Juniper Laboratories") == kg.resolve("Juniper Labs")
    assert kg.resolve("Brisk Toaster") is not None
    assert kg.resolve("Use") is None  # a sentence-initial capital is not an entity


def test_negated_statement_is_not_a_fact() -> None:
    kg = KnowledgeGraph()
    kg.add_document("d", "The Lumo Kettle is not made by Pella Works.")
    assert ("Lumo Kettle", "made_by", "Pella Works") not in {(s, r, o) for s, r, o, _ in kg.facts()}


def test_remove_document_retracts_only_solely_supported_facts() -> None:
    kg = KnowledgeGraph()
    kg.add_triples(TRIPLES, doc_id="a")
    kg.add_triples([("Lumo Kettle", "made_by", "Juniper Labs"), ("Oslo", "in", "Norway")], "b")
    assert kg.remove_document("a") == 3
    facts = {(s, r, o): d for s, r, o, d in kg.facts()}
    assert facts == {
        ("Lumo Kettle", "made_by", "Juniper Labs"): ["b"],
        ("Oslo", "in", "Norway"): ["b"],
    }
    # orphans ($49, Brisk Toaster, Pella Works) are gone, linked entities stay
    assert kg.resolve("$49") is None and kg.resolve("Brisk Toaster") is None
    assert kg.resolve("Juniper Labs") is not None
    assert kg.remove_document("b") == 2
    assert kg.stats() == {"entities": 0, "facts": 0}


def test_json_round_trip_is_atomic(tmp_path) -> None:
    kg = KnowledgeGraph()
    kg.add_triples(TRIPLES, doc_id="t.tsv")
    kg.add_triples([("Juniper Labs", "aka", "JL")], doc_id="t.tsv")
    path = tmp_path / "kg" / "graph.json"
    kg.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["graph.json"]  # no temp files left
    back = KnowledgeGraph.load(path)
    assert sorted(back.facts()) == sorted(kg.facts())
    assert back.resolve("jl") == back.resolve("Juniper Labs")
    assert KnowledgeGraph.load(tmp_path / "missing.json").stats() == {"entities": 0, "facts": 0}


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"\x00\x01\x02\xff\xfe",
        b"[1, 2, 3]",
        json.dumps({"format": "llmos-graph", "version": 1, "nodes": [{"id": 3}]}).encode(),
        json.dumps(
            {
                "format": "llmos-graph",
                "version": 1,
                "nodes": [],
                "edges": [{"s": "a", "r": "x", "o": "b", "docs": []}],
            }
        ).encode(),
        b'<?xml version="1.0"?><graphml><junk/></graphml>',
    ],
)
def test_junk_graph_file_raises_clear_error(tmp_path, payload: bytes) -> None:
    path = tmp_path / "graph.json"
    path.write_bytes(payload)
    with pytest.raises(GraphError) as info:
        KnowledgeGraph.load(path)
    assert isinstance(info.value, KnowledgeError)
    assert "\n" not in str(info.value) and "graph" in str(info.value)


@pytest.mark.parametrize(
    "triples",
    [
        [("a", "b")],
        [("", "r", "b")],
        [("a", "r", None)],
        [("x" * 400, "r", "b")],
        [("a", "!!!", "b")],
        "a\tb\tc",
    ],
)
def test_bad_triples_raise_and_leave_graph_unchanged(triples) -> None:
    kg = KnowledgeGraph()
    kg.add_triples(TRIPLES, doc_id="ok")
    before = sorted(kg.facts())
    with pytest.raises(GraphError):
        kg.add_triples(triples, doc_id="bad")
    assert sorted(kg.facts()) == before


def test_binary_document_is_rejected() -> None:
    with pytest.raises(GraphError):
        KnowledgeGraph().add_document("x.bin", "abc\x00def")


def test_link_exact_and_fuzzy() -> None:
    kg = KnowledgeGraph()
    kg.add_triples(TRIPLES, doc_id="t")
    assert kg.link("Who makes the Lumo Kettle?")[0] == ("Lumo Kettle", 1.0)
    name, score = kg.link("who makes the lumo ketle")[0]  # typo
    assert name == "Lumo Kettle" and 0.8 <= score < 1.0
    assert kg.link("what is the weather like") == []
    assert kg.link("") == []


def test_link_by_embedding_paraphrase(embedder) -> None:
    kg = KnowledgeGraph()
    kg.add_triples([*TRIPLES, ("Oslo", "capital of", "Norway")], doc_id="t")
    links = kg.link("how much is the kettle from Lumo?", embedder)
    assert links[0][0] == "Lumo Kettle"
    links = kg.link("tell me about the toaster called Brisk", embedder)
    assert links[0][0] == "Brisk Toaster"


def test_entity_embeddings_are_persisted_and_reused(tmp_path, fake_embedder) -> None:
    kg = KnowledgeGraph()
    kg.add_triples(TRIPLES, doc_id="t")
    nodes, mat = kg.entity_embeddings(fake_embedder)
    assert mat.shape == (len(nodes), 384) and mat.dtype == np.float32
    kg.save(tmp_path / "graph.json")
    assert (tmp_path / "graph.entities.safetensors").is_file()
    back = KnowledgeGraph.load(tmp_path / "graph.json")
    calls = fake_embedder.calls
    nodes2, mat2 = back.entity_embeddings(fake_embedder)
    assert fake_embedder.calls == calls  # read from the safetensors cache, not re-encoded
    assert nodes2 == nodes and np.allclose(mat2, mat)
    back.add_triples([("New Thing", "made_by", "Juniper Labs")], doc_id="n")
    _, mat3 = back.entity_embeddings(fake_embedder)  # graph changed: cache not trusted
    assert fake_embedder.calls > calls and mat3.shape[0] == mat.shape[0] + 1
