"""Summaries in a conversation with the real demo assistant (router, slots, knowledge base,
SQLite sessions), and ``llmos eval summarize`` on the formats it reads."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from assistant.cli import app

runner = CliRunner()


def test_document_by_name_with_a_sentence_count(demo_bot):
    r = demo_bot.chat("can you summarize the refund policy in two sentences?")
    assert r.skill == "summarize"
    assert r.data["of"] == "document refund-policy.md"
    assert r.data["sentences"] == 2 and r.data["length"] == "sentences:2"
    assert r.sources[0].title == "refund-policy.md"


def test_document_by_its_title(demo_bot):
    # loyalty-programme.md opens with "# Juniper Circle: Our Loyalty Programme"
    r = demo_bot.chat("summarize the Juniper Circle document")
    assert r.skill == "summarize"
    assert r.data["of"] == "document loyalty-programme.md"


def test_word_budget_from_the_message(demo_bot):
    r = demo_bot.chat("summarize the shipping document in 30 words")
    assert r.skill == "summarize" and r.data["of"].startswith("document shipping")
    assert len(r.text.split()) <= 30


def test_summarize_that_then_make_it_shorter(demo_bot):
    sid = demo_bot.new_session()
    demo_bot.chat("summarize the warranty document in three sentences", sid)
    again = demo_bot.chat("make it shorter", sid)
    assert again.skill == "summarize"
    assert again.data["of"] == "again: document warranty.md"
    assert again.data["sentences"] == 2


def test_previous_reply_then_the_conversation(demo_bot):
    sid = demo_bot.new_session()
    first = demo_bot.chat("what is your returns policy?", sid)
    r = demo_bot.chat("summarize that, half as long", sid)
    assert r.skill == "summarize" and r.data["of"] == "last reply"
    assert len(r.text.split()) <= len(first.text.split()) // 2 + 1
    conv = demo_bot.chat("summarize our conversation", sid)
    assert conv.data["of"] == "conversation"
    assert conv.text.startswith(("You asked", "You said", "I said"))


def test_unsupported_language_in_the_chat(demo_bot):
    r = demo_bot.chat(
        'please summarize the following text in two sentences: "Die Rücksendung ist innerhalb '
        'von 45 Tagen kostenlos, und das Geld ist nach fünf Tagen wieder auf dem Konto."'
    )
    assert r.skill == "summarize"
    assert r.text == "I can only summarize English text, and this looks like German."


# -- llmos eval summarize --------------------------------------------------------------------
def test_eval_reads_demo_documents_from_the_knowledge_base(tmp_path, llmos_home):
    from assistant.project import DEMO_ROOT

    data = DEMO_ROOT / "eval" / "summarize.jsonl"
    args = ["eval", "summarize", "--data", str(data), "--out", str(tmp_path), "--limit", "2"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "Lead-3" in r.output and "llmos extractive" in r.output
    report = json.loads((tmp_path / "summarize_eval.json").read_text())
    names = [s["name"] for s in report["systems"]]
    assert names[:3] == ["llmos extractive", "Lead-3", "TextRank (plain)"]
    assert report["n"] == 2
    assert [e["id"] for e in report["examples"]] == ["refund-policy.md", "shipping-and-delivery.md"]
    for s in report["systems"]:
        assert 0 < s["scores"]["rouge1"] <= 100
    md = (tmp_path / "summarize_eval.md").read_text()
    assert "| llmos extractive |" in md and "| Lead-3 |" in md


def test_eval_reads_samsum_csv_and_dialogsum_jsonl(tmp_path, llmos_home):
    csv_path = tmp_path / "samsum.csv"
    csv_path.write_text(
        'id,summary,dialogue\n'
        '1,Amanda baked cookies and will bring Jerry some tomorrow.,"Amanda: I baked  cookies. '
        'Do you want some?\r\nJerry: Sure!\r\nAmanda: I\'ll bring you tomorrow :-)"\n',
        encoding="utf-8",
    )  # fmt: skip
    r = runner.invoke(app, ["eval", "summarize", "--data", str(csv_path), "--out", str(tmp_path),
                            "--length", "sentences:1"])  # fmt: skip
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "summarize_eval.json").read_text())
    assert rep["n"] == 1 and rep["length"] == "sentences:1"
    ds = tmp_path / "dialogsum.jsonl"
    row = {
        "fname": "t0",
        "dialogue": "#Person1#: I need a taxi to the airport.\n#Person2#: I will call one now.",
        "summary1": "#Person1# needs a taxi to the airport.",
        "summary2": "#Person2# calls a taxi for #Person1#.",
        "summary3": "#Person1# asks for a taxi.",
    }
    ds.write_text(json.dumps(row) + "\n", encoding="utf-8")
    r2 = runner.invoke(app, ["eval", "summarize", "--data", str(ds), "--out", str(tmp_path)])
    assert r2.exit_code == 0, r2.output
    rep2 = json.loads((tmp_path / "summarize_eval.json").read_text())
    assert rep2["examples"][0]["id"] == "t0"


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ('{"text": "a b c"}\n', [], "no reference summary"),
        ("not json\n", [], "line 1: not JSON"),
        ('{"document": "no-such-doc.md", "summary": "x"}\n', [], "'no-such-doc.md' is not in"),
        ('{"text": "a b c", "summary": "x"}\n', ["--length", "pages:3"], "--length 'pages:3'"),
    ],
)
def test_eval_bad_input_is_one_line(tmp_path, llmos_home, content, args, message):
    data = tmp_path / "bad.jsonl"
    data.write_text(content, encoding="utf-8")
    r = runner.invoke(
        app, ["eval", "summarize", "--data", str(data), "--out", str(tmp_path), *args]
    )
    assert r.exit_code != 0
    assert message in str(r.exception)
    assert not (tmp_path / "summarize_eval.json").exists()


def test_missing_data_file_is_one_error_line(tmp_path):
    import subprocess
    import sys

    missing = tmp_path / "nope.jsonl"
    p = subprocess.run(
        [sys.executable, "-m", "assistant.cli", "eval", "summarize", "--data", str(missing)],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert p.returncode == 1
    assert p.stderr.strip() == f"error: no such file: {missing}"
