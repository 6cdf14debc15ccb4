"""The gate end to end, the decision against a stored baseline: a confirmed regression fails
with its reason, noise and changes within the tolerance pass, a malformed or newer file is
an error. Figures come from ``gate_project``; another machine's baselines: test_gate_across.py.
"""

from __future__ import annotations

import json

import pytest
from gate_project import HEALTHY, TESTS, bdir, figures, make_project, rounds, run, with_search

from pytest_agentmem.gate.baseline import SCHEMA, VERSION, baseline_path


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    return make_project(pytester)


def test_regression_fails_with_exact_reason(project: pytest.Pytester) -> None:
    run(project, "--update-baselines").assert_outcomes(passed=2)
    slow = rounds(qps=1000, p95_ms=18.0, error_rate=0.0, recall=0.95)
    figures(project, with_search(rounds=slow, confirm=slow))
    result = run(project)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*PerformanceRegression: search.p95_ms 18 > baseline 12 (+50%, tolerance 15%, p=0.0*, confirmed by re-measurement)",
        "*search.p95_ms*18*12*+50%*FAIL (re-measured)*",
    ])
    # the higher-is-better direction, and a per-test tolerance
    low = rounds(qps=800, p95_ms=12.0, error_rate=0.0, recall=0.95)
    figures(project, with_search(rounds=low, confirm=low))
    result = run(project)
    result.stdout.fnmatch_lines(["*search.qps 800 < baseline 1000 (-20%, tolerance 15%, p=0.0*"])
    project.makepyfile(test_perf=TESTS.replace("min_qps=100)", "min_qps=100, tolerance=0.25)"))
    run(project).assert_outcomes(passed=2)


def test_noise_burst_not_confirmed_on_rerun_passes_with_a_note(project: pytest.Pytester) -> None:
    run(project, "--update-baselines").assert_outcomes(passed=2)
    figures(project, with_search(rounds=rounds(qps=1000, p95_ms=30.0, error_rate=0.0, recall=0.95),
                                 confirm=HEALTHY["search"]["rounds"]))
    result = run(project)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*search.p95_ms*12*12*pass*"])


def test_regression_within_tolerance_passes(project: pytest.Pytester) -> None:
    run(project, "--update-baselines").assert_outcomes(passed=2)
    figures(project, with_search(rounds=rounds(qps=920, p95_ms=13.2, error_rate=0.0, recall=0.95)))
    result = run(project)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*search.p95_ms*13.2*12*+10%*pass*"])


@pytest.mark.parametrize("content, why", [
    ("{not json", "is not valid JSON"),
    (json.dumps({"schema": SCHEMA, "version": 1, "measurements": {"search": {"metrics": {"qps": "fast"}}}}),
     "metric 'qps' must be a number"),
    (json.dumps({"schema": SCHEMA, "version": VERSION + 1, "measurements": {}}),
     f"has schema version {VERSION + 1}, newer than this pytest-agentmem reads"),
    # an integer beyond a float, and nesting deeper than the parser's recursion: BaselineError too
    (json.dumps({"schema": SCHEMA, "version": 1, "measurements": {"search": {"metrics": {"qps": 0}}}})
     .replace('"qps": 0', '"qps": 1' + "0" * 400),
     "is malformed: OverflowError"),
    ("[" * 200_000 + "]" * 200_000, "is malformed: RecursionError"),
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

