"""Statistics of the regression decision: robust centre, change, significance.

The centre of a sample is its median (one slow round out of five does not move
it). Significance is a one-sided Mann-Whitney U test of "current is worse than
baseline" on the per-round samples (scipy's exact test when scipy is installed,
else an exact permutation of the rank sum for small samples), which assumes
nothing about the shape of the noise.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence

from .directions import RATE_FLOOR, is_rate
from .verdict import Direction

#: Fewer samples than this on either side: no significance test (p = None).
MIN_SAMPLES = 3


def centre(samples: Sequence[float]) -> float:
    """The median of ``samples`` (NaN for an empty sample)."""
    return float(statistics.median(samples)) if samples else math.nan


def worse_change(value: float, baseline: float, direction: Direction, metric: str = "") -> float:
    """Signed fraction by which ``value`` is worse than ``baseline`` (+ = worse)."""
    denominator = abs(baseline)
    if is_rate(metric):
        denominator = max(denominator, RATE_FLOOR)
    if denominator == 0:
        return 0.0 if value == baseline else math.copysign(math.inf, value - baseline) * (
            1 if direction == "lower" else -1)
    delta = (value - baseline) / denominator
    return delta if direction == "lower" else -delta


def p_worse(current: Sequence[float], baseline: Sequence[float], direction: Direction) -> float | None:
    """One-sided p-value that ``current`` is worse than ``baseline`` (None if too few samples)."""
    if len(current) < MIN_SAMPLES or len(baseline) < MIN_SAMPLES or direction == "none":
        return None
    alternative = "greater" if direction == "lower" else "less"
    try:
        from scipy.stats import mannwhitneyu
    except ImportError:  # scipy is optional (extra "stats")
        return _rank_sum_p(list(current), list(baseline), alternative)
    method = "exact" if len(current) + len(baseline) <= 40 else "auto"
    result = mannwhitneyu(list(current), list(baseline), alternative=alternative, method=method)
    p = float(result.pvalue)
    return 1.0 if math.isnan(p) else p


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of ``values``, ties sharing the average of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _rank_sum_p(current: list[float], baseline: list[float], alternative: str) -> float:
    """Permutation p-value of the rank sum of ``current`` (exact up to 20 samples)."""
    pooled = current + baseline
    ranks = average_ranks(pooled)
    n = len(current)
    observed = sum(ranks[:n])
    sign = 1 if alternative == "greater" else -1
    if len(pooled) > 20:  # normal approximation
        m = len(baseline)
        mean = n * (n + m + 1) / 2
        sd = math.sqrt(n * m * (n + m + 1) / 12) or 1.0
        z = sign * (observed - mean) / sd
        return 0.5 * math.erfc(z / math.sqrt(2))
    hits = total = 0
    for combo in itertools.combinations(ranks, n):
        total += 1
        if sign * (sum(combo) - observed) >= -1e-12:
            hits += 1
    return hits / total
