"""The A/B mode's statistics: signed-rank test, Hodges-Lehmann interval, Holm, paired checks."""

from __future__ import annotations

import math
import random

import pytest

from pytest_agentmem.compare.decision import MIN_CONFIRM_PAIRS, check_paired, extra_pairs
from pytest_agentmem.compare.paired import compare_pairs, hodges_lehmann, holm, signed_rank_p
from pytest_agentmem.gate.checks import GateContext
from pytest_agentmem.measurement import Measurement


@pytest.mark.parametrize("n", [4, 7, 12, 25])
def test_signed_rank_p_matches_scipy_exact(n: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(n)
    for _ in range(20):
        values = [rng.gauss(0.3, 1.0) for _ in range(n)]
        expected = stats.wilcoxon(values, alternative="greater", method="exact").pvalue
        assert signed_rank_p(values) == pytest.approx(expected, rel=1e-9)


# The reference is asked for the normal approximation on 8 values on purpose (that is the
# formula signed_rank_p uses with ties); scipy < 1.11 adds its advice that the sample is
# small, which says nothing about whether the two agree.
@pytest.mark.filterwarnings("ignore:Sample size too small for normal approximation:UserWarning")
def test_signed_rank_p_with_ties_matches_scipy_normal_approximation() -> None:
    stats = pytest.importorskip("scipy.stats")
    values = [1, 1, 2, 2, 3, -1, 4, 5, 0]  # a zero is dropped, tied magnitudes
    expected = stats.wilcoxon(values, alternative="greater", method="approx", correction=True,
                              zero_method="wilcox").pvalue
    assert signed_rank_p(values) == pytest.approx(expected, rel=1e-9)


def test_too_few_pairs_have_no_p() -> None:
    assert signed_rank_p([0.1, 0.2, 0.3]) is None
    assert signed_rank_p([0.0, 0.0, 0.0, 0.0, 0.1]) is None  # zeros do not count


def test_hodges_lehmann_interval_holds_the_estimate_and_covers_the_truth() -> None:
    rng = random.Random(1)
    covered = 0
    for _ in range(200):
        values = [rng.gauss(0.05, 0.02) for _ in range(12)]
        estimate, low, high = hodges_lehmann(values)
        assert low <= estimate <= high
        covered += low <= 0.05 <= high
    assert 0.83 <= covered / 200 <= 0.97  # a 90 % interval


def test_compare_pairs_says_worse_for_slower_latency_and_lower_throughput() -> None:
    base = [10.0, 10.2, 9.8, 10.1, 9.9, 10.0, 10.3, 9.7]
    slower = [b * 1.10 for b in base]
    latency = compare_pairs("p95_ms", base, slower)
    throughput = compare_pairs("qps", base, [b / 1.10 for b in base])
    assert latency is not None and throughput is not None
    assert latency.change == pytest.approx(0.10, abs=1e-9)
    assert throughput.change == pytest.approx(1 - 1 / 1.10, abs=1e-9)  # 9.1 % fewer
    distinct = compare_pairs("p95_ms", base, [b * (1.10 + 0.001 * i) for i, b in enumerate(base)])
    assert distinct is not None and distinct.p_value == pytest.approx(1 / 256)  # all 8 pairs worse
    better = compare_pairs("p95_ms", base, [b * 0.9 for b in base])
    assert better is not None and better.change < 0 and better.p_value > 0.99


def test_error_rates_are_compared_by_difference() -> None:
    change = compare_pairs("error_rate", [0.0] * 6, [0.01] * 6)
    assert change is not None and change.additive
    assert change.change == pytest.approx(0.01)
    assert compare_pairs("error_rate", [0.0] * 6, [0.0] * 6).change == 0.0  # type: ignore[union-attr]


def test_holm_adjusts_in_order_and_skips_none() -> None:
    adjusted = holm([0.01, 0.04, None, 0.03])
    assert adjusted[0] == pytest.approx(0.03) and adjusted[1] == pytest.approx(0.06)
    assert adjusted[2] is None and adjusted[3] == pytest.approx(0.06)


def _paired(factor: float, n: int = 12, noise: float = 0.01, seed: int = 0) -> Measurement:
    rng = random.Random(seed)
    base, cand = [], []
    for _ in range(n):
        drift = rng.uniform(0.7, 1.3)  # the machine's speed: the same for both rounds of a pair
        b = 1000 * drift * (1 + rng.gauss(0, noise))
        c = 1000 * drift / factor * (1 + rng.gauss(0, noise))
        base.append({"qps": b, "error_rate": 0.0})
        cand.append({"qps": c, "error_rate": 0.0})
    return Measurement("op", {"qps": 0.0}, info={"ab_base_rounds": base, "ab_candidate_rounds": cand})


def test_pairing_cancels_the_machine_drift() -> None:
    ctx = GateContext(nodeid="t", measurements=[_paired(1.0)], tolerance=0.03, paired=True)
    checks = {c.metric: c for c in check_paired(ctx, "main (abc)")}
    assert checks["qps"].verdict == "pass"
    slower = GateContext(nodeid="t", measurements=[_paired(1.10)], tolerance=0.03, paired=True)
    failed = {c.metric: c for c in check_paired(slower, "main (abc)")}["qps"]
    assert failed.verdict == "fail"
    assert "at main (abc)" in failed.message and "worse over 12 pairs" in failed.message
    assert failed.interval is not None and failed.interval[0] > 0.03


def test_a_suspect_gets_as_many_pairs_again() -> None:
    m = _paired(1.10)
    base, cand = m.info["ab_base_rounds"], m.info["ab_candidate_rounds"]
    assert extra_pairs(base, cand, 0.03) == max(MIN_CONFIRM_PAIRS, len(cand))
    same = _paired(1.0)
    assert extra_pairs(same.info["ab_base_rounds"], same.info["ab_candidate_rounds"], 0.03) == 0


def test_a_change_just_under_the_tolerance_whose_interval_reaches_beyond_it_gets_more_pairs() -> None:
    """Estimated +2.8 % with a 3 % tolerance: not a failure yet, but not a pass to trust either."""
    wobble = [-0.02, 0.015, -0.01, 0.02, 0.0, -0.015, 0.01, 0.025, -0.005, 0.005, -0.025, 0.012]
    base = [{"qps": 1000.0, "error_rate": 0.0} for _ in wobble]
    cand = [{"qps": 1000.0 / 1.028 * (1 + w), "error_rate": 0.0} for w in wobble]
    m = Measurement("op", {"qps": 0.0}, info={"ab_base_rounds": base, "ab_candidate_rounds": cand})
    (change,) = [c for c in check_paired(GateContext(nodeid="t", measurements=[m], tolerance=0.03,
                                                     paired=True), "main (abc)") if c.metric == "qps"]
    assert change.change is not None and 0.0 < change.change < 0.03 < change.interval[1]  # type: ignore[index]
    assert change.verdict == "pass"
    assert extra_pairs(base, cand, 0.03) == len(cand)
    assert extra_pairs(base, cand, 0.10) == 0  # far from a 10 % tolerance: decided as it is


def test_an_unpaired_run_is_new_not_failed() -> None:
    m = Measurement("op", {"qps": 1.0}, info={"ab_unpaired": "new test (not in the base)"})
    (check,) = check_paired(GateContext(nodeid="t", measurements=[m], paired=True), "main (abc)")
    assert check.verdict == "not-judged" and check.reason == "new" and "new test" in check.message
    assert math.isnan(check.value)


def _with_waits(m: Measurement, base_wait: list[float], cand_wait: list[float], cpu_factor: float = 1.0) -> Measurement:
    for r, w in zip(m.info["ab_base_rounds"], base_wait):
        r.update(wait_share=w, cpu_ms_per_op=1.0)
    for r, w in zip(m.info["ab_candidate_rounds"], cand_wait):
        r.update(wait_share=w, cpu_ms_per_op=cpu_factor)
    return m


def test_wall_time_is_not_judged_when_other_processes_took_unequal_cpu_from_the_sides() -> None:
    """A load that comes and goes makes one side wait for a CPU more than the other: its
    throughput then measures the machine; the CPU cost per operation still decides."""
    waits_b = [0.70, 0.72, 0.74, 0.62, 0.73, 0.76, 0.81, 0.68, 0.74, 0.61, 0.7, 0.75]
    waits_c = [0.79, 0.72, 0.83, 0.72, 0.77, 0.76, 0.77, 0.66, 0.74, 0.76, 0.78, 0.8]
    m = _with_waits(_paired(1.10), waits_b, waits_c)
    checks = {c.metric: c for c in check_paired(GateContext(nodeid="t", measurements=[m], tolerance=0.03,
                                                            paired=True), "main (abc)")}
    assert checks["qps"].verdict == "not-judged" and checks["qps"].reason == "sides unequal"
    assert "not judged: other processes took unequal CPU time" in checks["qps"].message
    assert "cpu_ms_per_op decides" in checks["qps"].message
    assert checks["cpu_ms_per_op"].verdict == "pass"
    # no confirmation pairs are spent on what will not be judged
    assert extra_pairs(m.info["ab_base_rounds"], m.info["ab_candidate_rounds"], 0.03) == 0
    slower_cpu = _with_waits(_paired(1.10), waits_b, waits_c, cpu_factor=1.10)
    checks = {c.metric: c for c in check_paired(GateContext(nodeid="t", measurements=[slower_cpu],
                                                            tolerance=0.03, paired=True), "main (abc)")}
    assert checks["cpu_ms_per_op"].verdict == "fail"


def test_wall_time_is_judged_when_both_sides_waited_alike() -> None:
    """A steady neighbour, or the workload's own servers, take the same share from both sides."""
    waits = [0.30 + 0.005 * (i % 3) for i in range(12)]
    m = _with_waits(_paired(1.10), waits, [w + 0.01 for w in waits])
    (qps,) = [c for c in check_paired(GateContext(nodeid="t", measurements=[m], tolerance=0.03, paired=True),
                                      "main (abc)") if c.metric == "qps"]
    assert qps.verdict == "fail"


def test_figures_not_judged_spend_none_of_the_tests_alpha() -> None:
    """With qps and p95 not judged, cpu_ms_per_op is the one question: Holm does not divide by 3."""
    from pytest_agentmem.gate.checks import holm_family

    rng = random.Random(3)
    base, cand = [], []
    for i in range(20):
        b_cpu = 1.0 + rng.gauss(0, 0.08)
        base.append({"qps": 1000.0, "p95_ms": 1.0, "cpu_ms_per_op": b_cpu, "wait_share": 0.30})
        cand.append({"qps": 1000.0 * rng.uniform(0.8, 1.2), "p95_ms": rng.uniform(0.8, 1.2),
                     "cpu_ms_per_op": b_cpu * 1.06 * (1 + rng.gauss(0, 0.05)),
                     "wait_share": 0.30 + (0.12 if i % 2 else -0.12)})
    m = Measurement("op", {"qps": 0.0}, info={"ab_base_rounds": base, "ab_candidate_rounds": cand})
    checks = holm_family(check_paired(GateContext(nodeid="t", measurements=[m], tolerance=0.03, paired=True),
                                      "main (abc)"))
    by_metric = {c.metric: c for c in checks}
    assert not by_metric["qps"].judged and not by_metric["p95_ms"].judged
    cpu = by_metric["cpu_ms_per_op"]
    assert cpu.judged and cpu.p_value is not None and cpu.p_value <= 0.05
    assert cpu.p_adjusted is None or cpu.p_adjusted == cpu.p_value  # a family of one
    assert cpu.verdict == "fail", cpu.message


def test_scipy_stays_importable_after_an_in_process_run_imported_it(pytester: pytest.Pytester) -> None:
    # pytester drops the modules an inner run imported; scipy's compiled modules cannot
    # load twice in one process, so whichever test imported scipy next failed, by order
    # (the suite's conftest imports it first).
    pytest.importorskip("scipy")
    pytester.makepyfile(test_inner="def test_x():\n    import scipy.stats\n")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    import scipy.stats

    assert scipy.stats.wilcoxon([1, 2, 3, 4, 5, 6, 7, 8], alternative="greater").pvalue < 0.05
