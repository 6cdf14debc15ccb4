"""Soak: a memory-service workload for a long time; RSS growth and p95 drift (issue 9).

    python -m pytest tests/quality/test_soak.py --agentmem-perf -s -p no:cacheprovider
    AGENTMEM_SOAK_SECONDS=120 python -m pytest tests/quality/test_soak.py --agentmem-perf -s -p no:cacheprovider

Ten minutes by default (``AGENTMEM_SOAK_SECONDS`` scales it; this variable is read
by this test only). Four users add memories and search them (the full path:
embedding with the per-test cache, Postgres/pgvector, the in-process result
cache), with deletes so the store stays bounded. Measured: this process's RSS
(sampled each second) in the first and the last window, and the p95 latency of
the operations of each window; the window is one minute, or a fifth of the run
when it is shorter than five minutes. Recorded for the gate: ``rss_growth_mb``
(bounded) and ``p95_drift`` (last window's p95 over the first's, bounded).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reliability import tally  # noqa: E402

DEFAULT_SECONDS = 600.0
TOPICS = ["dogs", "the garden", "a trip to Lisbon", "the quarterly report", "chess openings",
          "sourdough bread", "the dentist", "a jazz concert", "running shoes", "tax forms"]
QUERIES = ["what about my dog?", "garden plans", "travel to Portugal", "work reports", "baking",
           "health appointments", "music", "sports gear"]


def soak_seconds() -> float:
    raw = os.environ.get("AGENTMEM_SOAK_SECONDS", "")
    try:
        return float(raw) if raw else DEFAULT_SECONDS
    except ValueError:
        raise pytest.UsageError(f"AGENTMEM_SOAK_SECONDS must be a number of seconds, got {raw!r}") from None


@pytest.mark.agentmem_perf(reference=False, max_rss_growth_mb=256, max_p95_drift=3.0, max_error_rate=0.0)
async def test_soak_memory_service(perf: Any, memory_service: Any) -> None:
    duration = soak_seconds()
    window = min(60.0, duration / 5)
    latencies: list[tuple[float, float]] = []  # (seconds since start, ms)
    live: dict[str, list[str]] = {f"u{n}": [] for n in range(4)}
    start = time.monotonic()

    async def op(i: int) -> None:
        user = f"u{i % 4}"
        t0 = time.monotonic()
        if i % 3 == 0:
            memory = await memory_service.add(f"note {i}: about {TOPICS[i % len(TOPICS)]}", user_id=user)
            live[user].append(memory.id)
            if len(live[user]) > 500:  # keep the store bounded: a soak tests leaks, not growth
                await memory_service.delete(live[user].pop(0))
        else:
            await memory_service.search(QUERIES[i % len(QUERIES)], user_id=user, limit=5)
        t1 = time.monotonic()
        latencies.append((t1 - start, (t1 - t0) * 1000.0))

    process = psutil.Process()
    rss: list[tuple[float, float]] = []

    async def sample() -> None:
        while True:
            rss.append((time.monotonic() - start, process.memory_info().rss / 2**20))
            await asyncio.sleep(1.0)

    sampler = asyncio.create_task(sample())
    try:
        result = await perf.run(op, concurrency=4, duration=duration, timeout=30, name="soak")
    finally:
        sampler.cancel()
    elapsed = time.monotonic() - start

    def in_window(rows: list[tuple[float, float]], first: bool) -> list[float]:
        return [v for t, v in rows if (t <= window if first else t >= elapsed - window)]

    p95_first = float(np.percentile(in_window(latencies, True), 95))
    p95_last = float(np.percentile(in_window(latencies, False), 95))
    rss_first = statistics.median(in_window(rss, True))
    rss_last = statistics.median(in_window(rss, False))
    growth = rss_last - rss_first
    drift = p95_last / p95_first if p95_first > 0 else float("nan")
    perf.record("soak_health", rss_growth_mb=growth, p95_drift=drift)
    tally("soak", "memory service", duration_s=elapsed, ops=result.ops, errors=result.errors,
          rss_first_mb=rss_first, rss_last_mb=rss_last, rss_growth_mb=growth,
          p95_first_ms=p95_first, p95_last_ms=p95_last, p95_drift=drift)
    print(f"\nsoak {elapsed:.0f} s, window {window:.0f} s: {result.ops} ops ({result.qps:.0f}/s), "
          f"{result.errors} errors; RSS {rss_first:.0f} -> {rss_last:.0f} MB ({growth:+.1f} MB); "
          f"p95 {p95_first:.1f} -> {p95_last:.1f} ms (x{drift:.2f})")
