"""Statistics of paired rounds: the same metric measured on the base and the candidate.

Round ``k`` of the base and round ``k`` of the candidate run back to back on the same
machine, so whatever slowed the machine then slowed both. Each pair gives one ratio
``candidate / base``; on the log scale the ratios of a multiplicative effect
(a code path 10 % slower) are symmetric and additive, and the machine's drift
cancels out within a pair.

- Estimate: the Hodges-Lehmann estimate of the log ratios (the median of the
  Walsh averages ``(d_i + d_j) / 2``, ``i <= j``), the median paired change that
  goes with the signed-rank test; more efficient than the plain median with
  8-16 pairs and as robust (one wild pair moves it little).
- Interval: the distribution-free confidence interval of that estimate, read off
  the ordered Walsh averages at the signed-rank test's critical values.
- Significance: the one-sided Wilcoxon signed-rank test of "the candidate is
  worse", exact (the whole null distribution by dynamic programming) up to 60
  pairs, a normal approximation beyond. It assumes only that a pair's log ratio
  is symmetric about the true change, not any shape of the noise.

Error rates are bounded counts, usually 0 on both sides: they are compared by
the difference ``candidate - base`` per pair (a rate has no ratio to 0), with the
same signed-rank test on the differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..gate.directions import direction_of, is_rate
from ..gate.stats import average_ranks
from ..gate.verdict import Direction

#: Below this many non-zero pairs there is no test (p = None).
MIN_PAIRS = 4
#: Two-sided coverage of the reported interval of the paired change.
INTERVAL_LEVEL = 0.90


@dataclass(frozen=True)
class PairedChange:
    """One metric compared over paired rounds.

    ``change`` is the signed fraction by which the candidate is worse (+) or
    better (-), whatever the metric's direction (+0.10 = 10 % slower for a
    latency, 10 % fewer for a throughput); ``interval`` is its confidence
    interval (``INTERVAL_LEVEL``); ``base`` and ``candidate`` are the medians of
    each side's rounds; ``p_value`` the one-sided signed-rank p that the
    candidate is worse (None with too few pairs); ``additive`` is True for rates
    compared by difference (then ``change`` is the difference, not a fraction).
    """

    metric: str
    direction: Direction
    pairs: int
    base: float
    candidate: float
    change: float
    interval: tuple[float, float]
    p_value: float | None
    additive: bool = False
    #: several processes a side (:mod:`.processes`): how much the processes of one side differ
    #: (pooled SD of their effects, log scale; None for a rate, or with one process a side)
    spread: float | None = None


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return math.nan
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def signed_rank_null(n: int) -> list[float]:
    """P(W+ = w) for w = 0 .. n(n+1)/2 under the null (exact, ranks 1..n, no ties)."""
    counts = [1]
    for rank in range(1, n + 1):
        grown = counts + [0] * rank
        for w in range(len(counts)):
            grown[w + rank] += counts[w]
        counts = grown
    total = float(2 ** n)
    return [c / total for c in counts]


def signed_rank_p(worse: Sequence[float]) -> float | None:
    """One-sided p that the values (positive = worse) are centred above 0.

    Zeros are dropped (Wilcoxon's convention). Exact without ties up to 60
    values; with tied magnitudes or more values, the normal approximation with
    the tie correction and a continuity correction.
    """
    nonzero = [d for d in worse if d != 0 and not math.isnan(d)]
    n = len(nonzero)
    if n < MIN_PAIRS:
        return None
    magnitudes = [abs(d) for d in nonzero]
    ranks = average_ranks(magnitudes)
    w_plus = sum(r for r, d in zip(ranks, nonzero) if d > 0)
    tied = len(set(magnitudes)) < n
    if not tied and n <= 60:
        null = signed_rank_null(n)
        observed = int(round(w_plus))
        return min(1.0, sum(null[observed:]))
    mean = n * (n + 1) / 4
    tie_term = 0.0
    for value in set(magnitudes):
        t = magnitudes.count(value)
        tie_term += t ** 3 - t
    sd = math.sqrt(n * (n + 1) * (2 * n + 1) / 24 - tie_term / 48) or 1.0
    z = (w_plus - mean - 0.5) / sd
    return 0.5 * math.erfc(z / math.sqrt(2))


def _walsh(values: Sequence[float]) -> list[float]:
    return sorted((values[i] + values[j]) / 2 for i in range(len(values)) for j in range(i, len(values)))


def hodges_lehmann(values: Sequence[float], level: float = INTERVAL_LEVEL) -> tuple[float, float, float]:
    """(estimate, low, high): the Hodges-Lehmann centre of ``values`` and its interval.

    The interval is the distribution-free one from the signed-rank distribution:
    the ``k``-th smallest and largest Walsh averages, ``k`` the largest count with
    P(W+ < k) <= (1 - level) / 2. With too few values it is the whole range.
    """
    clean = [v for v in values if not math.isnan(v)]
    if not clean:
        return math.nan, math.nan, math.nan
    walsh = _walsh(clean)
    estimate = _median(walsh)
    n = len(clean)
    tail = (1 - level) / 2
    k = 0
    if n <= 60:
        cumulative = 0.0
        for w, p in enumerate(signed_rank_null(n)):
            if cumulative + p > tail:
                break
            cumulative += p
            k = w + 1
    else:
        z = 1.6448536269514722 if level == 0.90 else abs(_norm_ppf(tail))
        k = int(n * (n + 1) / 4 - z * math.sqrt(n * (n + 1) * (2 * n + 1) / 24))
    if k <= 0:
        return estimate, walsh[0], walsh[-1]
    return estimate, walsh[k - 1], walsh[len(walsh) - k]


def _norm_ppf(p: float) -> float:
    """Inverse normal CDF by bisection (enough for an interval)."""
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(-mid / math.sqrt(2)) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def compare_pairs(metric: str, base: Sequence[float], candidate: Sequence[float]) -> PairedChange | None:
    """Compare ``metric`` over paired rounds (None when it has no direction or no pairs)."""
    direction = direction_of(metric)
    pairs = [(b, c) for b, c in zip(base, candidate)
             if not (math.isnan(b) or math.isnan(c) or math.isinf(b) or math.isinf(c))]
    if direction == "none" or not pairs:
        return None
    sign = 1.0 if direction == "lower" else -1.0
    base_centre = _median([b for b, _ in pairs])
    cand_centre = _median([c for _, c in pairs])
    if is_rate(metric) or any(b <= 0 or c <= 0 for b, c in pairs):
        diffs = [sign * (c - b) for b, c in pairs]
        estimate, low, high = hodges_lehmann(diffs)
        return PairedChange(metric, direction, len(pairs), base_centre, cand_centre, estimate,
                            (low, high), signed_rank_p(diffs), additive=True)
    logs = [sign * math.log(c / b) for b, c in pairs]
    estimate, low, high = hodges_lehmann(logs)
    # back on the ratio scale: worse-oriented fraction (+0.10 = 10 % worse)
    to_change = (lambda x: math.exp(x) - 1) if direction == "lower" else (lambda x: 1 - math.exp(-x))
    return PairedChange(metric, direction, len(pairs), base_centre, cand_centre, to_change(estimate),
                        (to_change(low), to_change(high)), signed_rank_p(logs))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None stays None and is not counted)."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(indexed)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted
