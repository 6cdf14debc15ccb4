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


def test_an_unpaired_run_is_new_not_failed() -> None:
    m = Measurement("op", {"qps": 1.0}, info={"ab_unpaired": "new test (not in the base)"})
    (check,) = check_paired(GateContext(nodeid="t", measurements=[m], paired=True), "main (abc)")
    assert check.verdict == "new" and "new test" in check.message
    assert math.isnan(check.value)
