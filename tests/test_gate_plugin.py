"""The gate end to end: pytester runs generated perf tests fed with controlled figures.

The generated conftest's ``record`` fixture plays the load runner: it reads the
figures of a measurement from ``figures.json`` (rounds, and the rounds a
re-measurement would give), asks the gate ``pytest_agentmem_confirm_rounds`` like
the runner does at the end of ``perf.run``, appends the extra rounds if asked,
and files the Measurement. The outer test rewrites ``figures.json`` between runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_agentmem.gate.baseline import SCHEMA, VERSION, baseline_path
from pytest_agentmem.gate.calibration import PROBE_NAME

CONFTEST = '''
import json
import statistics
from pathlib import Path

import pytest

from pytest_agentmem.gate.plugin import CALIBRATION_KEY
from pytest_agentmem.measurement import Measurement, measurements_of
from pytest_agentmem.session import get_session

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _calibration(request):
    fixed = HERE / "calibration.json"
    if fixed.exists():
        get_session(request.config).extras[CALIBRATION_KEY] = json.loads(fixed.read_text())


@pytest.fixture
def record(request):
    def _record(name):
        spec = json.loads((HERE / "figures.json").read_text())[name]
        rounds = [dict(r) for r in spec["rounds"]]
        metrics = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        m = Measurement(name, metrics, rounds, kind="record")
        hook = request.config.hook
        extra = hook.pytest_agentmem_confirm_rounds(item=request.node, measurement=m)
        if extra:
            confirm = spec.get("confirm") or spec["rounds"]
            m.rounds += [dict(confirm[i % len(confirm)]) for i in range(extra)]
            m.confirmations = extra
            m.metrics = {k: statistics.median(r[k] for r in m.rounds) for k in m.rounds[0]}
        hook.pytest_agentmem_measurement(item=request.node, measurement=m)
        measurements_of(request.node).append(m)
        return m
    return _record
'''

TESTS = '''
import pytest

@pytest.mark.agentmem_perf(max_p95_ms=50, min_qps=100)
def test_search(record):
    record("search")

@pytest.mark.agentmem_perf
def test_add(record):
    record("add")
'''


def rounds(n: int = 5, **centre: float) -> list[dict[str, float]]:
    """``n`` rounds scattered +-2% around ``centre`` (deterministic)."""
    wiggle = [1.0, 1.02, 0.98, 1.01, 0.99, 1.015, 0.985, 1.005, 0.995, 1.0]
    return [{k: v * wiggle[i % len(wiggle)] for k, v in centre.items()} for i in range(n)]


HEALTHY = {
    "search": {"rounds": rounds(qps=1000, p95_ms=12.0, error_rate=0.0, recall=0.95)},
    "add": {"rounds": rounds(qps=500, p95_ms=4.0, items_per_s=2000)},
}


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_perf=TESTS)
    figures(pytester, HEALTHY)
    return pytester


def figures(pytester: pytest.Pytester, data: dict[str, Any]) -> None:
    (pytester.path / "figures.json").write_text(json.dumps(data))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--agentmem-perf", "-p", "no:cacheprovider", "-p", "no:randomly", *args)


def bdir(pytester: pytest.Pytester) -> Path:
    return pytester.path / "perf_baselines"


def stored(pytester: pytest.Pytester, nodeid: str) -> dict[str, Any]:
    return json.loads(baseline_path(bdir(pytester), nodeid).read_text())


def with_search(**changes: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(HEALTHY))
    data["search"].update(changes)
    return data


# --------------------------------------------------------------------------- thresholds


def test_pass_with_thresholds_and_no_baseline_says_so(project: pytest.Pytester) -> None:
    result = run(project)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*agentmem performance gate*",
        "*test*metric*value*baseline*change*verdict*",
        "*search.p95_ms*12*max 50*pass*",
        "*search.qps*1000*new*",
        "*no baseline yet*--update-baselines*",
    ])


@pytest.mark.parametrize("keyword, value, metric, bad", [
    ("min_qps", 2000, "qps", "1000 < min_qps 2000"),
    ("max_p50_ms", 5, "p50_ms", "8 > max_p50_ms 5"),
    ("max_p95_ms", 10, "p95_ms", "12 > max_p95_ms 10"),
    ("max_p99_ms", 15, "p99_ms", "20 > max_p99_ms 15"),
    ("max_error_rate", 0.01, "error_rate", "0.02 > max_error_rate 0.01"),
    ("min_recall", 0.99, "recall", "0.95 < min_recall 0.99"),
    ("min_items_per_s", 3000, "items_per_s", "2000 < min_items_per_s 3000"),
])
def test_fail_on_each_threshold(pytester: pytest.Pytester, keyword: str, value: float,
                                metric: str, bad: str) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_one=f'''
import pytest

@pytest.mark.agentmem_perf({keyword}={value!r})
def test_one(record):
    record("m")
''')
    centre = {"qps": 1000, "p50_ms": 8, "p95_ms": 12, "p99_ms": 20, "error_rate": 0.02,
              "recall": 0.95, "items_per_s": 2000}
    figures(pytester, {"m": {"rounds": [centre] * 3}})
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"PerformanceRegression: m.{metric} {bad}*"])
    assert "Traceback" not in result.stdout.str()


def test_threshold_on_unmeasured_metric_is_an_error_naming_the_measured_ones(project: pytest.Pytester) -> None:
    project.makepyfile(test_perf='''
import pytest

@pytest.mark.agentmem_perf(max_p95_msec=10)
def test_search(record):
    record("search")
''')
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ConfigurationError*max_p95_msec*did not measure*"
                                 "measured metrics: error_rate, p95_ms, qps, recall*"])


def test_threshold_breach_is_remeasured_before_failing(project: pytest.Pytester) -> None:
    """A threshold breached in the first rounds only (a noise burst) does not fail."""
    figures(project, with_search(rounds=rounds(3, qps=1000, p95_ms=80.0),
                                 confirm=rounds(9, qps=1000, p95_ms=12.0)))
    result = run(project)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*search.p95_ms*12*max 50*pass*"])


# --------------------------------------------------------------------------- baselines


def test_update_baselines_cycle(project: pytest.Pytester) -> None:
    first = run(project, "--update-baselines")
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines(["*search.qps*1000*(none)*updated*"])
    data = stored(project, "test_perf.py::test_search")
    assert data["schema"] == SCHEMA and data["version"] == VERSION
    assert data["nodeid"] == "test_perf.py::test_search"
    assert [r["qps"] for r in data["measurements"]["search"]["rounds"]] == [
        r["qps"] for r in HEALTHY["search"]["rounds"]]
    assert {"machine", "stack"} <= set(data["fingerprint"])
    assert data["fingerprint"]["machine"]["cpu_count"] == os.cpu_count()
    assert data["calibration"]["probe"] == PROBE_NAME
    text = baseline_path(bdir(project), "test_perf.py::test_search").read_text()
    assert text == json.dumps(data, sort_keys=True, indent=2) + "\n"  # key-sorted
    assert not list(bdir(project).glob(".*.tmp"))  # no temp file left behind

    same = run(project)
    same.assert_outcomes(passed=2)
    same.stdout.fnmatch_lines(["*search.qps*1000*1000*pass*"])

    figures(project, with_search(rounds=rounds(qps=1300, p95_ms=9.0, error_rate=0.0, recall=0.95)))
    better = run(project, "--update-baselines")
    better.assert_outcomes(passed=2)
    better.stdout.fnmatch_lines(["*search.p95_ms*9*12*-25%*updated*", "*search.qps*1300*1000*+30%*updated*"])
    assert stored(project, "test_perf.py::test_search")["measurements"]["search"]["metrics"]["qps"] == 1300


def test_regression_fails_with_exact_reason(project: pytest.Pytester) -> None:
    run(project, "--update-baselines").assert_outcomes(passed=2)
    slow = rounds(qps=1000, p95_ms=18.0, error_rate=0.0, recall=0.95)
    figures(project, with_search(rounds=slow, confirm=slow))
    result = run(project)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*PerformanceRegression: search.p95_ms 18 > baseline 12 (+50%, tolerance 15%, p=0.0*, confirmed on re-run)",
        "*search.p95_ms*18*12*+50%*FAIL (re-run)*",
    ])
    # the higher-is-better direction, and a per-test tolerance
    low = rounds(qps=800, p95_ms=12.0, error_rate=0.0, recall=0.95)
    figures(project, with_search(rounds=low, confirm=low))
    result = run(project)
    result.stdout.fnmatch_lines(["*search.qps 800 < baseline 1000 (-20%, tolerance 15%, p=0.0*"])
    project.makepyfile(test_perf=TESTS.replace("min_qps=100)", "min_qps=100, tolerance=0.25)"))
    run(project).assert_outcomes(passed=2)


def test_noise_burst_not_confirmed_on_rerun_passes_with_warning(project: pytest.Pytester) -> None:
    run(project, "--update-baselines").assert_outcomes(passed=2)
    figures(project, with_search(rounds=rounds(qps=1000, p95_ms=30.0, error_rate=0.0, recall=0.95),
                                 confirm=HEALTHY["search"]["rounds"]))
    result = run(project)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*search.p95_ms*12*12*warn*"])


def test_regression_within_tolerance_passes(project: pytest.Pytester) -> None:
    run(project, "--update-baselines").assert_outcomes(passed=2)
    figures(project, with_search(rounds=rounds(qps=920, p95_ms=13.2, error_rate=0.0, recall=0.95)))
    result = run(project)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*search.p95_ms*13.2*12*+10%*pass*"])


def test_update_does_not_write_a_test_that_failed(project: pytest.Pytester) -> None:
    project.makepyfile(test_perf=TESTS + '''
@pytest.mark.agentmem_perf
def test_broken(record):
    record("search")
    raise AssertionError("the body failed")

@pytest.mark.agentmem_perf(max_p95_ms=1)
def test_too_slow(record):
    record("search")
''')
    result = run(project, "--update-baselines")
    result.assert_outcomes(passed=2, failed=2)
    assert not baseline_path(bdir(project), "test_perf.py::test_broken").exists()
    assert not baseline_path(bdir(project), "test_perf.py::test_too_slow").exists()
    assert baseline_path(bdir(project), "test_perf.py::test_search").exists()
    result.stdout.fnmatch_lines(["*baseline not updated: the test failed its thresholds*"])


@pytest.mark.parametrize("content, why", [
    ("{not json", "is not valid JSON"),
    (json.dumps({"schema": SCHEMA, "version": 1, "measurements": {"search": {"metrics": {"qps": "fast"}}}}),
     "metric 'qps' must be a number"),
    (json.dumps({"schema": SCHEMA, "version": VERSION + 1, "measurements": {}}),
     f"has schema version {VERSION + 1}, newer than this pytest-agentmem reads"),
])
@pytest.mark.parametrize("update", [False, True])
def test_malformed_or_future_baseline_is_a_clear_error_and_untouched(
        project: pytest.Pytester, content: str, why: str, update: bool) -> None:
    path = baseline_path(bdir(project), "test_perf.py::test_search")
    path.parent.mkdir()
    path.write_text(content)
    before = path.stat().st_mtime_ns
    result = run(project, *(["--update-baselines"] if update else []))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"BaselineError: baseline file {path}*{why}*fix: *"
                                 + ("(--update-baselines does not overwrite it)" if update else "")])
    assert path.read_text() == content and path.stat().st_mtime_ns == before
    assert "Traceback" not in result.stdout.str()


def _foreign_baseline(pytester: pytest.Pytester, qps: float, p95: float, ops_per_s: float) -> None:
    """A baseline of test_search recorded on a machine twice as fast (by its probe)."""
    path = baseline_path(bdir(pytester), "test_perf.py::test_search")
    path.parent.mkdir(exist_ok=True)
    data = {
        "schema": SCHEMA, "version": VERSION, "nodeid": "test_perf.py::test_search",
        "created": "2025-01-01T00:00:00+00:00",
        "fingerprint": {"machine": {"cpu_model": "Fast CPU 9000", "cpu_count": 64, "memory_gb": 512,
                                    "os": "Linux", "arch": "x86_64"}, "stack": {"python": "3.11.7"}},
        "calibration": {"probe": PROBE_NAME, "ops_per_s": ops_per_s, "spread": 0.02},
        "measurements": {"search": {"kind": "record", "metrics": {"qps": qps, "p95_ms": p95},
                                    "rounds": rounds(qps=qps, p95_ms=p95)}},
    }
    path.write_text(json.dumps(data))
    (pytester.path / "calibration.json").write_text(json.dumps(
        {"probe": PROBE_NAME, "ops_per_s": ops_per_s / 2, "spread": 0.03, "samples": []}))


def test_baseline_from_another_machine_is_normalised_and_warned(project: pytest.Pytester) -> None:
    # recorded on a 2x faster machine: 2000 qps / 6 ms there is 1000 qps / 12 ms here
    _foreign_baseline(project, qps=2000, p95=6.0, ops_per_s=80000)
    result = run(project)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*search.p95_ms*12*12[*]*pass*",
        "*baseline recorded on another machine (cpu_model: 'Fast CPU 9000' -> *normalised by the "
        "calibration probe (this machine runs it at 0.50x*tolerance widened by 5%*",
    ])
    # the gate is still on: 50% slower than the normalised baseline fails
    slow = rounds(qps=1000, p95_ms=18.0, error_rate=0.0, recall=0.95)
    figures(project, with_search(rounds=slow, confirm=slow))
    result = run(project)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*search.p95_ms 18 > baseline 12 (normalised to this machine) "
                                 "(+50%, tolerance 20%*confirmed on re-run)"])


def test_marker_baseline_false_checks_thresholds_only(project: pytest.Pytester) -> None:
    project.makepyfile(test_perf=TESTS.replace("min_qps=100)", "min_qps=100, baseline=False)"))
    result = run(project, "--update-baselines")
    result.assert_outcomes(passed=2)
    assert not baseline_path(bdir(project), "test_perf.py::test_search").exists()
    assert baseline_path(bdir(project), "test_perf.py::test_add").exists()


def test_verdicts_are_filed_for_the_reports(project: pytest.Pytester) -> None:
    from pytest_agentmem.gate.verdict import TestVerdict
    from pytest_agentmem.session import get_session

    run(project, "--update-baselines")
    slow = rounds(qps=1000, p95_ms=18.0, error_rate=0.0, recall=0.95)
    figures(project, with_search(rounds=slow, confirm=slow))
    result = project.inline_run("--agentmem-perf", "-p", "no:cacheprovider")
    config = result.getcalls("pytest_terminal_summary")[0].config
    verdicts = {v.nodeid: v for v in get_session(config).results}
    search = verdicts["test_perf.py::test_search"]
    assert isinstance(search, TestVerdict) and search.outcome == "failed"
    failing = {c.metric: c for c in search.failures}
    assert set(failing) == {"p95_ms"}
    assert failing["p95_ms"].confirmed and 0.45 < failing["p95_ms"].change < 0.55
    assert json.loads(json.dumps(search.to_dict()))["checks"][0]["measurement"] == "search"
    assert verdicts["test_perf.py::test_add"].outcome == "passed"


# --------------------------------------------------------------------------- xdist


def test_xdist_update_and_gate(project: pytest.Pytester) -> None:
    project.makepyfile(test_more=TESTS.replace("test_search", "test_search2").replace("test_add", "test_add2"))
    result = run(project, "-n", "2", "-p", "no:benchmark", "--update-baselines")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*agentmem performance gate*", "*gate: 4 updated*"])
    assert len(list(bdir(project).glob("*.json"))) == 4
    slow = rounds(qps=1000, p95_ms=18.0, error_rate=0.0, recall=0.95)
    figures(project, with_search(rounds=slow, confirm=slow))
    result = run(project, "-n", "2", "-p", "no:benchmark")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*gate: 2 failed, 2 passed*"])


# --------------------------------------------------------------------------- pytest-benchmark


BENCH = '''
import hashlib, os

WORK = int(os.environ.get("GATE_BENCH_WORK", "1"))
TEXT = b"agent memory " * 2000

def work():
    for _ in range(WORK):
        hashlib.sha256(TEXT).digest()

def test_hash(benchmark):
    benchmark.pedantic(work, rounds=40, iterations=5, warmup_rounds=2)
'''


def test_pytest_benchmark_results_are_gated(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_bench=BENCH)
    args = ("-p", "no:cacheprovider", "--benchmark-disable-gc")
    first = pytester.runpytest(*args, "--update-baselines")
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["*benchmark.median_ms*updated*"])
    data = stored(pytester, "test_bench.py::test_hash")
    assert data["measurements"]["benchmark"]["kind"] == "benchmark"
    assert len(data["measurements"]["benchmark"]["rounds"]) == 30
    monkeypatch.setenv("GATE_BENCH_WORK", "4")  # 4x the real work
    slow = pytester.runpytest(*args)
    slow.assert_outcomes(failed=1)
    slow.stdout.fnmatch_lines(["*benchmark.median_ms * > baseline * (+*%, tolerance 15%, p=*"])


# --------------------------------------------------------------------------- the real perf fixture


def test_real_perf_fixture_baseline_gets_enough_rounds(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_real='''
import asyncio
import pytest

@pytest.mark.agentmem_perf(tolerance=50, max_error_rate=0)
async def test_noop(perf):
    async def op(i):
        await asyncio.sleep(0)
    await perf.run(op, concurrency=2, total=50, name="noop")
    perf.record("quality", recall=1.0)
''')
    first = run(pytester, "--update-baselines")
    first.assert_outcomes(passed=1)
    data = stored(pytester, "test_real.py::test_noop")
    assert len(data["measurements"]["noop"]["rounds"]) == 5  # topped up for the statistics
    assert data["measurements"]["quality"]["metrics"] == {"recall": 1.0}
    again = run(pytester)
    again.assert_outcomes(passed=1)
    again.stdout.fnmatch_lines(["*noop.qps*pass*", "*quality.recall*1*1*pass*"])
