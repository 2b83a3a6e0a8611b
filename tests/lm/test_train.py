import json
import math

import pytest
import torch

from lm.checkpoint import MANIFEST, is_complete, resolve_model_dir
from lm.errors import LMError
from lm.optim import OPTIMIZERS, lr_at, parse_duration
from lm.train import cpu_has_native_bf16, native_bf16_in, resolve_dtype, train_lm
from tests.lm.conftest import tiny_config


def test_tiny_pretraining_loss_falls(tiny_run):
    out, result = tiny_run
    first_train = result.history["train"][0][1]
    assert abs(first_train - math.log(320)) < 0.5  # starts near uniform over the vocabulary
    val = [v for _, v in result.history["val"]]
    assert val[-1] < first_train - 1.0, (first_train, val)
    assert val[-1] < val[0]
    assert result.step == 24
    assert 100_000 < result.parameters < 1_000_000
    for sub in ("best", "last"):
        assert is_complete(out / sub)
        assert (out / sub / "model.safetensors").is_file()
        assert (out / sub / "tokenizer.json").is_file()
    assert not list(out.glob("*.bin")) and not list((out / "last").glob("*.bin"))
    assert (out / "last" / "training_state.safetensors").is_file()
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((out / "best" / MANIFEST).read_text())
    assert manifest["kind"] == "lm" and manifest["eval_loss"] == pytest.approx(result.best_val_loss)
    assert resolve_model_dir(out) == out / "best"


def test_resume_continues_the_same_loss_curve(tmp_path, corpus_file):
    torch.set_num_threads(1)
    full = train_lm([corpus_file], tmp_path / "full", tiny_config(steps=12), show_progress=False)
    part = tmp_path / "part"

    def interrupt(done, total, info):
        if info["step"] == 5:
            raise KeyboardInterrupt  # Ctrl+C: the loop saves last/ and tells how to resume

    with pytest.raises(LMError, match=r"interrupted at step 5.*--resume"):
        train_lm(
            [corpus_file], part, tiny_config(steps=12), on_progress=interrupt, show_progress=False
        )
    resumed = train_lm([corpus_file], part, tiny_config(steps=12), resume=True, show_progress=False)
    assert resumed.step == 12
    a = [v for _, v in full.history["train"]]
    b = [v for _, v in resumed.history["train"]]
    assert len(b) == 12
    assert b == pytest.approx(a, abs=1e-4)
    assert resumed.val_loss == pytest.approx(full.val_loss, abs=1e-4)
    # The budget counts the whole run: resuming a finished run says so, and changes nothing.
    before = (part / "last" / "model.safetensors").read_bytes()
    with pytest.raises(LMError, match=r"already trained 12 steps.*larger --steps"):
        train_lm([corpus_file], part, tiny_config(steps=12), resume=True, show_progress=False)
    assert (part / "last" / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize("dtype, tol", [("fp32", 1e-4), ("bf16", 2e-3)])
def test_micro_batches_give_the_whole_batch_update(tmp_path, corpus_file, dtype, tol):
    # 8 rows as 3 + 3 + 2: each pass's loss is weighted by its rows, so the optimizer sees
    # the same gradient as one pass over all 8 (up to float rounding), with grad_accum too.
    # bf16 autocast rounds each pass's matmul outputs, so its sums differ by more.
    torch.set_num_threads(1)
    runs = [
        train_lm(
            [corpus_file],
            tmp_path / str(micro),
            tiny_config(steps=4, eval_interval=4, micro_batch=micro, grad_accum=2, dtype=dtype),
            show_progress=False,
        )
        for micro in (8, 3)
    ]
    assert [r.dtype for r in runs] == [dtype, dtype]  # an explicit dtype is what runs
    a, b = ([v for _, v in r.history["train"]] for r in runs)
    assert len(a) == 4 and b == pytest.approx(a, abs=tol)
    assert runs[1].val_loss == pytest.approx(runs[0].val_loss, abs=tol)
    assert a[-1] < a[0]  # it trained: the four steps are not one loss repeated


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_trains(tmp_path, corpus_file, name):
    torch.set_num_threads(1)
    lr = {"sgd": 0.3, "adagrad": 0.05, "rmsprop": 3e-3}.get(name, 5e-3)
    r = train_lm(
        [corpus_file],
        tmp_path,
        tiny_config(steps=3, eval_interval=3, optimizer=name, learning_rate=lr, grad_accum=2),
        show_progress=False,
    )
    assert r.step == 3 and math.isfinite(r.val_loss)


def test_progress_callback_and_time_budget(tmp_path, corpus_file):
    seen = []
    r = train_lm(
        [corpus_file],
        tmp_path,
        tiny_config(steps=None, time_budget_s=3.0),
        on_progress=lambda d, t, info: seen.append((d, t, info)),
        show_progress=False,
    )
    assert r.step >= 1 and seen
    assert seen[-1][1] == 3 and {"loss", "tokens_per_s", "lr"} <= set(seen[-1][2])


def test_schedule_and_durations():
    assert lr_at(0.0, 0, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(0.0, 10, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(1.0, 100, 1.0, 10, min_ratio=0.1) == pytest.approx(0.1)
    assert (
        parse_duration("20m") == 1200
        and parse_duration("1.5h") == 5400
        and parse_duration("90") == 90
    )
    with pytest.raises(LMError):
        parse_duration("soon")


def test_auto_dtype_is_bf16_only_where_bf16_is_native():
    zen4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
    avx2 = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma\n"
    assert native_bf16_in(zen4) and native_bf16_in("flags : amx_bf16 amx_tile")
    assert not native_bf16_in(avx2) and not native_bf16_in("")
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_dtype("fp32", cpu) == "fp32" and resolve_dtype("bf16", cpu) == "bf16"
    with pytest.raises(LMError, match="dtype must be"):
        resolve_dtype("fp16", cpu)


def test_run_reports_its_dtype_and_rejects_unknown_ones(tmp_path, corpus_file):
    torch.set_num_threads(1)
    r = train_lm([corpus_file], tmp_path / "a", tiny_config(steps=2), show_progress=False)
    assert r.dtype == resolve_dtype("auto", torch.device("cpu"))
    with pytest.raises(LMError, match="dtype must be"):
        train_lm([corpus_file], tmp_path / "b", tiny_config(dtype="fp16"), show_progress=False)
    assert not (tmp_path / "b").exists()


def test_unknown_optimizer_and_preset(tmp_path, corpus_file):
    with pytest.raises(LMError, match="optimizer"):
        train_lm([corpus_file], tmp_path, tiny_config(optimizer="lion"), show_progress=False)
    with pytest.raises(LMError, match="preset"):
        train_lm([corpus_file], tmp_path, tiny_config(preset="huge"), show_progress=False)


@pytest.mark.slow  # compiling even the tiny model takes 20-100 s on 2 cores
def test_compiled_training_matches_eager_and_counts_compile_time(tmp_path, corpus_file):
    torch.set_num_threads(1)
    eager = train_lm([corpus_file], tmp_path / "e", tiny_config(steps=4), show_progress=False)
    comp = train_lm(
        [corpus_file], tmp_path / "c", tiny_config(steps=4, compile=True), show_progress=False
    )
    assert comp.compile_s > 0 and eager.compile_s == 0
    assert comp.elapsed_s >= comp.compile_s  # the compile is in the run's time...
    a = [v for _, v in eager.history["train"]]
    b = [v for _, v in comp.history["train"]]
    assert b == pytest.approx(a, abs=2e-3)  # ...and the same model learns the same way
    with pytest.raises(LMError, match="compiling the model took"):
        train_lm(
            [corpus_file],
            tmp_path / "t",
            tiny_config(steps=None, time_budget_s=0.01, compile=True),
            show_progress=False,
        )
