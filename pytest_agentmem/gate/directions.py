"""Which way is better for a metric, and which metrics the baseline gate compares.

Names decide: ``qps``, ``ops_per_s``, ``*_per_s``, ``recall*``, ``precision*``,
``hit_rate``, ``throughput*``, ``ops`` (benchmark ops/s) are higher-is-better;
``*_ms``, ``*_s``, ``*_us``, ``error_rate``, ``timeout_rate``, ``*_bytes``,
``*_mb`` are lower-is-better; so are ``cpu_ms_per_op`` (CPU cost per successful
operation), ``model_cpu_ms_per_op`` (the embedding model's part of it) and
``cpu_model_ratio`` (the one in units of the other), which are time-like (a slower
machine moves them) but carry no latency jitter floor: each is an average over every
operation of a round. Counts and settings (``errors``, ``concurrency``,
``rate``, ``duration_s``...) and single-extreme figures (``max_ms``, ``min_ms``,
``p999_ms``), too noisy for a median-of-rounds comparison, are not compared
against the baseline (they still can carry an absolute threshold).
"""

from __future__ import annotations

from .metric_kinds import CPU_COST_METRICS, is_rate, is_time_like
from .verdict import Direction

__all__ = ["CPU_COST_METRICS", "LATENCY_FLOOR", "NOT_COMPARED", "PRIMARY", "RATE_FLOOR", "compared",
           "direction_of", "is_primary", "is_rate", "is_time_like", "latency_floor"]

#: Measured, but not compared with the baseline (settings, counts, extremes).
NOT_COMPARED = frozenset({
    "ops", "errors", "timeouts", "concurrency", "rate", "duration_s", "rounds",
    "max_ms", "min_ms", "p999_ms", "stddev_ms", "iterations", "target_rate",
})

_HIGHER_EXACT = frozenset({"qps", "throughput", "hit_rate", "ops_per_s", "speedup",
                           "token_savings", "savings"})
_HIGHER_PREFIX = ("recall", "precision", "ndcg", "mrr", "hit_rate", "throughput", "accuracy",
                  "f1", "map_at", "coverage")
_HIGHER_SUFFIX = ("_per_s", "_per_sec", "_qps", "_ops", "_hit_rate", "_savings", "_recall",
                  "_throughput", "_speedup")
_LOWER_SUFFIX = ("_ms", "_s", "_us", "_ns", "_error_rate", "_bytes", "_mb", "_kb", "_miss_rate")
_LOWER_EXACT = frozenset({"error_rate", "timeout_rate", "miss_rate", "latency", "cpu_s", *CPU_COST_METRICS})


#: Bounded rates: a change is measured against at least this floor, so that
#: 0 -> 0.001 errors is not an "infinite" regression.
RATE_FLOOR = 0.01

#: Smallest latency change that can count as a regression, per unit. Below it,
#: differences are timer, scheduler and event-loop jitter on a shared machine
#: (one asyncio loop iteration costs ~10-20 us): a 70 us p95 that became 91 us
#: is +30% and "significant" across rounds, and still means nothing.
LATENCY_FLOOR = {"_ms": 0.05, "_us": 50.0, "_ns": 50_000.0, "_s": 0.00005}


def latency_floor(metric: str) -> float:
    """The smallest change of ``metric`` that can be a regression (0 for non-latency metrics)."""
    if metric in CPU_COST_METRICS:
        return 0.0  # a mean over every operation of a round: no per-operation timer jitter
    for suffix, floor in LATENCY_FLOOR.items():
        if metric.endswith(suffix):
            return floor
    return 0.0


def direction_of(metric: str) -> Direction:
    """``higher``, ``lower`` or ``none`` (unknown: never compared)."""
    name = metric.lower()
    if name in _HIGHER_EXACT or name.startswith(_HIGHER_PREFIX) or name.endswith(_HIGHER_SUFFIX):
        return "higher"
    if name in _LOWER_EXACT or name.endswith(_LOWER_SUFFIX):
        return "lower"
    if name == "ops":  # pytest-benchmark's ops/s
        return "higher"
    return "none"


#: The questions the gate asks of every load run by default: throughput, tail
#: latency, errors and CPU cost (where the embedding model ran, its part and the rest in
#: units of it too: see :func:`pytest_agentmem.load.result.model_yardstick`). The other figures are measured and reported, and
#: gated only when a test names them (marker ``gate=``) or bounds them.
PRIMARY = {
    "load": frozenset({"qps", "p95_ms", "error_rate", "cpu_ms_per_op", "model_cpu_ms_per_op", "cpu_model_ratio"}),
    "benchmark": frozenset({"median_ms"}),
}


def is_primary(metric: str, kind: str = "load", also: tuple[str, ...] | frozenset[str] = ()) -> bool:
    """Whether the gate compares ``metric`` of a ``kind`` measurement by default.

    Figures filed with ``perf.record`` are all primary: a test records what it
    wants judged.
    """
    if metric in also:
        return True
    primary = PRIMARY.get(kind)
    return True if primary is None else metric in primary


def compared(metric: str, kind: str = "load") -> bool:
    """Whether ``metric`` is compared with its baseline."""
    if kind == "benchmark" and metric == "ops":
        return True
    return metric not in NOT_COMPARED and direction_of(metric) != "none"
