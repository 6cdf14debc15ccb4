"""A CPU figure that moved with its own model yardstick moved with the machine, not the code.

``cpu_model_ratio`` (a measurement's CPU in units of the embedding model's, in the same
rounds) judges the code outside the model; a failed ``cpu_ms_per_op`` or
``model_cpu_ms_per_op`` whose ratio stayed within the tolerance of its baseline is not
judged, and said so; a change of one part only moves the ratio and fails.
"""

from __future__ import annotations

import pytest
from gate_project import figures, make_project, rounds, run, with_search

from pytest_agentmem.gate.checks import not_judged
from pytest_agentmem.gate.verdict import CheckResult, TestVerdict
from pytest_agentmem.gate.yardstick import MOVED_WITH_THE_MODEL


def _search(cpu: float, model: float, ratio: float) -> dict:
    return with_search(rounds=rounds(qps=1000, p95_ms=12.0, error_rate=0.0, recall=0.95, cpu_ms_per_op=cpu,
                                     model_cpu_ms_per_op=model, cpu_model_ratio=ratio))


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    project = make_project(pytester)
    figures(project, _search(cpu=4.0, model=2.0, ratio=2.0))
    run(project, "--update-baselines").assert_outcomes(passed=2)
    return project


def test_a_machine_slower_for_the_model_and_the_rest_alike_is_not_a_regression(project: pytest.Pytester) -> None:
    figures(project, _search(cpu=5.2, model=2.58, ratio=2.02))  # +30 % CPU, the model +29 %
    result = run(project, "--agentmem-strict")
    result.assert_outcomes(passed=2)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([
        "*search.cpu_model_ratio*2.02*2*+1%*pass*",
        "*search.cpu_ms_per_op*5.2*4*not judged: moved with the model*",
        "*not judged (*): the embedding model, measured in the same rounds, moved with it (search.cpu_model_ratio "
        "+1.0% against its baseline, within the 15% tolerance): the machine's speed moved, not the code; "
        "cpu_model_ratio judges the code outside the model"])
    assert "not fully judged" not in result.stdout.str()  # the ratio answered for the code


def test_code_outside_the_model_made_slower_fails_on_the_ratio(project: pytest.Pytester) -> None:
    figures(project, _search(cpu=5.2, model=2.0, ratio=2.6))  # the model as before, the rest +60 %
    result = run(project)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*search.cpu_model_ratio 2.6 > baseline 2*", "*search.cpu_ms_per_op 5.2 > baseline 4*"])


def test_the_models_own_work_made_larger_is_judged_as_measured(project: pytest.Pytester) -> None:
    figures(project, _search(cpu=6.0, model=4.0, ratio=1.5))  # a text embedded twice: the ratio falls
    result = run(project)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*search.model_cpu_ms_per_op 4 > baseline 2*"])


def test_only_a_failed_cpu_figure_of_a_stored_baseline_with_a_ratio_is_excused() -> None:
    def check(metric: str, verdict: str, raw: float, kind: str = "baseline", measurement: str = "m") -> CheckResult:
        return CheckResult(measurement=measurement, metric=metric, value=1.0, baseline=1.0, limit=None,
                           change=raw, tolerance=0.1, p_value=0.001, confirmed=True, verdict=verdict,  # type: ignore[arg-type]
                           message=f"{metric}", kind=kind, raw_change=raw)  # type: ignore[arg-type]

    verdict = TestVerdict(nodeid="t::x", outcome="passed")
    verdict.checks = [check("cpu_model_ratio", "pass", -0.08), check("cpu_ms_per_op", "fail", 0.3),
                      check("model_cpu_ms_per_op", "fail", 0.3), check("qps", "fail", -0.3),
                      check("cpu_ms_per_op", "fail", 0.3, measurement="other"),
                      check("cpu_ms_per_op", "fail", 0.3, kind="paired")]
    verdict.settle()
    assert [c.verdict for c in verdict.checks] == ["pass", "not-judged", "not-judged", "fail", "fail", "fail"]
    assert verdict.checks[1].reason == MOVED_WITH_THE_MODEL and verdict.outcome == "failed"
    beyond = TestVerdict(nodeid="t::y", outcome="passed")  # the ratio moved beyond the tolerance: as measured
    beyond.checks = [check("cpu_model_ratio", "pass", -0.2), check("cpu_ms_per_op", "fail", 0.3)]
    beyond.settle()
    assert beyond.outcome == "failed"
    unknown = TestVerdict(nodeid="t::z", outcome="passed")  # a ratio without a baseline excuses nothing
    unknown.checks = [not_judged("m", "cpu_model_ratio", 2.0, "new figure", "new"), check("cpu_ms_per_op", "fail", 0.3)]
    unknown.settle()
    assert unknown.outcome == "failed"


def test_a_figure_that_moved_with_the_model_is_not_run_again_in_fresh_processes() -> None:
    from pytest_agentmem.gate.reproduce import suspect

    moved = CheckResult(measurement="m", metric="cpu_ms_per_op", value=1.3, baseline=1.0, limit=None, change=0.3,
                        tolerance=0.1, p_value=0.001, confirmed=False, verdict="not-judged", message="",
                        kind="baseline", reason=MOVED_WITH_THE_MODEL)
    assert not suspect(moved)  # the same machine would measure it again: nothing to decide there
    moved.reason = "runs spread"
    assert suspect(moved)
