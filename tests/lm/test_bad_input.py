"""Bad input gets one clear LMError line and corrupts nothing already saved."""

import json
import pickle
import shutil
import uuid

import pytest

from lm.checkpoint import MANIFEST, is_complete
from lm.data import read_chat_jsonl
from lm.errors import CheckpointError, DataError, LMError, UnsafeCheckpointError
from lm.train import train_lm
from tests.lm.conftest import tiny_config


def _one_line(exc: Exception) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("   \n\n")
    with pytest.raises(DataError, match="empty") as e:
        train_lm([tmp_path / "empty.txt"], tmp_path / "out", tiny_config(), show_progress=False)
    _one_line(e.value)
    assert not (tmp_path / "out").exists()


def test_binary_corpus(tmp_path):
    (tmp_path / "blob.txt").write_bytes(bytes(range(256)) * 100)
    with pytest.raises(DataError, match="binary") as e:
        train_lm([tmp_path / "blob.txt"], tmp_path / "out", tiny_config(), show_progress=False)
    _one_line(e.value)


def test_missing_corpus_path_and_empty_dir(tmp_path):
    with pytest.raises(DataError, match="not found"):
        train_lm([tmp_path / "nope.txt"], tmp_path / "out", tiny_config(), show_progress=False)
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match="no text files"):
        train_lm([tmp_path / "d"], tmp_path / "out", tiny_config(), show_progress=False)


def test_corpus_smaller_than_a_context_window(tmp_path):
    (tmp_path / "small.txt").write_text("To be, or not to be, that is the question.\n" * 2)
    with pytest.raises(DataError, match="context window") as e:
        train_lm([tmp_path / "small.txt"], tmp_path / "out", tiny_config(), show_progress=False)
    _one_line(e.value)


def test_malformed_chat_jsonl(tmp_path):
    p = tmp_path / "chat.jsonl"
    p.write_text(
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n{oops\n'
    )
    with pytest.raises(DataError, match=r"chat.jsonl:2: not valid JSON"):
        read_chat_jsonl(p)
    p.write_text('{"messages": [{"role": "wizard", "content": "hi"}]}\n')
    with pytest.raises(DataError, match=":1: each message needs a role"):
        read_chat_jsonl(p)
    p.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(DataError, match="no assistant message"):
        read_chat_jsonl(p)


def _copy_ckpt(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_checkpoint_missing_files(tmp_path, tiny_run):
    from lm.generate import Generator

    best = tiny_run[0] / "best"
    no_weights = _copy_ckpt(best, tmp_path / "a")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model weights") as e:
        Generator.from_dir(no_weights)
    _one_line(e.value)
    no_config = _copy_ckpt(best, tmp_path / "b")
    (no_config / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json"):
        Generator.from_dir(no_config)
    truncated = _copy_ckpt(best, tmp_path / "c")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert not is_complete(truncated)
    with pytest.raises(CheckpointError, match="wrong size"):
        Generator.from_dir(truncated)
    with pytest.raises(CheckpointError, match="not found"):
        Generator.from_dir(tmp_path / "does-not-exist")


def test_checkpoint_with_wrong_shapes(tmp_path, tiny_run):
    from lm.generate import Generator

    bad = _copy_ckpt(tiny_run[0] / "best", tmp_path / "bad")
    cfg = json.loads((bad / "config.json").read_text())
    cfg["hidden_size"] = 128
    (bad / "config.json").write_text(json.dumps(cfg))
    manifest = json.loads((bad / MANIFEST).read_text())
    manifest["files"]["config.json"]["size"] = (bad / "config.json").stat().st_size
    (bad / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError) as e:
        Generator.from_dir(bad)
    _one_line(e.value)


class _Canary:
    """Unpickling this runs ``open(path, "w")``: proof that code executed."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pickle_dir(tmp_path, tiny_run, keep_safetensors: bool):
    d = _copy_ckpt(tiny_run[0] / "best", tmp_path / f"pickled-{keep_safetensors}")
    if not keep_safetensors:
        (d / "model.safetensors").unlink()
        (d / MANIFEST).unlink()
    canary = tmp_path / f"{uuid.uuid4().hex}.pwned"
    for name in ("pytorch_model.bin", "model.pt"):
        (d / name).write_bytes(pickle.dumps(_Canary(str(canary))))
    return d, canary


def test_pickle_weights_are_refused_and_never_executed(tmp_path, tiny_run, chat_file):
    from lm.finetune import finetune
    from lm.generate import Generator
    from lm.loading import load_causal_lm

    d, canary = _pickle_dir(tmp_path, tiny_run, keep_safetensors=False)
    for load in (
        lambda: Generator.from_dir(d),
        lambda: load_causal_lm(d),
        lambda: finetune(d, chat_file, tmp_path / "ft", show_progress=False),
    ):
        with pytest.raises(UnsafeCheckpointError, match="pickle") as e:
            load()
        _one_line(e.value)
    assert not canary.exists()
    # With safetensors present the pickle files are simply ignored.
    d2, canary2 = _pickle_dir(tmp_path, tiny_run, keep_safetensors=True)
    Generator.from_dir(d2).generate("A", max_new_tokens=2)
    assert not canary2.exists()


def test_failed_run_keeps_previous_checkpoint(tmp_path, tiny_run, corpus_file):
    out = tmp_path / "run"
    shutil.copytree(tiny_run[0], out)
    before = (out / "best" / "model.safetensors").read_bytes()
    with pytest.raises(LMError):
        train_lm([corpus_file], out, tiny_config(optimizer="nope"), show_progress=False)
    with pytest.raises(LMError, match="corpus changed"):
        (tmp_path / "other.txt").write_text("different text " * 2000)
        train_lm(
            [tmp_path / "other.txt"], out, tiny_config(steps=30), resume=True, show_progress=False
        )
    assert (out / "best" / "model.safetensors").read_bytes() == before
    assert is_complete(out / "best") and is_complete(out / "last")


def test_resume_without_checkpoint(tmp_path, corpus_file):
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train_lm([corpus_file], tmp_path, tiny_config(), resume=True, show_progress=False)
