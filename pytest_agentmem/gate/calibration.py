"""A CPU calibration probe, to compare runs made on different machines.

The probe is real CPU work of the kind the plugin's workloads do in Python
(JSON encoding and SHA-256 of text, sorting): ``ops_per_s`` is how many probe
operations a single core does per second. It is measured once per process,
only when needed (writing a baseline, or comparing against one recorded on
another machine), as the median of several short repetitions so one
interrupted repetition does not move it. ``spread`` (max/min - 1 of the
repetitions without the fastest and slowest) says how far to trust it. A probe adds its own noise, so the
gate never normalises a same-machine comparison.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from typing import Any

PROBE_NAME = "json+sha256+sort/v1"

_TEXT = (
    "Agent memory systems store facts a user told an assistant, search them by meaning "
    "and recency, update them when the user changes their mind and forget them on request. "
)


def _probe_op(i: int) -> int:
    doc = {"id": i, "user": f"u{i % 17}", "text": _TEXT * 4, "tags": [str(j) for j in range(24)],
           "score": i / 7}
    payload = json.dumps(doc, sort_keys=True).encode()
    digest = hashlib.sha256(payload).digest()
    return len(sorted(payload[:512])) + digest[0]


def measure_probe(repetitions: int = 7, seconds: float = 0.06) -> dict[str, Any]:
    """Run the probe ``repetitions`` times for about ``seconds`` each; median ops/s."""
    rates: list[float] = []
    i = 0
    for _ in range(repetitions):
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            for _ in range(20):
                _probe_op(i)
                i += 1
            count += 20
            now = time.perf_counter()
            if now >= deadline:
                break
        rates.append(count / (now - start))
    trimmed = sorted(rates)[1:-1] if len(rates) > 3 else rates
    return {"probe": PROBE_NAME, "ops_per_s": statistics.median(rates),
            "spread": max(trimmed) / min(trimmed) - 1, "samples": rates}


def speed_ratio(stored: dict[str, Any] | None, current: dict[str, Any] | None) -> float | None:
    """This machine's speed relative to the baseline's (< 1: this one is slower)."""
    if not stored or not current or stored.get("probe") != current.get("probe"):
        return None
    old, new = stored.get("ops_per_s"), current.get("ops_per_s")
    if not isinstance(old, (int, float)) or not isinstance(new, (int, float)) or old <= 0 or new <= 0:
        return None
    return float(new) / float(old)
