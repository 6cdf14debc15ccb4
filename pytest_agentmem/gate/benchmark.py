"""Turn pytest-benchmark's ``benchmark`` fixture results into a Measurement.

pytest-benchmark (5.x) keeps, on the fixture after the test body, ``stats``: a
``Metadata`` whose ``stats.data`` lists the seconds per iteration of every
round. The gate groups those rounds into at most :data:`MAX_BLOCKS` consecutive
blocks and takes each block's median as one round sample, so the stored baseline
stays small and the significance test sees independent-ish samples.
"""

from __future__ import annotations

import statistics
from typing import Any

from ..measurement import Measurement

MAX_BLOCKS = 30
NAME = "benchmark"


def _blocks(data: list[float], count: int) -> list[float]:
    count = max(1, min(count, len(data)))
    size, extra = divmod(len(data), count)
    out, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        out.append(statistics.median(data[start:end]))
        start = end
    return out


def benchmark_measurement(fixture: Any) -> Measurement | None:
    """A ``kind="benchmark"`` Measurement from a used ``benchmark`` fixture, else None."""
    meta = getattr(fixture, "stats", None)
    stats = getattr(meta, "stats", None)
    data = list(getattr(stats, "data", None) or [])
    if not data or getattr(fixture, "has_error", False) or getattr(fixture, "disabled", False):
        return None
    blocks = [t * 1000 for t in _blocks(data, MAX_BLOCKS)]
    median_ms = statistics.median(d * 1000 for d in data)
    rounds = [{"median_ms": b, "ops": 1000 / b} for b in blocks if b > 0]
    metrics = {
        "median_ms": median_ms, "ops": 1000 / median_ms if median_ms > 0 else 0.0,
        "min_ms": min(data) * 1000, "max_ms": max(data) * 1000,
        "stddev_ms": statistics.stdev(data) * 1000 if len(data) > 1 else 0.0,
    }
    info = {"rounds": len(data), "iterations": getattr(meta, "iterations", 1),
            "mean_ms": statistics.mean(data) * 1000, "group": getattr(fixture, "group", None),
            "source": "pytest-benchmark"}
    return Measurement(NAME, metrics, rounds, kind="benchmark", info=info)
