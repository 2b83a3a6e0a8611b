"""The lm commands through typer's CliRunner on the real ``assistant.cli.app``."""

import json

import pytest
import torch
from typer.testing import CliRunner

from assistant.cli import app

runner = CliRunner()


@pytest.fixture
def project(tmp_path):
    from assistant.scaffold import scaffold

    root = tmp_path / "bot"
    scaffold(root)
    return root


def _ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_train_models_eval_finetune(project, corpus_file, chat_file, tmp_path):
    torch.set_num_threads(1)
    out = _ok(
        runner.invoke(
            app,
            [
                "train",
                "lm",
                "--corpus",
                str(corpus_file),
                "--preset",
                "tiny",
                "--steps",
                "6",
                "--warmup",
                "2",
                "--eval-interval",
                "3",
                "--block-size",
                "64",
                "--vocab-size",
                "320",
                "--project",
                str(project),
            ],
        )
    )
    assert "validation loss" in out
    lm_dir = project / "models" / "lm"
    assert (lm_dir / "best" / "model.safetensors").is_file()
    from lm.checkpoint import load_training_state

    assert load_training_state(lm_dir / "last")[0]["config"]["warmup_steps"] == 2
    out = _ok(
        runner.invoke(
            app,
            [
                "train",
                "lm",
                "--corpus",
                str(corpus_file),
                "--preset",
                "tiny",
                "--steps",
                "9",
                "--resume",
                "--project",
                str(project),
            ],
        )
    )
    assert "for 9 steps" in out
    listing = _ok(runner.invoke(app, ["models", "--project", str(project)]))
    assert "lm/best" in listing and "lm/last" in listing
    out = _ok(
        runner.invoke(
            app,
            [
                "eval",
                "lm",
                "--data",
                str(corpus_file),
                "--max-tokens",
                "2000",
                "--project",
                str(project),
                "--out",
                str(tmp_path / "rep"),
            ],
        )
    )
    assert "perplexity" in out
    report = json.loads((tmp_path / "rep" / "lm_eval.json").read_text())
    assert report["loss"] > 0 and report["tokens"] > 1000
    assert (tmp_path / "rep" / "lm_eval.md").read_text().startswith("# Language model evaluation")
    out = _ok(
        runner.invoke(
            app,
            [
                "finetune",
                "--data",
                str(chat_file),
                "--lora",
                "--merge",
                "--steps",
                "3",
                "--batch-size",
                "4",
                "--project",
                str(project),
            ],
        )
    )
    assert "merged" in out
    assert (project / "models" / "lm-chat" / "merged" / "model.safetensors").is_file()
    listing = _ok(runner.invoke(app, ["models", "--project", str(project)]))
    assert "lm-lora" in listing and "lm-chat/merged" in listing


def test_cli_errors_are_one_line(project, tmp_path, corpus_file):
    from assistant.errors import LlmosError

    (tmp_path / "empty.txt").write_text("")
    r = runner.invoke(
        app,
        [
            "train",
            "lm",
            "--corpus",
            str(tmp_path / "empty.txt"),
            "--preset",
            "tiny",
            "--steps",
            "2",
            "--project",
            str(project),
        ],
    )
    assert r.exit_code != 0 and isinstance(r.exception, LlmosError)
    assert "empty" in str(r.exception) and "\n" not in str(r.exception)
    r = runner.invoke(
        app,
        [
            "eval",
            "lm",
            "--data",
            str(tmp_path / "empty.txt"),
            "--model",
            str(tmp_path / "missing"),
            "--project",
            str(project),
        ],
    )
    assert isinstance(r.exception, LlmosError) and "not found" in str(r.exception)
    r = runner.invoke(
        app,
        [
            "train",
            "lm",
            "--corpus",
            str(tmp_path / "empty.txt"),
            "--time",
            "soon",
            "--project",
            str(project),
        ],
    )
    assert isinstance(r.exception, LlmosError) and "duration" in str(r.exception)
    args = ["train", "lm", "--corpus", str(corpus_file), "--steps", "2", "--warmup", "-1"]
    r = runner.invoke(app, [*args, "--project", str(project)])
    assert isinstance(r.exception, LlmosError) and "--warmup" in str(r.exception)
    out = _ok(runner.invoke(app, ["models", "--project", str(project)]))
    assert "no models" in out
