"""Units of the gate: directions, statistics, baseline files, the decision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_agentmem.errors import BaselineError
from pytest_agentmem.gate.baseline import (
    SCHEMA,
    VERSION,
    Baseline,
    StoredMeasurement,
    baseline_from,
    baseline_path,
    load_baseline,
    write_baseline,
)
from pytest_agentmem.gate.benchmark import _blocks
from pytest_agentmem.gate.calibration import PROBE_NAME, measure_component, speed_ratio, speed_ratios
from pytest_agentmem.gate.checks import (
    GateContext,
    compare_samples,
    fmt,
    run_checks,
    screen,
)
from pytest_agentmem.gate.directions import compared, direction_of
from pytest_agentmem.gate.recordings import RUN_KEY
from pytest_agentmem.gate.stats import _rank_sum_p, p_worse, worse_change
from pytest_agentmem.gate.verdict import TestVerdict, verdict_from_dict
from pytest_agentmem.measurement import Measurement


@pytest.mark.parametrize("metric, direction", [
    ("qps", "higher"), ("recall", "higher"), ("recall_at_10", "higher"), ("items_per_s", "higher"),
    ("hit_rate", "higher"), ("p95_ms", "lower"), ("error_rate", "lower"), ("build_s", "lower"),
    ("concurrency", "none"),
])
def test_direction_of(metric: str, direction: str) -> None:
    assert direction_of(metric) == direction


def test_settings_and_extremes_are_not_compared() -> None:
    assert not compared("duration_s") and not compared("max_ms") and not compared("ops")
    assert compared("ops", "benchmark") and compared("p95_ms")


def test_worse_change_sign_and_rate_floor() -> None:
    assert worse_change(15, 10, "lower") == pytest.approx(0.5)
    assert worse_change(8, 10, "higher") == pytest.approx(0.2)
    assert worse_change(12, 10, "higher") == pytest.approx(-0.2)
    assert worse_change(0.001, 0.0, "lower", "error_rate") == pytest.approx(0.1)  # floor 0.01


def test_mann_whitney_one_sided_and_fallback_agree() -> None:
    worse = [12.0, 13, 14, 15, 13.5]
    base = [10.0, 10.5, 11, 10.2, 10.1]
    assert p_worse(worse, base, "lower") == pytest.approx(1 / 252)
    assert p_worse(worse, base, "higher") == pytest.approx(1.0)
    assert _rank_sum_p(worse, base, "greater") == pytest.approx(1 / 252)
    assert p_worse([1.0, 2.0], base, "lower") is None  # too few rounds


def test_baseline_path_is_safe_and_distinct(tmp_path: Path) -> None:
    a = baseline_path(tmp_path, "tests/test_x.py::test_a[1-2]")
    b = baseline_path(tmp_path, "tests/test_x.py::test_a[1_2]")
    assert a != b and a.parent == tmp_path and a.suffix == ".json"
    assert "/" not in a.name and "[" not in a.name and a.name.startswith("tests_test_x.py__test_a")


def test_baseline_roundtrip_is_sorted_and_atomic(tmp_path: Path) -> None:
    m = Measurement("search", {"qps": 100.0, "p95_ms": float("nan")}, [{"qps": 99.0}, {"qps": 101.0}])
    base = baseline_from("t::x", [m], {"machine": {"cpu_count": 2}}, {"probe": "p", "ops_per_s": 1.0})
    path = tmp_path / "sub" / "x.json"
    write_baseline(path, base)
    text = path.read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
    loaded = load_baseline(path)
    assert loaded is not None and loaded.measurements["search"].samples("qps") == [99.0, 101.0]
    assert "p95_ms" not in loaded.measurements["search"].metrics  # non-finite dropped
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]
    assert load_baseline(tmp_path / "missing.json") is None
    # each recording names the run that made it, so recordings of several tests line up
    named = baseline_from("t::x", [m], {"machine": {"cpu_count": 2}}, None, run=1765000000.5)
    write_baseline(path, named)
    assert load_baseline(path).measurements["search"].recordings[0][RUN_KEY] == 1765000000.5  # type: ignore[union-attr]


def test_future_version_is_rejected_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"schema": SCHEMA, "version": VERSION + 1, "measurements": {}}))
    with pytest.raises(BaselineError, match="newer than this pytest-agentmem reads.*upgrade"):
        load_baseline(path)


def _baseline(**samples: list[float]) -> Baseline:
    rounds = tuple({k: v[i] for k, v in samples.items()} for i in range(len(next(iter(samples.values())))))
    return Baseline("t", {"m": StoredMeasurement("load", {k: v[0] for k, v in samples.items()}, rounds)})


def test_decision_needs_tolerance_and_significance() -> None:
    base = _baseline(p95_ms=[10.0, 10.2, 9.9, 10.1, 10.0])
    slow = Measurement("m", {"p95_ms": 13}, [{"p95_ms": v} for v in (13.0, 13.2, 12.9, 13.1, 13.0)])
    ctx = GateContext("t", [slow], tolerance=0.15, baseline=base)
    [check] = run_checks(ctx)
    assert check.verdict == "fail" and check.change == pytest.approx(0.3) and check.p_value < 0.01
    assert not check.confirmed
    # overlapping rounds: worse median, not significant -> judged, passed, and said so
    noisy = Measurement("m", {"p95_ms": 12}, [{"p95_ms": v} for v in (12.0, 9.0, 12.5, 8.0, 30.0)])
    [check] = run_checks(GateContext("t", [noisy], tolerance=0.15, baseline=base))
    assert check.verdict == "pass" and "worse but not significant" in check.message


def test_decision_on_confirmation_rounds() -> None:
    base = _baseline(qps=[100.0, 101, 99, 100, 100.5])
    burst = Measurement("m", {"qps": 70}, [{"qps": v} for v in (70.0, 71, 69, 70, 72)])
    ctx = GateContext("t", [burst], tolerance=0.15, baseline=base)
    assert screen(ctx, burst) == ["qps"]
    burst.rounds += [{"qps": v} for v in (99.0, 100, 101, 100, 98)]
    ctx.initial_rounds = {"m": 5}
    [check] = run_checks(ctx)
    assert check.verdict == "pass" and "not confirmed by re-measurement" in check.message


def test_normalisation_scales_time_like_metrics_only() -> None:
    c = compare_samples("qps", [50.0] * 5, [100.0] * 5, speed=0.5)
    assert c.normalised and c.baseline == 50 and c.change == 0
    c = compare_samples("p95_ms", [20.0] * 5, [10.0] * 5, speed=0.5)
    assert c.baseline == 20 and c.change == 0
    c = compare_samples("recall", [0.9] * 5, [0.9] * 5, speed=0.5)
    assert not c.normalised
    assert speed_ratio({"probe": "a", "ops_per_s": 100}, {"probe": "a", "ops_per_s": 50}) == 0.5
    assert speed_ratio({"probe": "a", "ops_per_s": 100}, {"probe": "b", "ops_per_s": 50}) is None


def test_speed_ratios_add_the_components_both_machines_probed() -> None:
    stored = {"probe": "a", "ops_per_s": 100, "components": {"model": 40.0, "gone": 10.0, "bad": 0}}
    current = {"probe": "a", "ops_per_s": 50, "components": {"model": 20.0, "new": 5.0, "bad": 3.0}}
    assert speed_ratios(stored, current) == {PROBE_NAME: 0.5, "model": 0.5}  # Python's under PROBE_NAME
    assert speed_ratios({"probe": "a", "ops_per_s": 100}, current) == {PROBE_NAME: 0.5}  # an older baseline
    assert speed_ratios(None, current) == {}


def test_a_component_probe_that_fails_or_measures_nothing_is_left_out() -> None:
    rates = iter([0.0, 10.0, 30.0, 20.0, 40.0, 50.0])
    assert measure_component(lambda: next(rates)) == 30.0  # the first call warms up, unmeasured

    def broken() -> float:
        raise RuntimeError("model gone")

    assert measure_component(broken) is None
    assert measure_component(lambda: 0.0) is None


def test_benchmark_blocks_and_format() -> None:
    assert _blocks([1.0, 2, 3, 4, 5, 6], 3) == [1.5, 3.5, 5.5]
    assert len(_blocks(list(range(100)), 30)) == 30
    assert [fmt(v) for v in (1234.5, 18.23, 0.00312, 3.0)] == ["1234", "18.2", "0.00312", "3"]


def test_verdict_dict_roundtrip() -> None:
    base = _baseline(qps=[100.0, 101, 99, 100, 100.5])
    m = Measurement("m", {"qps": 60}, [{"qps": 60.0}] * 5)
    checks = run_checks(GateContext("t", [m], baseline=base))
    verdict = TestVerdict("t", "failed", checks, [m], "b.json", ["n"], {"m.qps": (None, 60.0)})
    again = verdict_from_dict(json.loads(json.dumps(verdict.to_dict())))
    assert again.to_dict() == verdict.to_dict()


def test_latency_changes_below_the_jitter_floor_are_never_a_regression() -> None:
    from pytest_agentmem.gate.checks import compare_samples, regressed

    tiny = compare_samples("p95_ms", [0.091, 0.092, 0.090], [0.070, 0.071, 0.069, 0.070, 0.072])
    assert tiny.change > 0.15 and not regressed(tiny, 0.15, 0.05)  # +30%, but 21 us
    real = compare_samples("p95_ms", [9.1, 9.2, 9.0], [7.0, 7.1, 6.9, 7.0, 7.2])
    assert regressed(real, 0.15, 0.05)
    micro = compare_samples("median_ms", [0.04, 0.041, 0.039], [0.01, 0.011, 0.01], kind="benchmark")
    assert regressed(micro, 0.15, 0.05)  # a microbenchmark's medians average many calls: no floor
