"""lm/heap.py: freed training buffers stay in the heap (fewer page faults), and it lets go.

glibc's malloc settings are process-wide and cannot be put back exactly, so each case runs in
its own interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only"
)

# The loss's forward and backward at the small preset's shape allocate and free tens of MB of
# logits blocks and gradients per call: count the minor page faults of five calls.
FAULTS = r"""
import json, resource, sys, torch
from lm.heap import retained_heap
from lm.loss import linear_cross_entropy
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
h = torch.randn(2048, 256, generator=g, requires_grad=True)
w = (torch.randn(4096, 256, generator=g) * 0.02).requires_grad_()
t = torch.randint(0, 4096, (2048,), generator=g)
def call():
    linear_cross_entropy(h, w, t, chunk=512).backward()
with retained_heap() as applied:
    call(); call()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        call()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _run(code: str, **env: str) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    e.pop("GLIBC_TUNABLES", None)
    e.update(env)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=e, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _thp_always() -> bool:
    try:
        mode = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False
    return "[always]" in mode


@pytest.mark.skipif(_thp_always(), reason="2 MB transparent huge pages change the fault counts")
def test_retained_heap_cuts_page_faults_of_a_training_loss():
    default = _run(FAULTS, LLMOS_RETAIN_HEAP="0")
    retained = _run(FAULTS)
    assert default["applied"] is False and retained["applied"] is True
    # Measured: about 52,000 faults with glibc's defaults, about 2,000 retained.
    assert default["faults"] > 2000
    assert retained["faults"] * 4 < default["faults"]


def test_users_malloc_tuning_is_left_alone():
    r = _run(FAULTS, MALLOC_TRIM_THRESHOLD_="131072")
    assert r["applied"] is False


NESTING = r"""
import json, threading
import lm.heap as heap
seen = []
with heap.retained_heap() as a:
    def worker():
        with heap.retained_heap() as b:
            seen.append((b, heap._depth))
    th = threading.Thread(target=worker); th.start(); th.join()
    inside = heap._depth
print(json.dumps({"outer": a, "inner": seen[0][0], "depth_in_thread": seen[0][1],
                  "after_thread": inside, "after_all": heap._depth}))
"""


def test_nested_blocks_and_threads_release_only_at_the_outermost_exit():
    r = _run(NESTING)
    assert r == {
        "outer": True,
        "inner": True,
        "depth_in_thread": 2,
        "after_thread": 1,
        "after_all": 0,
    }


def test_training_runs_inside_the_retained_heap(tmp_path, corpus_file):
    import lm.heap as heap
    from lm.train import train_lm
    from tests.lm.conftest import tiny_config

    if heap._libc() is None:
        pytest.skip("malloc tuning is off in this environment")
    depths: list[int] = []
    train_lm(
        [corpus_file],
        tmp_path / "run",
        tiny_config(steps=2),
        show_progress=False,
        on_progress=lambda done, total, info: depths.append(heap._depth),
    )
    assert depths and all(d >= 1 for d in depths)
    assert heap._depth == 0  # released when training ends
