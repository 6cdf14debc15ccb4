"""Change points of a series: E-divisive means with a t-test, as Apache Otava (Hunter) finds them.

The method (Matteson & James 2014; Fleming et al., "Hunter", ICPE 2023; Daly et
al., ICPE 2020 for MongoDB's use), re-implemented here on numpy alone:

1. **Candidate.** In each stretch between the change points found so far, the
   split ``tau`` (with an end ``kappa``) that maximises the energy statistic
   ``Q(X, Y) = 2/(m+n) sum|X_i - Y_j| - 2m/((m+n)(n-1)) sum_{i<k}|X_i - X_k|
   - 2n/((m+n)(m-1)) sum_{j<k}|Y_j - Y_k|`` of ``X = x[start:tau]``,
   ``Y = x[tau:kappa]``; the stretch whose best ``Q`` is largest offers its split.
2. **Significance.** Student's two-sample t-test of the values left and right
   of the split within its stretch (Otava's default tester; the test sees
   ``p``, and sample standard deviations are used); or, with
   ``test="permutation"``, the original permutation test of ``Q`` (values
   shuffled within each stretch); or, with ``test="ranks"``, a two-sided
   Mann-Whitney U test, which one run slowed by a busy machine cannot sway as it
   sways a mean. A split with ``p <= max_pvalue`` is kept and
   the search goes on; the first one that is not significant ends it.
3. **Split and merge** (Hunter): the series is searched in overlapping windows
   (``window`` long, half a window apart) at a looser first-pass level (10 x
   ``max_pvalue``); then the weakest change point (largest ``p``, or the smallest
   relative change once all are significant) is dropped while it fails
   ``max_pvalue`` or ``min_magnitude``, and its neighbours' statistics are
   recomputed over their new stretches (both neighbours; Otava recomputes the
   follower and the one after it).

Departures from Otava, each deliberate: a regime needs ``min_size`` points on
each side of a split (default 3: a single slow run is an outlier, not a
regime); sample, not population, standard deviations go into the t-test.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .stats import mannwhitney, ttest_ind

Test = Literal["ttest", "permutation", "ranks"]

#: Otava's defaults: significance level and window length.
MAX_PVALUE = 0.001
WINDOW = 50
MIN_SIZE = 3


@dataclass(frozen=True)
class ChangePoint:
    """A change at ``index``: ``values[index]`` is the first value of the new regime."""

    index: int
    p_value: float
    mean_before: float
    mean_after: float
    stdev_before: float
    stdev_after: float
    qhat: float = 0.0

    @property
    def change(self) -> float:
        """Relative change of the mean, ``after / before - 1`` (0 when ``before`` is 0)."""
        return self.mean_after / self.mean_before - 1.0 if self.mean_before else 0.0

    @property
    def magnitude(self) -> float:
        """The larger of the forward and the backward relative change (as Otava)."""
        back = self.mean_before / self.mean_after - 1.0 if self.mean_after else 0.0
        return max(abs(self.change), abs(back))

    @property
    def confidence(self) -> float:
        return 1.0 - self.p_value


# --------------------------------------------------------------------------- the statistic


class _Energy:
    """Prefix sums of the pairwise distances of one series, for O(1) block sums."""

    def __init__(self, x: np.ndarray) -> None:
        d = np.abs(x[:, None] - x[None, :])
        self.p = np.zeros((len(x) + 1, len(x) + 1))
        self.p[1:, 1:] = d.cumsum(0).cumsum(1)

    def block(self, r0: int, r1: int, c0: int, c1: np.ndarray | int) -> np.ndarray:
        p = self.p
        return p[r1, c1] - p[r0, c1] - p[r1, c0] + p[r0, c0]  # type: ignore[no-any-return]

    def candidate(self, start: int, stop: int, min_size: int) -> tuple[int, float] | None:
        """The split of ``x[start:stop]`` with the largest Q, or None if the stretch is too short."""
        best: tuple[int, float] | None = None
        for tau in range(start + min_size, stop - min_size + 1):
            kappas = np.arange(tau + min_size, stop + 1)
            n, m = tau - start, kappas - tau
            between = self.block(start, tau, tau, kappas)
            within_x = self.block(start, tau, start, tau) / 2.0
            within_y = (self.p[kappas, kappas] - self.p[tau, kappas] - self.p[kappas, tau] + self.p[tau, tau]) / 2.0
            q = (2.0 / (m + n) * between
                 - (2.0 * m / ((m + n) * (n - 1)) * within_x if n > 1 else 0.0)
                 - np.where(m > 1, 2.0 * n / ((m + n) * np.maximum(m - 1, 1)) * within_y, 0.0))
            j = int(np.argmax(q))
            if best is None or q[j] > best[1]:
                best = (tau, float(q[j]))
        return best


def _intervals(indices: Sequence[int], n: int) -> list[tuple[int, int]]:
    bounds = [0, *sorted(indices), n]
    return list(zip(bounds[:-1], bounds[1:]))


def _stats(x: np.ndarray, index: int, start: int, stop: int, qhat: float = 0.0,
           p_value: float | None = None, test: Test = "ttest") -> ChangePoint:
    left, right = x[start:index].tolist(), x[index:stop].tolist()
    if p_value is not None:
        p = p_value
    elif test == "ranks":
        p = mannwhitney(left, right)
    else:
        p = ttest_ind(left, right)[1]
    sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
    return ChangePoint(index=index, p_value=p, mean_before=statistics.fmean(left),
                       mean_after=statistics.fmean(right), stdev_before=sd(left), stdev_after=sd(right),
                       qhat=qhat)


def _best(energy: _Energy, intervals: list[tuple[int, int]], min_size: int) -> tuple[int, float, tuple[int, int]] | None:
    best = None
    for start, stop in intervals:
        found = energy.candidate(start, stop, min_size)
        if found is not None and (best is None or found[1] > best[1]):
            best = (found[0], found[1], (start, stop))
    return best


def e_divisive(values: Sequence[float] | np.ndarray, *, max_pvalue: float = MAX_PVALUE, min_size: int = MIN_SIZE,
               test: Test = "ttest", permutations: int = 199, seed: int = 0) -> list[ChangePoint]:
    """The change points of ``values`` found by E-divisive means (one window, no merge step)."""
    x = np.asarray(values, dtype=float)
    energy = _Energy(x)
    rng = np.random.default_rng(seed)
    found: list[ChangePoint] = []
    while True:
        intervals = _intervals([c.index for c in found], len(x))
        best = _best(energy, intervals, min_size)
        if best is None:
            break
        index, qhat, (start, stop) = best
        p = None
        if test == "permutation":
            hits = 0
            for _ in range(permutations):
                shuffled = x.copy()
                for a, b in intervals:
                    rng.shuffle(shuffled[a:b])
                other = _best(_Energy(shuffled), intervals, min_size)
                hits += other is not None and other[1] >= qhat
            p = (hits + 1) / (permutations + 1)
        point = _stats(x, index, start, stop, qhat, p, test)
        if point.p_value > max_pvalue:
            break
        found = sorted([*found, point], key=lambda c: c.index)
    return found


def _restat(x: np.ndarray, points: list[ChangePoint], test: Test = "ttest") -> list[ChangePoint]:
    """Every point's statistics over the stretch between its neighbours (the t-test, or the rank
    test for ``test="ranks"``; the permutation variant's merge step uses the t-test, as Hunter)."""
    bounds = [0, *[c.index for c in points], len(x)]
    return [_stats(x, c.index, bounds[i], bounds[i + 2], c.qhat, test=test) for i, c in enumerate(points)]


def detect(values: Sequence[float], *, max_pvalue: float = MAX_PVALUE, min_magnitude: float = 0.0,
           window: int = WINDOW, min_size: int = MIN_SIZE, test: Test = "ttest",
           permutations: int = 199, seed: int = 0) -> list[ChangePoint]:
    """Change points of a whole series: windowed split at a loose level, then merge (Hunter).

    ``min_magnitude``: a change smaller than this relative change is dropped too.
    """
    x = np.asarray([float(v) for v in values], dtype=float)
    n = len(x)
    if n < 2 * min_size or not np.all(np.isfinite(x)):
        return []
    first_pass = max_pvalue * 10 if max_pvalue < 0.05 else (max_pvalue * 2 if max_pvalue < 0.5 else max_pvalue)
    weak: dict[int, ChangePoint] = {}
    start, step = 0, max(1, window // 2)
    while start < n:
        stop = min(start + window, n)
        found = e_divisive(x[start:stop], max_pvalue=first_pass, min_size=min_size, test=test,
                           permutations=permutations, seed=seed)
        for c in found:
            weak.setdefault(c.index + start, ChangePoint(c.index + start, c.p_value, c.mean_before,
                                                         c.mean_after, c.stdev_before, c.stdev_after, c.qhat))
        last = max((c.index + start for c in found), default=0)
        if stop == n:
            break
        start = max(last, start + step)
    points = _restat(x, sorted(weak.values(), key=lambda c: c.index), test)
    while points:
        weakest = max(range(len(points)), key=lambda i: points[i].p_value)
        if points[weakest].p_value <= max_pvalue:
            weakest = min(range(len(points)), key=lambda i: points[i].magnitude)
            if points[weakest].magnitude >= min_magnitude:
                break
        del points[weakest]
        points = _restat(x, points, test)
    return points


def relative_noise(values: Sequence[float]) -> float:
    """Median absolute successive difference over the median: the series' run-to-run noise."""
    v = [float(a) for a in values if math.isfinite(a)]
    if len(v) < 3:
        return math.nan
    centre = statistics.median(v)
    return statistics.median(abs(b - a) for a, b in zip(v, v[1:])) / abs(centre) if centre else math.nan
