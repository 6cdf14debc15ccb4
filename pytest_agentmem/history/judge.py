"""Judge this run's figure against its last N runs in the history (``--agentmem-history-baseline N``).

As Bencher's statistical thresholds do, the reference is a distribution, not one
stored point: the last ``N`` values of the same test, measurement and metric,
measured on the same machine (fingerprint) and workload on the main branch. A
figure fails when it lies beyond the one-sided ``confidence`` prediction bound of
Student's t (``mean +- t(confidence, n - 1) * stdev * sqrt(1 + 1/n)``: where a new
run of unchanged code falls with that probability) on its worse side *and* is
worse than the mean by more than ``min_change`` (the run's tolerance), so a tight
history does not fail a change too small to matter. Fewer than ``N`` such runs:
not judged, with the reason.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .stats import t_ppf
from .store import Store

HistoryVerdictName = Literal["passed", "failed", "not-judged"]

#: One-sided confidence of the prediction bound.
CONFIDENCE = 0.99


@dataclass(frozen=True)
class HistoryVerdict:
    """The judgement of one figure against its history.

    ``verdict``: ``passed``, ``failed`` (``message`` says by how much) or
    ``not-judged`` (``reason`` says why). ``limit`` is the bound the value was
    held to, ``mean``/``stdev``/``runs`` describe the history used.
    """

    verdict: HistoryVerdictName
    message: str
    reason: str | None = None
    limit: float | None = None
    mean: float | None = None
    stdev: float | None = None
    runs: int = 0
    change: float | None = None  # + = worse, a fraction of the history's mean


def recent_values(store: Store, *, test: str, measurement: str, metric: str, machine_id: str,
                  workload_id: str | None, branch: str, runs: int) -> list[float]:
    """The last ``runs`` values of one series on ``branch`` (newest first)."""
    rows = store.series_rows(
        "f.test = ? AND f.measurement = ? AND f.metric = ? AND r.machine_id = ? "
        "AND COALESCE(f.workload_id, '') = ? AND r.branch = ? AND f.value IS NOT NULL",
        (test, measurement, metric, machine_id, workload_id or "", branch), limit=runs, newest_first=True)
    return [float(r["value"]) for r in rows]


def judge(value: float, history: Sequence[float], *, direction: str, runs: int, label: str,
          min_change: float = 0.0, confidence: float = CONFIDENCE, branch: str = "main") -> HistoryVerdict:
    """Judge ``value`` against ``history`` (the last runs, any order).

    ``direction``: ``lower`` (latency: larger is worse) or ``higher`` (throughput).
    """
    have = [v for v in history if math.isfinite(v)]
    if direction not in ("lower", "higher"):
        return HistoryVerdict("not-judged", f"{label}: no direction to judge", reason="metric has no direction")
    if len(have) < runs:
        reason = (f"only {len(have)} of {runs} runs of this machine and workload on {branch} in the history")
        return HistoryVerdict("not-judged", f"{label} {value:.4g}: not judged against the history ({reason})",
                              reason=reason, runs=len(have))
    mean = statistics.fmean(have)
    stdev = statistics.stdev(have)
    n = len(have)
    spread = t_ppf(confidence, n - 1) * stdev * math.sqrt(1.0 + 1.0 / n)
    limit = mean + spread if direction == "lower" else mean - spread
    worse = value > limit if direction == "lower" else value < limit
    change = ((value - mean) / abs(mean) if mean else 0.0) * (1 if direction == "lower" else -1)
    described = (f"{label} {value:.4g} vs the last {n} runs on {branch} (mean {mean:.4g}, sd {stdev:.3g}, "
                 f"{confidence:.0%} bound {limit:.4g}; {change:+.1%})")
    if worse and change > min_change:
        return HistoryVerdict("failed", described + f": worse than the history beyond tolerance {min_change:.0%}",
                              limit=limit, mean=mean, stdev=stdev, runs=n, change=change)
    return HistoryVerdict("passed", described, limit=limit, mean=mean, stdev=stdev, runs=n, change=change)
