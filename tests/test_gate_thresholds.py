"""The gate end to end, absolute thresholds: pass, fail on each, unknown metric, re-measured
breach, and ``reference=False`` (thresholds only). Figures come from ``gate_project``.
"""

from __future__ import annotations

import pytest
from gate_project import CONFTEST, TESTS, bdir, figures, make_project, rounds, run, with_search

from pytest_agentmem.gate.baseline import baseline_path


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    return make_project(pytester)


def test_pass_with_thresholds_and_no_baseline_says_so(project: pytest.Pytester) -> None:
    result = run(project)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*agentmem performance gate*",
        "*test*metric*value*baseline*change*verdict*",
        "*search.p95_ms*12*max 50*pass*",
        "*search.qps*1000*not judged: no baseline*",
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


def test_marker_baseline_false_checks_thresholds_only(project: pytest.Pytester) -> None:
    project.makepyfile(test_perf=TESTS.replace("min_qps=100)", "min_qps=100, reference=False)"))
    result = run(project, "--update-baselines")
    result.assert_outcomes(passed=2)
    assert not baseline_path(bdir(project), "test_perf.py::test_search").exists()
    assert baseline_path(bdir(project), "test_perf.py::test_add").exists()
