"""Which metrics are rates and which are speed figures, by name (imports nothing).

A speed figure scales with the machine (latency, throughput, CPU cost per operation); a
correctness figure does not (error rates, recall, hit rates). The gate, the verdicts and
the reports all ask these two questions; :mod:`.directions` says which way is better.
"""

from __future__ import annotations

#: Lower-is-better costs that scale with machine speed, by name: measured in CPU time, so a
#: neighbour that takes wall time leaves them alone (the A/B gate decides on them when the
#: two sides waited unequally), and no latency jitter floor applies.
CPU_COST_METRICS = frozenset({"cpu_ms_per_op", "model_cpu_ms_per_op", "cpu_model_ratio"})
#: Figures measured against a yardstick in the same round (``cpu_model_ratio``: the
#: operation's CPU in units of the embedding model's, :func:`~pytest_agentmem.load.result.model_yardstick`):
#: the calibration probes, which measure the machine apart, say nothing about them.
YARDSTICK_METRICS = frozenset({"cpu_model_ratio"})


def is_rate(metric: str) -> bool:
    """A bounded fraction (error rate, recall, hit rate): change floored by RATE_FLOOR."""
    name = metric.lower()
    return name.endswith("rate") or name.startswith(("recall", "precision", "accuracy"))


def is_time_like(metric: str) -> bool:
    """A speed figure: scales with machine speed (latency, throughput, CPU cost per operation)."""
    name = metric.lower()
    if name in CPU_COST_METRICS:
        return True
    if is_rate(name) and not name.endswith(("per_s", "qps")):
        return False
    return name in ("qps", "ops", "throughput", "ops_per_s") or name.endswith(
        ("_ms", "_s", "_us", "_ns", "_per_s", "_per_sec", "_qps", "_throughput"))
