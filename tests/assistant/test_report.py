"""`llmos eval`: one report over every evaluation that applies, with previous values beside."""

import json

import pytest

from assistant.errors import InputError
from assistant.report import check_thresholds, parse_thresholds, run_report


def test_report_on_the_demo_shows_figures_previous_values_and_plots(demo_bot, tmp_path):
    only = ["router", "retrieval", "summarize", "translate", "lm"]
    first = run_report(demo_bot, tmp_path, only=only)
    m = first.metrics
    for key in ("router.accuracy", "router.macro_f1", "retrieval.MAP", "summarize.rouge1"):
        assert 0.0 <= m[key] <= 1.0, key
    # the demo's figures are far above chance: a broken pipeline shows here
    assert m["router.accuracy"] > 0.7 and m["retrieval.MAP"] > 0.6
    assert m["summarize.rouge1"] > 0.2  # against the demo's five reference summaries
    skipped = {s.name: s.skipped for s in first.sections if s.skipped}
    assert "llmos train translator" in skipped["translate"]  # no en-de model in the demo
    assert "lm" in skipped  # the fixture bot runs without a language model
    assert first.previous == {}

    second = run_report(demo_bot, tmp_path, only=["router"], fail_under={"router.accuracy": 1.01})
    assert second.previous["router.accuracy"] == m["router.accuracy"]
    assert second.failures == [f"router.accuracy = {m['router.accuracy']:.4g} is under 1.01"]
    md = (tmp_path / "eval_report.md").read_text()
    assert "| router.accuracy |" in md and "previous" in md and "FAILED" in md
    data = json.loads((tmp_path / "eval_report.json").read_text())
    assert data["previous"]["router.accuracy"] == m["router.accuracy"]
    history = (tmp_path / "eval_history.jsonl").read_text().splitlines()
    assert len(history) == 2
    for png in ("eval_metrics.png", "eval_history.png", "router_confusion.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_latency_section_leaves_no_session_behind(demo_bot, tmp_path):
    before = {s.id for s in demo_bot.store.list_sessions(10_000)}
    r = run_report(demo_bot, tmp_path, only=["latency"], latency_turns=5)
    assert (
        r.metrics["latency.p50_ms"] > 0
        and r.metrics["latency.p95_ms"] >= r.metrics["latency.p50_ms"]
    )
    assert {s.id for s in demo_bot.store.list_sessions(10_000)} == before


def test_damaged_history_is_skipped_not_fatal(demo_bot, tmp_path):
    (tmp_path / "eval_history.jsonl").write_text(
        '{"metrics": {"router.accuracy": 0.5}}\nnot json\n'
    )
    r = run_report(demo_bot, tmp_path, only=["router"])
    assert r.previous == {"router.accuracy": 0.5}


def test_thresholds():
    assert parse_thresholds(["router.accuracy=0.9"], "--fail-under") == {"router.accuracy": 0.9}
    for bad in ("router.accuracy", "=0.5", "router.accuracy=high"):
        with pytest.raises(InputError, match="METRIC=VALUE"):
            parse_thresholds([bad], "--fail-under")
    metrics = {"qa.accuracy": 0.8, "latency.p95_ms": 120.0}
    assert check_thresholds(metrics, {"qa.accuracy": 0.7}, {"latency.p95_ms": 200}) == []
    fails = check_thresholds(
        metrics, {"qa.accuracy": 0.9, "kgqa.hits@1": 0.5}, {"latency.p95_ms": 100}
    )
    assert len(fails) == 3 and any("not measured" in f for f in fails)


def test_unknown_section_is_a_clear_error(demo_bot, tmp_path):
    with pytest.raises(InputError, match="unknown evaluation"):
        run_report(demo_bot, tmp_path, only=["vibes"])


@pytest.mark.slow
def test_full_report_on_the_demo(demo_bot, tmp_path):
    r = run_report(demo_bot, tmp_path)
    m = r.metrics
    assert m["qa.accuracy"] > 0.5 and m["kgqa.hits@1"] > 0.5
    assert {"router", "retrieval", "qa", "kgqa", "latency"} <= {
        s.name for s in r.sections if not s.skipped
    }
