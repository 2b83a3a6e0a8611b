"""The demo assistant's content parses, meets the issue's minimums and is consistent."""

import csv
import json
import re

from assistant.config import load_config, load_intents
from assistant.project import DEMO_ROOT

K = DEMO_ROOT / "knowledge"


def norm(s: str) -> str:
    return re.sub(r"[^a-z0-9 ]+", "", s.lower()).strip()


def tsv(path, header):
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").rstrip("\n").split("\n")]
    assert rows[0] == header, path
    assert all(len(r) == len(header) and all(c.strip() for c in r) for r in rows[1:]), path
    return rows[1:]


def jsonl(path):
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def test_files_are_utf8_with_lf():
    for p in DEMO_ROOT.rglob("*"):
        if p.is_file() and "__pycache__" not in p.parts:
            data = p.read_bytes()
            data.decode("utf-8")
            assert b"\r" not in data, p


def test_config_and_intents():
    assert load_config(DEMO_ROOT / "llmos.yaml").name == "Juniper Home Assistant"
    intents = load_intents(DEMO_ROOT / "intents.yaml")
    held = load_intents(DEMO_ROOT / "eval" / "router.yaml")
    for required in [
        "order_status",
        "refunds",
        "opening_hours",
        "human_agent",
        "greeting",
        "thanks",
    ]:
        assert required in intents
    seen: dict[str, str] = {}
    for name, spec in [*intents.items(), *(("eval:" + n, s) for n, s in held.items())]:
        for e in spec.examples:
            assert norm(e) not in seen, f"{e!r} in {name} and {seen.get(norm(e))}"
            seen[norm(e)] = name
    assert set(held) == set(intents)


def test_knowledge_minimums_and_consistency():
    with (K / "faq.csv").open(newline="", encoding="utf-8") as fh:
        faq = list(csv.DictReader(fh))
    assert len(faq) >= 12 and all(r["question"] and r["answer"] for r in faq)
    docs = sorted((K / "docs").iterdir())
    assert len(docs) >= 6
    triples = tsv(K / "triples.tsv", ["head", "relation", "tail"])
    entities = {t[0] for t in triples} | {t[2] for t in triples}
    faq_text = " ".join(r["question"] + " " + r["answer"] for r in faq)
    doc_text = {p.name: p.read_text(encoding="utf-8") for p in docs}
    for r in jsonl(DEMO_ROOT / "eval" / "qa.jsonl"):
        src = faq_text if r["source"] == "faq" else doc_text[r["source"]]
        assert r["answer"] in src, r
    for r in jsonl(DEMO_ROOT / "eval" / "kgqa.jsonl"):
        assert all(a in entities for a in r["answers"]), r
    faq_q = {r["question"] for r in faq}
    for r in jsonl(DEMO_ROOT / "eval" / "retrieval.jsonl"):
        assert all(rel in doc_text or rel in faq_q for rel in r["relevant"]), r


def test_phrasebook_and_corpus():
    phrases = tsv(DEMO_ROOT / "translation" / "phrasebook.tsv", ["en", "de", "fr"])
    assert len(phrases) >= 60
    corpus = sorted((DEMO_ROOT / "corpus").glob("*.txt"))
    assert sum(p.stat().st_size for p in corpus) > 100_000
    dialogues = jsonl(DEMO_ROOT / "corpus" / "dialogues.jsonl")
    assert len(dialogues) >= 150
    for d in dialogues:
        roles = [m["role"] for m in d["messages"]]
        assert roles[0] == "user" and "assistant" in roles
