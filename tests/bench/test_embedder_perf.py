"""Benchmarks of the real embedder (run with --agentmem-perf).

    python -m pytest tests/bench/test_embedder_perf.py --agentmem-perf -s

All runs use the embedder without caches (every text goes to the model) and
texts no run has seen, so they measure the model and the batching, not a cache.
Figures are medians of several rounds measured in one run, interleaved where
they are compared.
"""

from __future__ import annotations

import itertools
import statistics

import pytest

from pytest_agentmem.memory.embedder import Embedder

ROUNDS = 3
_fresh = itertools.count()


def fresh_text() -> str:
    n = next(_fresh)
    return f"Note {n}: the user said they would visit their sister in city {n % 97} next month"


# The model uses both cores: any neighbour moves it, so a wider tolerance than the default.
@pytest.mark.agentmem_perf(tolerance=0.3)
async def test_embedder_batch_single_and_micro_batched(perf, embedder: Embedder) -> None:
    model = embedder.uncached()
    await model.embed([fresh_text() for _ in range(32)])  # warm the session

    async def batch_of_32(index: int) -> None:
        await model.embed([fresh_text() for _ in range(32)])

    async def single(index: int) -> None:
        await model.embed_one(fresh_text())

    batch_rates, single_rates, coalesced_rates, single_p50, single_p95, coalesced_p95 = [], [], [], [], [], []
    for number in range(ROUNDS):
        batch = await perf.run(batch_of_32, concurrency=1, duration=3.0, name=f"batch32-{number}")
        batch_rates.append(batch.qps * 32)
        one = await perf.run(single, concurrency=1, duration=3.0, name=f"single-{number}")
        single_rates.append(one.qps)
        single_p50.append(one.p50_ms)
        single_p95.append(one.p95_ms)
        batches_before, texts_before = model.model_batches, model._runner.batched_texts
        many = await perf.run(single, concurrency=32, duration=3.0, name=f"single-x32-{number}")
        coalesced_rates.append(many.qps)
        coalesced_p95.append(many.p95_ms)
        mean_batch = ((model._runner.batched_texts - texts_before)
                      / max(1, model.model_batches - batches_before))
    figures = {
        "batch_texts_per_s": statistics.median(batch_rates),
        "single_texts_per_s": statistics.median(single_rates),
        "single_p50_ms": statistics.median(single_p50), "single_p95_ms": statistics.median(single_p95),
        "coalesced_texts_per_s": statistics.median(coalesced_rates),
        "coalesced_p95_ms": statistics.median(coalesced_p95),
        "coalesced_vs_single": statistics.median(c / s for c, s in zip(coalesced_rates, single_rates)),
        "mean_model_batch": mean_batch,
    }
    perf.record("embedder", **figures)
    print(f"\nembedder {model.model_id}: batches of 32 {batch_rates} texts/s; single calls "
          f"{single_rates} /s (p50 {figures['single_p50_ms']:.1f} ms, p95 {figures['single_p95_ms']:.1f} ms); "
          f"32 concurrent single calls {coalesced_rates} /s (p95 {figures['coalesced_p95_ms']:.1f} ms, "
          f"mean model batch {mean_batch:.1f}); medians {figures}")
