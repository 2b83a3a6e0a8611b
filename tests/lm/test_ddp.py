"""Data-parallel training as a user launches it: `torchrun` with two CPU processes (gloo).

Before session 16, accelerate formed no process group on CPUs, so each process trained
alone and all of them wrote the same checkpoints (a race that sometimes failed the run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lm.checkpoint import MANIFEST, is_complete

ARGS = ["--preset", "tiny", "--steps", "4", "--eval-interval", "4", "--vocab-size", "320",
        "--block-size", "64"]  # fmt: skip


def _train(corpus: Path, out: Path, procs: int, *extra: str) -> subprocess.CompletedProcess:
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
        if procs > 1
        else [sys.executable]
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [*launcher, "-m", "lm.train", "--corpus", str(corpus), "--out", str(out), *ARGS, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def _val(out: Path) -> float:
    return float(json.loads((out / "best" / MANIFEST).read_text())["eval_loss"])


def test_two_processes_train_one_model(tmp_path, corpus_file):
    one = _train(corpus_file, tmp_path / "one", 1)
    assert one.returncode == 0, one.stderr[-2000:]
    two = _train(corpus_file, tmp_path / "two", 2)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("step 4 ") == 1  # one summary line, from rank 0
    assert is_complete(tmp_path / "two" / "best") and is_complete(tmp_path / "two" / "last")
    # the gradient is averaged over both processes' batches: not the one-process run
    assert abs(_val(tmp_path / "two") - _val(tmp_path / "one")) > 1e-4
    # micro-batches all-reduce once per step and give the same update
    micro = _train(corpus_file, tmp_path / "micro", 2, "--micro-batch", "3")
    assert micro.returncode == 0, micro.stderr[-2000:]
    assert abs(_val(tmp_path / "micro") - _val(tmp_path / "two")) < 1e-4


def test_a_time_budget_stops_every_process_at_the_same_step(tmp_path, corpus_file):
    # each process reads its own clock; the progress is all-reduced, so none of them is left
    # waiting in a gradient all-reduce for one that already stopped
    r = _train(corpus_file, tmp_path / "t", 2, "--steps", "100000", "--time", "4s")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("step ") == 1
    step = int(json.loads((tmp_path / "t" / "last" / MANIFEST).read_text())["step"])
    assert 0 < step < 100000
