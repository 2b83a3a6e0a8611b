"""Slash-command parsing and completion, and the Markdown export (no app needed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from assistant.exports import export_session, source_label, transcript_markdown
from tui.commands import COMMANDS, CommandError, complete, help_markdown, parse


@pytest.mark.parametrize(
    "line, name, args",
    [
        ("/help", "help", []),
        ("/ingest docs 'my notes.md'", "ingest", ["docs", "my notes.md"]),
        ("/train LM", "train", ["lm"]),
        ("/session switch ab12", "session", ["switch", "ab12"]),
        ("/session rename Delivery questions", "session", ["rename", "Delivery", "questions"]),
        ("/session new", "session", ["new"]),
        ("  /clear  ", "clear", []),
    ],
)
def test_parse_accepts(line, name, args):
    cmd = parse(line)
    assert (cmd.name, cmd.args) == (name, args)


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("/", "type a command"),
        ("/nope", "unknown command /nope"),
        ("/train", "usage: /train"),
        ("/train gpu", "usage: /train"),
        ("/ingest", "usage: /ingest"),
        ("/session switch", "usage: /session switch ID"),
        ("/session rename", "usage: /session rename"),
        ("/session list extra", "usage: /session list"),
        ("/ingest 'unterminated", "cannot parse"),
        ("/help me", "usage: /help"),
    ],
)
def test_parse_rejects_with_one_line(line, fragment):
    with pytest.raises(CommandError) as err:
        parse(line)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_complete_names_subcommands_and_ids():
    assert complete("/se") == ["/session "]
    assert complete("/t") == ["/train "]
    assert complete("/train t") == ["/train translator "]
    assert complete("/session sw") == ["/session switch "]
    assert complete("/session switch a", {"switch": ["abc", "abd", "x"]}) == [
        "/session switch abc",
        "/session switch abd",
    ]
    assert complete("hello") == []
    assert set(complete("/")) == {f"/{n} " for n in COMMANDS}


def test_help_lists_every_command_and_keys():
    text = help_markdown([("ctrl+b", "Sidebar")])
    for cmd in COMMANDS.values():
        assert cmd.usage in text
    assert "ctrl+b" in text and "Ctrl+J" in text


def _turn(n, user, reply, sources=()):
    return SimpleNamespace(
        n=n,
        user_text=user,
        reply_text=reply,
        skill="qa",
        confidence=0.5,
        kind="chat",
        sources=list(sources),
    )


def test_export_writes_markdown_atomically(tmp_path):
    turns = [
        _turn(1, "hi", "Hello!"),
        _turn(
            2,
            "delivery?",
            "3 days",
            [{"title": "ship.md", "span": [1, 9]}, {"path": ["kettle", "made_by", "Juniper"]}],
        ),
    ]
    out = export_session(tmp_path / "exports", "Delivery / questions", "s1", turns, now=0)
    text = out.read_text(encoding="utf-8")
    assert out.parent == tmp_path / "exports" and out.suffix == ".md"
    assert "# Delivery / questions" in text and "**You:** delivery?" in text
    assert "- ship.md, chars 1-9" in text and "- kettle made_by Juniper" in text
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp file left


def test_source_label_matches_the_api_label():
    from skills.base import Source

    for src in [
        Source(kind="document", title="a.md", span=(3, 8), page=2),
        Source(kind="graph", title="", path=["a", "r", "b"]),
        Source(kind="faq", title="", ref="faq.csv"),
    ]:
        assert source_label(src.to_dict()) == src.label()
    assert transcript_markdown("", "s", []).startswith("# Conversation")


def test_model_lines_read_router_and_lm_metadata(tmp_path):
    import json

    from assistant.project import Project
    from tui.work import model_lines

    project = Project(root=tmp_path, state=tmp_path)
    best = project.model_dir("lm") / "best"
    best.mkdir(parents=True)
    (best / "llmos.json").write_text(
        json.dumps(
            {
                "preset": "small",
                "step": 600,
                "eval_loss": 2.5,
                "perplexity": 12.18,
                "parameters": 935040,
            }
        )
    )
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "router_eval.json").write_text(
        json.dumps({"intent": {"accuracy": 0.9}})
    )
    bot = SimpleNamespace(
        project=project,
        router=SimpleNamespace(trained_at=1.0, example_intents=["a", "b", "b"]),
        services=SimpleNamespace(generator=object()),
    )
    assert model_lines(bot) == [
        "router  3 ex, 2 intents",
        "        eval acc 0.90",
        "lm      small step 600",
        "        eval loss 2.500, ppl 12.2",
        "        0.9M params",
    ]
    bot.router.trained_at = None
    (best / "llmos.json").unlink()
    assert model_lines(bot) == ["router  not trained", "lm      none (/train lm)"]
