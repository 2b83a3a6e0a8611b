"""``llmos train translator|summarizer`` and ``llmos eval translate`` through the real CLI app."""

import json

import pytest
import torch
from typer.testing import CliRunner

from assistant.cli import app
from assistant.errors import LlmosError
from tests.lm.conftest import REPO

runner = CliRunner()
PHRASEBOOK = REPO / "assistant" / "demo" / "translation" / "phrasebook.tsv"
EVAL_TSV = REPO / "assistant" / "demo" / "eval" / "translate.tsv"


@pytest.fixture
def project(tmp_path):
    from assistant.scaffold import scaffold

    root = tmp_path / "bot"
    scaffold(root)
    return root


def _ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def _error(result) -> str:
    assert result.exit_code != 0 and isinstance(result.exception, LlmosError), result.output
    msg = str(result.exception)
    assert "\n" not in msg
    return msg


def test_train_and_eval_translator(project, tmp_path):
    torch.set_num_threads(1)
    args = ["train", "translator", "--pairs", str(PHRASEBOOK), "--src", "en", "--tgt", "fr"]
    out = _ok(
        runner.invoke(app, [*args, "--preset", "tiny", "--steps", "8", "--project", str(project)])
    )
    assert "en->fr translator" in out and "validation loss" in out
    run_dir = project / "models" / "translator-en-fr"
    assert (run_dir / "best" / "model.safetensors").is_file()
    assert (run_dir / "loss_curve.png").is_file()
    tsv = tmp_path / "eval.tsv"
    tsv.write_text(PHRASEBOOK.read_text(encoding="utf-8"), encoding="utf-8")
    out = _ok(
        runner.invoke(
            app,
            ["eval", "translate", "--data", str(tsv), "--beam", "2", "--project", str(project)],
        )
    )
    assert "BLEU" in out and "chrF" in out
    report = json.loads((project / "reports" / "translate_eval.json").read_text())
    assert (report["src"], report["tgt"], report["sentences"]) == ("en", "fr", 73)
    assert (project / "reports" / "translate_eval.md").is_file()
    # a pair the project has no model for
    msg = _error(
        runner.invoke(
            app,
            ["eval", "translate", "--data", str(EVAL_TSV), "--src", "en", "--tgt", "de",
             "--project", str(project)],
        )
    )  # fmt: skip
    assert "llmos train translator" in msg


def test_bad_pair_files_are_one_line_errors(project, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("hello\thallo\nno tab here\n")
    base = ["train", "translator", "--src", "en", "--tgt", "de", "--steps", "2"]
    msg = _error(runner.invoke(app, [*base, "--pairs", str(bad), "--project", str(project)]))
    assert "bad.tsv:2:" in msg
    (tmp_path / "c.en").write_text("a\nb\n")
    (tmp_path / "c.de").write_text("a\n")
    msg = _error(
        runner.invoke(app, [*base, "--pairs", str(tmp_path / "c"), "--project", str(project)])
    )
    assert "2 lines" in msg and "1" in msg
    assert not (project / "models" / "translator-en-de").exists()
    msg = _error(
        runner.invoke(app, [*base, "--pairs", str(PHRASEBOOK), "--time", "soon",
                            "--project", str(project)])
    )  # fmt: skip
    assert "duration" in msg


def test_train_summarizer_cli(project, tmp_path):
    torch.set_num_threads(1)
    data = tmp_path / "samsum.csv"
    rows = ["id,dialogue,summary"]
    for i in range(12):
        rows.append(f'{i},"A: order {i}?\r\nB: it ships today.","Order {i} ships today."')
    data.write_text("\n".join(rows) + "\n")
    out = _ok(
        runner.invoke(
            app,
            ["train", "summarizer", "--pairs", str(data), "--preset", "tiny", "--steps", "4",
             "--project", str(project)],
        )
    )  # fmt: skip
    assert "summarizer" in out
    assert (project / "models" / "summarizer" / "best" / "model.safetensors").is_file()
