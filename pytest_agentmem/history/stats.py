"""Student's t distribution and the two-sample t-test, in plain Python (no scipy needed).

The regularised incomplete beta function is evaluated with Lentz's continued
fraction (Numerical Recipes' ``betacf``); the test suite checks the values
against scipy's.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def _beta_cf(a: float, b: float, x: float) -> float:
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_cf(a, b, x) / a
    return 1.0 - front * _beta_cf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


def t_ppf(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on :func:`t_sf`)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > 1.0 - p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_sf(mid, df) > 1.0 - p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2.0


def ttest_ind(left: Sequence[float], right: Sequence[float]) -> tuple[float, float]:
    """Student's two-sample t-test (equal variances), two-sided: ``(t, p)``.

    Fewer than 3 values in all (no degree of freedom) gives ``(0, 1)``; two
    constant samples give ``p = 0`` when their means differ, 1 when they do not.
    """
    n1, n2 = len(left), len(right)
    df = n1 + n2 - 2
    if n1 == 0 or n2 == 0 or df <= 0:
        return 0.0, 1.0
    m1, m2 = statistics.fmean(left), statistics.fmean(right)
    ss = sum((x - m1) ** 2 for x in left) + sum((x - m2) ** 2 for x in right)
    pooled = ss / df
    se = math.sqrt(pooled * (1.0 / n1 + 1.0 / n2))
    if se == 0.0:
        return (0.0, 1.0) if m1 == m2 else (math.copysign(math.inf, m1 - m2), 0.0)
    t = (m1 - m2) / se
    return t, min(1.0, 2.0 * t_sf(abs(t), df))


def mannwhitney(left: Sequence[float], right: Sequence[float]) -> float:
    """Two-sided p of the Mann-Whitney U test (normal approximation with tie and continuity
    corrections); 1 when either side is empty or every value ties."""
    n1, n2 = len(left), len(right)
    if n1 == 0 or n2 == 0:
        return 1.0
    from ..gate.stats import average_ranks

    pooled = list(left) + list(right)
    ranks = average_ranks(pooled)
    u = sum(ranks[:n1]) - n1 * (n1 + 1) / 2.0
    n = n1 + n2
    counts: dict[float, int] = {}
    for v in pooled:
        counts[v] = counts.get(v, 0) + 1
    ties = sum(c ** 3 - c for c in counts.values())
    var = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return 1.0
    z = (abs(u - n1 * n2 / 2.0) - 0.5) / math.sqrt(var)
    return min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2.0)))
