"""Which metrics are rates and which are speed figures, by name (imports nothing).

A speed figure scales with the machine (latency, throughput, CPU cost per operation); a
correctness figure does not (error rates, recall, hit rates). The gate, the verdicts and
the reports all ask these two questions; :mod:`.directions` says which way is better.
"""

from __future__ import annotations

#: Lower-is-better costs that scale with machine speed, by name.
CPU_COST_METRICS = frozenset({"cpu_ms_per_op"})


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
    return name in ("qps", "ops", "throughput", "ops_per_s", "cpu_ms_per_op") or name.endswith(
        ("_ms", "_s", "_us", "_ns", "_per_s", "_per_sec", "_qps", "_throughput"))
