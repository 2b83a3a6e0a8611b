"""`llmos ingest`, `forget`, `eval qa`, `eval retrieval` through the Typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.knowledge._kb_support import FakeEmbedder, make_corpus

runner = CliRunner()


@pytest.fixture
def cli(monkeypatch):
    from assistant import cli as cli_mod
    from assistant.commands import knowledge_cmds

    monkeypatch.setattr(knowledge_cmds, "_embedder", lambda store: FakeEmbedder())
    return cli_mod.app


def test_ingest_forget_and_errors(cli, project_dir: Path) -> None:
    content = make_corpus(project_dir / "knowledge" / "extra")
    (content / "junk.txt").write_bytes(b"\x00\x01binary")
    res = runner.invoke(cli, ["ingest", "--project", str(project_dir)])
    assert res.exit_code == 0, res.output
    assert "added 7" in res.output and "skipped 1" in res.output
    assert "junk.txt" in res.output and "binary" in res.output
    again = runner.invoke(cli, ["ingest", str(content), "--project", str(project_dir)])
    assert "unchanged 6" in again.output
    gone = runner.invoke(
        cli, ["forget", str(content / "docs" / "notes.txt"), "--project", str(project_dir)]
    )
    assert gone.exit_code == 0 and "forgot" in gone.output
    res = runner.invoke(
        cli, ["forget", str(content / "docs" / "notes.txt"), "--project", str(project_dir)]
    )
    assert res.exit_code != 0 and "not in the knowledge base" in str(res.exception)
    res = runner.invoke(cli, ["ingest", "/nonexistent/x.md", "--project", str(project_dir)])
    assert res.exit_code != 0 and "no such file" in str(res.exception)


def test_eval_commands_write_reports(cli, project_dir: Path, tmp_path: Path) -> None:
    make_corpus(project_dir / "knowledge" / "extra")
    assert runner.invoke(cli, ["ingest", "--project", str(project_dir)]).exit_code == 0
    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        json.dumps({"question": "How do I reset my password?", "answer": "Reset password",
                    "source": "faq.csv"}) + "\n"
        + json.dumps({"question": "zebra quantum saxophone", "answer": "nothing"}) + "\n"
    )  # fmt: skip
    res = runner.invoke(cli, ["eval", "qa", "--data", str(qa), "--project", str(project_dir)])
    assert res.exit_code == 0, res.output
    assert "answer accuracy 0.5000" in res.output and "source accuracy 1.0000" in res.output
    report = json.loads((project_dir / "reports" / "qa_eval.json").read_text())
    assert report["n"] == 2 and (project_dir / "reports" / "qa_eval.md").is_file()
    rq = tmp_path / "ret.jsonl"
    rq.write_text(json.dumps({"query": "descale the kettle", "relevant": ["kettle.md"]}) + "\n")
    res = runner.invoke(
        cli, ["eval", "retrieval", "--data", str(rq), "--project", str(project_dir)]
    )
    assert res.exit_code == 0, res.output
    rep = json.loads((project_dir / "reports" / "retrieval_eval.json").read_text())
    assert rep["MAP"] == 1.0 and rep["recall@5"] == 1.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "x"}\n')
    res = runner.invoke(
        cli, ["eval", "retrieval", "--data", str(bad), "--project", str(project_dir)]
    )
    assert res.exit_code != 0 and "line 1 needs the keys" in str(res.exception)


def test_source_accuracy_matches_file_names_and_stems():
    from knowledge.base import Citation
    from knowledge.evaluation import _cites

    faq = Citation("faq", "How long do refunds take?", "knowledge/faq.csv")
    doc = Citation("document", "Warranty", "knowledge/docs/warranty.md")
    assert _cites([faq], "faq") and _cites([faq], "faq.csv")
    assert _cites([doc], "warranty.md") and _cites([doc], "warranty")
    assert not _cites([faq, doc], "refund-policy.md")


def test_ingest_uses_the_index_settings_of_llmos_yaml(cli, project_dir: Path) -> None:
    """The chat opens the store with llmos.yaml's settings; `llmos ingest` must build the same
    index, or the next start would throw it away and rebuild it."""
    from assistant.config import load_config
    from knowledge.base import KnowledgeBase

    cfg = project_dir / "llmos.yaml"
    cfg.write_text(cfg.read_text().replace("index: auto", "index: hnsw"))
    make_corpus(project_dir / "knowledge" / "extra")
    assert runner.invoke(cli, ["ingest", "--project", str(project_dir)]).exit_code == 0
    store = project_dir / "data" / "knowledge"
    options = load_config(cfg).knowledge.index_options()
    kb = KnowledgeBase.open(store, FakeEmbedder(), **options)  # as Assistant opens it
    try:
        assert kb.index.kind == "hnsw" and kb.rebuilt is None
    finally:
        kb.close()
    res = runner.invoke(cli, ["ingest", "--index", "flat", "--project", str(project_dir)])
    assert res.exit_code == 0, res.output  # --index wins for one run
    kb = KnowledgeBase.open(store, FakeEmbedder(), index_kind="flat")
    try:
        assert kb.index.kind == "flat" and kb.rebuilt is None
    finally:
        kb.close()
