"""Several recordings of one baseline: each figure judged within its own run-to-run spread.

Units (the spread, its bound, the merge) and the gate end to end with ``gate_project``'s
controlled figures: ``--agentmem-add-recording`` pools runs, and a figure whose runs
spread more than its tolerance is not judged when within that spread, fails beyond it.
"""

from __future__ import annotations

import math
import statistics

import pytest
from gate_project import bdir, figures, make_project, rounds, run, stored, with_search

from pytest_agentmem.errors import BaselineError
from pytest_agentmem.gate.baseline import (
    Baseline,
    StoredMeasurement,
    baseline_path,
    load_baseline,
    with_recording,
)
from pytest_agentmem.gate.recordings import (
    MAX_RECORDINGS,
    MIN_RECORDINGS,
    RUN_KEY,
    RunSpread,
    centres,
    relative_spread,
    run_spread,
)


def test_run_spread_needs_three_recordings_and_bounds_one_more_run() -> None:
    assert run_spread([{"cpu": 1.0}, {"cpu": 1.1}], "cpu") is None
    spread = run_spread([{"cpu": 1.0}, {"cpu": 1.1}, {"cpu": 0.9}, {"qps": 5.0}], "cpu")
    assert spread is not None and spread.n == MIN_RECORDINGS
    # t(0.975, 2 df) = 4.303: one more unchanged run lands this far worse 1 time in 40
    assert math.isclose(spread.p_worse(math.exp(4.303 * spread.sd * math.sqrt(1 + 1 / 3))), 0.025, abs_tol=1e-4)
    assert RunSpread(0.02, 10).p_worse(1.05) < RunSpread(0.02, 3).p_worse(1.05)  # more recordings, sharper
    assert run_spread([{"cpu": 0.0}] * 5, "cpu") is None  # no positive figure: no log spread
    assert centres([{"qps": 1.0}, {"qps": 3.0}, {"qps": 2.0}], {"qps": 9.0, "recall": 0.5}) == {
        "qps": 2.0, "recall": 0.5}


def test_the_spread_relative_to_tests_recorded_in_the_same_runs_takes_out_what_they_share() -> None:
    # five recordings made in five runs; the machine moved every test by the same factor in each
    machine = [1.0, 1.12, 0.95, 1.2, 0.9]
    own = [{"cpu": 4.0 * m * (1 + 0.01 * (-1) ** i), RUN_KEY: 100.0 + i} for i, m in enumerate(machine)]
    peers = [[{"cpu": base * m, RUN_KEY: 100.0 + i} for i, m in enumerate(machine)] for base in (1.0, 3.0, 7.0)]
    raw, relative = run_spread(own, "cpu"), relative_spread(own, peers, "cpu")
    assert raw is not None and relative is not None and relative.n == 5
    assert raw.sd > 0.1 and relative.sd < 0.015  # only the test's own 1 % wobble is left
    # recordings of other runs do not count; nor do recordings that name no run
    strangers = [[{"cpu": 1.0 * m, RUN_KEY: 200.0 + i} for i, m in enumerate(machine)]] * 3
    assert relative_spread(own, strangers, "cpu") is None
    unnamed = [{k: v for k, v in r.items() if k != RUN_KEY} for r in own]
    assert relative_spread(unnamed, peers, "cpu") is None
    # a run needs two peers recorded in it, and three such runs are the fewest
    assert relative_spread(own, peers[:1], "cpu") is None
    assert relative_spread(own[:2], peers, "cpu") is None


def test_several_runs_are_judged_together_against_the_recordings() -> None:
    spread = RunSpread(0.10, 5)  # a figure that moves 10 % from run to run, recorded 5 times
    assert spread.p_worse_runs([1.3]) == spread.p_worse(1.3)  # one run: as before
    three = spread.p_worse_runs([1.3, 1.3, 1.3])
    assert three < spread.p_worse(1.3) / 2  # three runs that agree: a sharper answer
    # the same mean, three runs far apart: their own spread counts (pooled), a weaker answer
    assert spread.p_worse_runs([1.0, 1.3, 1.69]) > three
    # runs closer than the recordings: never sharper than the recordings' own spread allows
    assert spread.p_worse_runs([1.3, 1.3, 1.3]) == pytest.approx(spread.p_worse_runs([1.29, 1.3, 1.31]), rel=1e-3)
    assert spread.p_worse_runs([1.0, 1.0, 1.0]) == pytest.approx(0.5)
    assert spread.p_worse_runs([1.3, math.inf]) == spread.p_worse(1.3)  # a run with no figure: each alone
    with pytest.raises(ValueError):
        spread.p_worse_runs([])


def test_a_figure_worse_than_its_tolerance_but_undecided_is_a_suspect() -> None:
    from pytest_agentmem.gate.checks import SPREAD, not_judged
    from pytest_agentmem.gate.reproduce import SCREEN_P, suspect

    undecided = not_judged("search", "cpu_ms_per_op", 5.0, SPREAD, "it moves 11 % ...", 3.8)
    assert not suspect(undecided)  # no change, no p-value: nothing to go on
    undecided.change, undecided.tolerance, undecided.p_value = 0.30, 0.07, SCREEN_P
    assert suspect(undecided)
    undecided.p_value = SCREEN_P * 1.5
    assert not suspect(undecided)  # too likely on unchanged code to spend fresh processes on
    undecided.p_value, undecided.change = 0.01, 0.05
    assert not suspect(undecided)  # within its tolerance


def _baseline(*recorded: float, workload: dict | None = None) -> Baseline:
    m = StoredMeasurement("load", {"qps": recorded[-1]}, tuple({"qps": v} for v in recorded),
                          workload=workload or {"concurrency": 8},
                          recordings=({"qps": sorted(recorded)[len(recorded) // 2]},))
    return Baseline("t::x", {"search": m})


def test_with_recording_pools_the_same_workload_and_restarts_another() -> None:
    merged, counts = with_recording(_baseline(100, 101, 99), _baseline(110, 111, 109))
    m = merged.measurements["search"]
    assert counts == {"search": 2} and [r["qps"] for r in m.recordings] == [100, 110]
    assert len(m.rounds) == 6 and m.metrics["qps"] == 105  # the median over the recordings
    again, counts = with_recording(merged, _baseline(120, 121, 119))
    assert counts == {"search": 3} and run_spread(again.measurements["search"].recordings, "qps") is not None
    restarted, counts = with_recording(again, _baseline(50, 51, 49, workload={"concurrency": 16}))
    assert counts == {"search": 1} and len(restarted.measurements["search"].rounds) == 3
    full = merged
    for _ in range(MAX_RECORDINGS + 3):
        full, counts = with_recording(full, _baseline(100, 101, 99))
    assert counts == {"search": MAX_RECORDINGS}


def test_a_baseline_with_malformed_recordings_is_refused(tmp_path) -> None:
    path = tmp_path / "b.json"
    path.write_text('{"schema": "pytest-agentmem-baseline", "version": 1, "measurements": '
                    '{"search": {"metrics": {"qps": 1}, "recordings": [{"qps": "fast"}]}}}')
    with pytest.raises(BaselineError, match='"recordings" must be a list of objects of numbers'):
        load_baseline(path)


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    return make_project(pytester)


def _search_at(project: pytest.Pytester, qps: float) -> None:
    """The search test measures ``qps`` this time (its other figures as healthy)."""
    figures(project, with_search(rounds=rounds(qps=qps, p95_ms=12.0, error_rate=0.0, recall=0.95)))


def _fails_at_the_end(result: pytest.RunResult, message: str) -> None:
    """Every test passed its body; the search figure, decided at the end of the run, failed it."""
    result.assert_outcomes(passed=2)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["FAILED test_perf.py::test_search (judged at the end of the run*", message])


def _record_three(project: pytest.Pytester, *qps: float) -> None:
    for i, value in enumerate(qps):
        _search_at(project, value)
        extra = ("--agentmem-add-recording",) if i else ()
        run(project, "--update-baselines", *extra).assert_outcomes(passed=2)


def test_add_recording_wants_update_baselines(project: pytest.Pytester) -> None:
    result = run(project, "--agentmem-add-recording")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--agentmem-add-recording*use it with --update-baselines*"])


def test_recordings_are_pooled_and_said(project: pytest.Pytester) -> None:
    _record_three(project, 1000, 1040, 960)
    data = stored(project, "test_perf.py::test_search")["measurements"]["search"]
    assert [r["qps"] for r in data["recordings"]] == pytest.approx([1000, 1040, 960])
    assert len(data["rounds"]) == 15
    # a plain --update-baselines starts again from one recording
    run(project, "--update-baselines").assert_outcomes(passed=2)
    assert len(stored(project, "test_perf.py::test_search")["measurements"]["search"]["recordings"]) == 1


def test_a_figure_whose_runs_spread_more_than_its_tolerance_is_not_judged_within_it(
        project: pytest.Pytester) -> None:
    _record_three(project, 1000, 1300, 800)  # qps moves ~25 % from run to run
    _search_at(project, 850)
    within = run(project, "--agentmem-report=r.json")
    within.assert_outcomes(passed=2)
    within.stdout.fnmatch_lines(["*search.qps*850*1000*not judged: runs spread*",
                                 "*from run to run over 3 recordings on this machine, too much to tell a change "
                                 "of 15% from it (-15% this run)*"])
    assert "FAIL" not in within.stdout.str()
    _search_at(project, 105)
    _fails_at_the_end(run(project), "*search.qps 105 < baseline*beyond its run-to-run spread*")


def test_a_figure_whose_runs_agree_is_judged_at_its_tolerance(project: pytest.Pytester) -> None:
    _record_three(project, 1000, 1005, 995)
    _search_at(project, 800)
    _fails_at_the_end(run(project), "*search.qps 800 < baseline 1*(-20%, tolerance 15%*")
    assert baseline_path(bdir(project), "test_perf.py::test_search").exists()
    # the other test was recorded three times too, at its own figures
    add = stored(project, "test_perf.py::test_add")["measurements"]["add"]["recordings"]
    assert [r["qps"] for r in add] == pytest.approx([500, 500, 500])


SIX = "\n".join(f'''
@pytest.mark.agentmem_perf
def test_t{i}(record):
    record("m{i}")
''' for i in range(6))


def _six(project: pytest.Pytester, qps: list[float]) -> None:
    figures(project, {f"m{i}": {"rounds": rounds(qps=q)} for i, q in enumerate(qps)})


def test_a_run_whose_tests_all_moved_apart_judges_no_figure_on_recordings_made_minutes_apart(
        pytester: pytest.Pytester) -> None:
    project = make_project(pytester)
    project.makepyfile(test_perf="import pytest\n" + SIX)
    for i, scale in enumerate((1.0, 1.005, 0.995)):  # recordings that agree within 1 %
        _six(project, [1000 * scale] * 6)
        run(project, "--update-baselines", *(("--agentmem-add-recording",) if i else ())).assert_outcomes(passed=6)
    # every test moved, each its own way (a shared machine over an hour): -20 % is within that
    _six(project, [700, 850, 1000, 1200, 1400, 800])
    result = run(project)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*m5.qps*800*1000*not judged: runs spread*",
                                 "*and the run's other 5 tests moved *% (1 SD) against their baselines*"])
    # the same figure in a run whose other tests held still: -20 % fails
    _six(project, [1000, 1005, 995, 1000, 1002, 800])
    result = run(project)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["FAILED test_perf.py::test_t5 (judged at the end of the run*"])


def test_a_failure_the_tests_holm_family_takes_back_is_not_judged_when_the_spread_hides_the_tolerance() -> None:
    from pytest_agentmem.gate.checks import SPREAD, GateContext, decide, holm_family, within_spread

    ctx = GateContext(nodeid="t::x", measurements=(), tolerance=0.07)
    base = [1.0, 1.01, 0.99, 1.0, 1.02]
    slower = within_spread(ctx, "search", "cpu_ms_per_op", [b * 1.25 for b in base], base, RunSpread(0.08, 5))
    assert slower.verdict == "fail" and slower.reason == SPREAD  # beyond the spread, p ~0.03
    same = [decide(ctx, name, "cpu_ms_per_op", base, base) for name in ("a", "b", "c")]
    holm_family([slower, *same])
    assert slower.verdict == "not-judged" and "Holm" in slower.message  # never "pass"
    clear = within_spread(ctx, "search", "cpu_ms_per_op", [b * 1.25 for b in base], base, RunSpread(0.01, 5))
    assert clear.verdict == "fail" and clear.reason is None
    holm_family([clear, *[decide(ctx, name, "cpu_ms_per_op", base, base) for name in ("a", "b", "c")]])
    assert clear.verdict == "fail"


def test_fresh_runs_fail_a_figure_only_beyond_its_tolerance() -> None:
    from pytest_agentmem.gate.checks import GateContext, within_spread

    ctx = GateContext(nodeid="t", measurements=(), tolerance=0.30)
    base = [20.0 * w for w in (1.0, 1.02, 0.98, 1.01, 0.99)]
    spread = RunSpread(0.14, 5)  # batch_delete's CPU per operation: 15 % (1 SD) over 5 recordings

    def fresh(*changes: float) -> list[list[float]]:
        return [[20.0 * (1 + c) * w for w in (1.0, 1.01, 0.99, 1.005, 0.995)] for c in changes]

    def judged(runs: list[list[float]]):
        return within_spread(ctx, "batch_delete", "cpu_ms_per_op", [x for r in runs for x in r], base, spread,
                             runs=[statistics.median(r) for r in runs])

    # unchanged code in a machine state that lasted an hour: just past the tolerance in each run
    just_past = judged(fresh(0.36, 0.36, 0.38))
    assert just_past.verdict == "not-judged"
    assert "worse than its tolerance over 3 runs (+36%, +36%, +38%), but not beyond it" in just_past.message
    assert just_past.change is not None and just_past.p_value is not None  # still a suspect's figures
    far_beyond = judged(fresh(1.2, 1.1, 1.3))
    assert far_beyond.verdict == "fail"
    assert "beyond its tolerance over 3 runs (+120%, +110%, +130%)" in far_beyond.message
    assert judged(fresh(0.05, 0.0, 0.1)).verdict == "pass"


def test_fresh_runs_of_a_figure_measured_against_the_model_decide_against_its_baseline() -> None:
    from pytest_agentmem.gate.checks import GateContext, within_spread

    ctx = GateContext(nodeid="t", measurements=(), tolerance=0.05)
    base = [1.8 * w for w in (1.0, 1.01, 0.99, 1.005, 0.995)]
    spread = RunSpread(0.02, 5)  # the search's cpu_model_ratio: 2 % (1 SD) over 5 recordings

    def judged(metric: str, *changes: float):
        runs = [[1.8 * (1 + c) * w for w in (1.0, 1.01, 0.99, 1.005, 0.995)] for c in changes]
        return within_spread(ctx, "search", metric, [x for r in runs for x in r], base, spread,
                             runs=[statistics.median(r) for r in runs])

    # a search path 10 % slower, measured +9 %, +7 %, +8 % in three fresh processes: the ratio
    # carries no machine state, so it is decided against its baseline ...
    ratio = judged("cpu_model_ratio", 0.09, 0.07, 0.08)
    assert ratio.verdict == "fail"
    assert "each run worse than its tolerance, beyond its run-to-run spread over 3 runs" in ratio.message
    # ... where a figure that carries the machine's state must show the 3 points beyond the tolerance
    assert judged("cpu_ms_per_op", 0.09, 0.07, 0.08).verdict == "not-judged"
    assert judged("cpu_model_ratio", 0.01, -0.01, 0.0).verdict == "pass"
