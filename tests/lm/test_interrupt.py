"""kill -9 a training process mid-run, then resume: the saved checkpoint is intact."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lm.checkpoint import is_complete
from lm.train import train_lm
from tests.lm.conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]


def test_kill_training_then_resume(tmp_path, corpus_file):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "lm.train",
        "--corpus",
        str(corpus_file),
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--steps",
        "5000",
        "--eval-interval",
        "3",
        "--block-size",
        "64",
        "--vocab-size",
        "320",
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not is_complete(out / "last"):
            assert proc.poll() is None, "training exited early"
            time.sleep(0.2)
        assert is_complete(out / "last"), "no checkpoint within 120 s"
        time.sleep(1.0)  # let it get into the middle of later steps/saves
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert is_complete(out / "last") or any(out.glob("last.old-*"))
    import json

    from lm.checkpoint import resolve_model_dir

    resolve_model_dir(out / "last")  # recovers last.old-* if the kill hit between renames
    step = json.loads((out / "last" / "training_state.json").read_text())["run"]["step"]
    assert step >= 3
    cfg = tiny_config(
        steps=step + 3, eval_interval=3, batch_size=16, learning_rate=None, warmup_steps=None
    )
    r = train_lm([corpus_file], out, cfg, resume=True, show_progress=False)
    assert r.step == step + 3
    assert r.history["train"][0][0] == 1  # the curve continues the killed run's curve
    assert not list(out.glob("*.tmp-*"))
