"""Judged or not judged, never confused: the headline counts them apart, a skipped perf test
is named, ``--agentmem-strict`` (on by default under CI=true) fails a run that did not judge
everything, and a changed workload is not compared with the old baseline.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from gate_project import bdir, figures, make_project, rounds, run, stored, with_search

SKIPPING = '''
import pytest

@pytest.mark.agentmem_perf
def test_needs_data():
    pytest.skip("no LoCoMo data: run python -m pytest_agentmem.datasets.locomo download")
'''


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    return make_project(pytester)


def test_a_skipped_perf_test_is_named_and_strict_fails_the_run(project: pytest.Pytester) -> None:
    run(project, "--update-baselines").assert_outcomes(passed=2)
    project.makepyfile(test_data=SKIPPING)
    result = run(project)
    result.assert_outcomes(passed=2, skipped=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["2 perf tests: correctness 1 passed; speed 2 passed; 1 skipped: "
                                 "test_data.py::test_needs_data (no LoCoMo data: run python -m "
                                 "pytest_agentmem.datasets.locomo download)"])
    strict = run(project, "--agentmem-strict")
    assert strict.ret == 1
    strict.stdout.fnmatch_lines(["--agentmem-strict: the run fails: 1 perf test not fully judged",
                                 "  test_data.py::test_needs_data: skipped (no LoCoMo data*"])


@pytest.mark.parametrize("how, strict", [
    ([], False), (["CI=true"], True), (["CI=true", "AGENTMEM_STRICT=0"], False), (["AGENTMEM_STRICT=1"], True),
])
def test_strict_is_on_by_default_under_ci(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                          how: list[str], strict: bool) -> None:
    for pair in how:
        name, value = pair.split("=")
        monkeypatch.setenv(name, value)
    result = run(project)  # no baselines: every comparison not judged
    result.assert_outcomes(passed=2)
    assert result.ret == (1 if strict else 0)
    assert ("--agentmem-strict: the run fails" in result.stdout.str()) == strict


def test_without_the_perf_flag_strict_asks_nothing(project: pytest.Pytester) -> None:
    result = project.runpytest("-p", "no:cacheprovider", "--agentmem-strict")
    result.assert_outcomes(skipped=2)
    assert result.ret == 0


def test_a_changed_workload_is_not_judged_against_the_old_baseline(project: pytest.Pytester) -> None:
    run(project, "--update-baselines").assert_outcomes(passed=2)
    path = bdir(project)
    data = stored(project, "test_perf.py::test_search")
    data["measurements"]["search"]["workload"] = {"concurrency": 16, "dataset": "corpus-a"}
    files = [p for p in path.glob("*.json") if json.loads(p.read_text())["nodeid"].endswith("test_search")]
    files[0].write_text(json.dumps(data))
    project.makeconftest(project.path.joinpath("conftest.py").read_text() + '''

def pytest_agentmem_measurement(item, measurement):
    measurement.workload.update(concurrency=8, dataset="corpus-a")
''')
    result = run(project)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*search.p95_ms*not judged: workload changed*",
        "*not judged (*figures): workload changed (concurrency 16 -> 8); record a baseline of this "
        "workload with --update-baselines",
    ])


def test_a_figure_the_baseline_was_recorded_without_is_not_judged_and_strict_lets_it_be(
        project: pytest.Pytester) -> None:
    run(project, "--update-baselines").assert_outcomes(passed=2)
    # an upgrade measures a figure the baselines were recorded without (cpu_model_ratio, say)
    figures(project, with_search(rounds=rounds(qps=1000, p95_ms=12.0, error_rate=0.0, recall=0.95,
                                               cpu_model_ratio=1.9)))
    result = run(project, "--agentmem-strict")
    result.assert_outcomes(passed=2)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([
        "*search.cpu_model_ratio*not judged: new figure*",
        "not judged (1 figure): a figure its baseline was recorded without (by an earlier pytest-agentmem, or "
        "a run where it was not measured); record the baseline again with --update-baselines to judge it"])
    assert "not fully judged" not in result.stdout.str()
    run(project, "--update-baselines").assert_outcomes(passed=2)  # recorded again: judged
    again = run(project, "--agentmem-strict")
    assert again.ret == 0
    again.stdout.fnmatch_lines(["*search.cpu_model_ratio*1.9*1.9*pass*"])


def _check(metric: str, verdict: str, reason: str | None = None, measurement: str = "search") -> Any:
    from pytest_agentmem.gate.verdict import CheckResult

    return CheckResult(measurement=measurement, metric=metric, value=1.0, baseline=1.0, limit=None, change=0.0,
                       tolerance=0.05, p_value=0.5, confirmed=False, verdict=verdict,  # type: ignore[arg-type]
                       message="", kind="paired", reason=reason)


def test_strict_takes_an_ab_run_decided_on_its_cpu_cost_as_judged() -> None:
    from pytest_agentmem.gate.summary import strict_problems
    from pytest_agentmem.gate.verdict import TestVerdict

    wall = _check("p95_ms", "not-judged", "sides unequal")
    decided = TestVerdict("t.py::test_a", "not-judged", [wall, _check("cpu_ms_per_op", "pass")])
    assert strict_problems([decided], {}) == []
    # the CPU figure of that run not judged either, or another run's: the run was not checked
    undecided = TestVerdict("t.py::test_b", "not-judged", [wall, _check("cpu_ms_per_op", "not-judged", "new")])
    elsewhere = TestVerdict("t.py::test_c", "not-judged", [wall, _check("cpu_ms_per_op", "pass", measurement="add")])
    busy = TestVerdict("t.py::test_d", "not-judged", [_check("p95_ms", "not-judged", "machine busy"),
                                                      _check("cpu_ms_per_op", "pass")])
    problems = strict_problems([decided, undecided, elsewhere, busy], {})
    assert [line.split(": ")[0] for line in problems] == ["t.py::test_b", "t.py::test_c", "t.py::test_d"]
