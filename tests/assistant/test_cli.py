"""The `llmos` command as a user runs it: real subprocesses for the one-line error contract,
typer's CliRunner for the rest."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assistant.cli import app

REPO = Path(__file__).resolve().parents[2]
LLMOS = [sys.executable, "-m", "assistant.cli"]
runner = CliRunner()


def run_cli(args, cwd=None, input=None, timeout=600):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        LLMOS + args,
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def test_init_scaffolds_a_valid_project(tmp_path):
    r = runner.invoke(app, ["init", str(tmp_path / "mybot")])
    assert r.exit_code == 0, r.output
    for p in ["llmos.yaml", "intents.yaml", "knowledge/faq.csv", "models"]:
        assert (tmp_path / "mybot" / p).exists()
    again = run_cli(["init", str(tmp_path / "mybot")])
    assert again.returncode == 1
    assert (
        again.stderr.strip()
        == f"error: {tmp_path / 'mybot'} already holds a bot project (llmos.yaml exists)"
    )


def test_ask_json_in_a_project(project_dir):
    r = run_cli(["ask", "hello", "--project", str(project_dir), "--json"])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) >= {"text", "skill", "confidence", "sources", "session_id"}
    assert out["skill"] == "smalltalk"
    r2 = run_cli(
        [
            "ask",
            "how do I add documents?",
            "--project",
            str(project_dir),
            "--json",
            "--session",
            out["session_id"],
        ]
    )
    assert r2.returncode == 0, r2.stderr
    out2 = json.loads(r2.stdout)
    assert out2["session_id"] == out["session_id"]
    assert out2["skill"] == "qa"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ask", "   "], "error: message is empty"),
        (
            ["ask", "hello", "--session", "no-such-session"],
            "error: unknown session id: no-such-session",
        ),
        (
            ["ask", "hi", "--project", "/definitely/not/here"],
            "error: project directory not found: /definitely/not/here",
        ),
        (
            ["eval", "router", "--data", "/nope.yaml"],
            "error: evaluation file not found: /nope.yaml",
        ),
    ],
)
def test_user_errors_are_one_line(args, message, project_dir):
    if "--session" in args:
        args = [*args, "--project", str(project_dir)]
    r = run_cli(args)
    assert r.returncode == 1
    assert r.stderr.strip() == message
    assert "Traceback" not in r.stderr + r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "qa"], "Error: Missing option '--data'."),
        (["ingest", "--bogus"], "Error: No such option: --bogus"),
        (["nosuchcmd"], "Error: No such command 'nosuchcmd'."),
    ],
)
def test_usage_errors_show_usage_and_the_option(args, message):
    # click's own message with the usage line, not the exception's class name
    r = run_cli(args)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[0].startswith("Usage: ")
    assert r.stderr.strip().splitlines()[-1] == message
    assert "Traceback" not in r.stderr and "LLMOS_DEBUG" not in r.stderr


def test_malformed_project_yaml_names_line_and_field(project_dir):
    (project_dir / "llmos.yaml").write_text("name: x\nrouter:\n  confidence_threshold: lots\n")
    r = run_cli(["ask", "hi", "--project", str(project_dir)])
    assert r.returncode == 1
    assert r.stderr.strip().startswith("error: llmos.yaml line 3: router.confidence_threshold:")
    (project_dir / "llmos.yaml").write_text("name: x\n")
    (project_dir / "intents.yaml").write_text(
        "intents:\n  a:\n    skill: nosuch\n    examples: [x]\n"
    )
    r = run_cli(["ask", "hi", "--project", str(project_dir)])
    assert r.returncode == 1
    assert "intents.yaml: intent 'a' uses unknown skill 'nosuch'" in r.stderr


def test_invalid_utf8_argument():
    r = subprocess.run(
        [*LLMOS, b"ask", b"caf\xe9 \xff"],
        capture_output=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 1
    assert b"lone surrogate" in r.stderr and b"Traceback" not in r.stderr


def test_demo_prints_a_conversation_without_tty():
    r = run_cli(["demo"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("you> ") >= 8
    assert "[smalltalk" in r.stdout and "[qa" in r.stdout and "[handoff" in r.stdout
    assert "Traceback" not in r.stderr


def test_plain_chat_reads_stdin(project_dir):
    r = run_cli(["chat", "--project", str(project_dir), "--plain"], input="hello\n/quit\n")
    assert r.returncode == 0, r.stderr
    assert "bot> " in r.stdout and "[smalltalk" in r.stdout


def test_train_and_eval_router(project_dir, tmp_path):
    r = run_cli(["train", "router", "--project", str(project_dir), "--force"])
    assert r.returncode == 0, r.stderr
    assert "Router trained" in r.stdout
    r = run_cli(["train", "router", "--project", str(project_dir)])
    assert r.returncode == 0, r.stderr
    assert "Router is up to date (" in r.stdout  # the stored router, loaded, not retrained
    data = tmp_path / "heldout.yaml"
    data.write_text(
        "intents:\n  greeting:\n    skill: smalltalk\n    examples: [hey hello, good evening]\n"
        "  human_agent:\n    skill: handoff\n    examples: [let me speak with a human please]\n"
    )
    r = run_cli(
        [
            "eval",
            "router",
            "--data",
            str(data),
            "--project",
            str(project_dir),
            "--out",
            str(tmp_path / "rep"),
        ]
    )
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "rep" / "router_eval.json").read_text())
    assert report["examples"] == 3
    assert 0.0 <= report["intent"]["accuracy"] <= 1.0
    assert (tmp_path / "rep" / "router_confusion.png").stat().st_size > 1000
    assert "| intent | precision" in (tmp_path / "rep" / "router_eval.md").read_text()


def test_help_lists_commands():
    r = run_cli(["--help"])
    assert r.returncode == 0
    for cmd in ["init", "chat", "ask", "demo", "train", "eval"]:
        assert cmd in r.stdout
