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
import sys
from pathlib import Path

import pytest

from pytest_agentmem.memory.embedder import Embedder, load_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from neighbours import Neighbour  # noqa: E402

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


# One model thread per core, each run single-threaded (the embedder's design), against one
# thread handing each batch to onnxruntime's own thread pool (its default, the design before):
# what a busy machine does to the CPU per text the gate compares. Interleaved rounds, quiet
# and next to a spinning process per core.
@pytest.mark.agentmem_perf(reference=False)
async def test_embedder_cpu_per_text_next_to_a_busy_neighbour(perf, embedder: Embedder) -> None:
    designs = {"workers": embedder.uncached(),
               "ort_pool": Embedder(load_model(threads=None), workers=1)}

    def single(model: Embedder):
        async def op(index: int) -> None:
            await model.embed_one(fresh_text())
        return op

    cpu: dict[tuple[str, str], list[float]] = {}
    qps: dict[tuple[str, str], list[float]] = {}
    try:
        for model in designs.values():
            await model.embed([fresh_text() for _ in range(32)])  # warm the session
        for number in range(ROUNDS):
            for condition in ("quiet", "busy"):
                neighbour = Neighbour() if condition == "busy" else None
                try:
                    for name, model in designs.items():
                        result = await perf.run(single(model), concurrency=16, duration=2.0, warmup=16,
                                                name=f"{name}-{condition}-{number}")
                        cpu.setdefault((name, condition), []).append(result.cpu_ms_per_op)
                        qps.setdefault((name, condition), []).append(result.qps)
                finally:
                    if neighbour is not None:
                        neighbour.stop()
    finally:
        designs["ort_pool"].close()
    median = {key: statistics.median(v) for key, v in cpu.items()}
    growth = {name: median[(name, "busy")] / median[(name, "quiet")] for name in designs}
    perf.record("cpu_per_text", **{f"{n}_{c}_ms": v for (n, c), v in median.items()},
                **{f"{n}_busy_vs_quiet": g for n, g in growth.items()},
                **{f"{n}_{c}_qps": statistics.median(v) for (n, c), v in qps.items()})
    print(f"\nCPU ms per text at concurrency 16, medians of {ROUNDS}: "
          + ", ".join(f"{n} {c} {v:.2f}" for (n, c), v in median.items())
          + f"; busy/quiet: {growth}; texts/s: " + ", ".join(
              f"{n} {c} {statistics.median(v):.0f}" for (n, c), v in qps.items()))
    # the figure the gate compares must not grow with a neighbour's load
    assert growth["workers"] < 1.15, growth
