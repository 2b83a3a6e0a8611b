"""The Banking77 loader of ``benchmarks/intents.py`` scores what it claims to score.

A label spelled one way in training and another in the test set is never counted right, and
nothing else in a benchmark run notices: the 10-shot figures were 1.2-1.4 points low until
session 11 because the loader lower-cased ``Refund_not_showing_up`` in the 10-shot split only.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import SHARED_DATA

BANKING77 = SHARED_DATA / "banking77"


def _intents_module() -> ModuleType:
    # The benchmark installs a bare ``assistant`` package when none is imported yet (to run
    # without the assistant's dependencies); the real one must be there first in a test run.
    import assistant  # noqa: F401

    return importlib.import_module("benchmarks.intents")


def test_every_split_uses_the_test_sets_intent_names() -> None:
    data = _intents_module().load_banking77(BANKING77)
    assert [len(data[s][0]) for s in ("10-shot", "full", "test")] == [770, 10_003, 3_080]
    test_intents = set(data["test"][1])
    assert len(test_intents) == 77
    assert set(data["10-shot"][1]) == test_intents
    assert set(data["full"][1]) == test_intents
    assert "Refund_not_showing_up" in set(data["10-shot"][1])


def test_a_label_the_test_set_lacks_stops_the_run(tmp_path: Path) -> None:
    data = tmp_path / "banking77"
    shutil.copytree(BANKING77, data)
    label = data / "fewshot_jianguoz" / "train_10" / "label"
    label.write_text(label.read_text(encoding="utf-8").lower(), encoding="utf-8")
    with pytest.raises(SystemExit, match="refund_not_showing_up"):
        _intents_module().load_banking77(data)
