"""Embedding: the model's throughput uncached, and the embedding cache's hit path.

::

    from pytest_agentmem.scenarios.embedding import *  # noqa: F401,F403

On the ``embedder`` fixture (override it to measure another model). Every text
of the model figures is new (a counter runs across rounds), so they measure
the model and its batching:

- ``embed_model_batch32``: batches of 32 texts, one caller (texts/s = qps x 32);
- ``embed_model_single``: one text per call, one caller;
- ``embed_model_single_x16``: one text per call, 16 callers at once (what
  concurrent searches do; a batching embedder coalesces them).

Then the CACHE figures: ``cache_embedding_hit_path`` asks for texts already
embedded (a fresh per-test cache, filled first), ``cache_embedding_hits.hit_rate``
must be 1.0, and a cached vector must equal the model's. Uses ``embedder.uncached()``
and ``embedder.per_test()`` when the embedder has them (the shipped one does),
else the embedder as it is.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from .sizing import AB_TOLERANCE, scaled_seconds

__all__ = ["test_agentmem_scenario_embedding"]

_fresh = itertools.count()


def _text() -> str:
    n = next(_fresh)
    return f"Note {n}: the user said they would visit their sister in city {n % 97} next month"


@pytest.mark.agentmem_perf(max_error_rate=0.0, min_hit_rate=1.0, compare_tolerance=AB_TOLERANCE)
async def test_agentmem_scenario_embedding(embedder: Any, perf: Any) -> None:
    """Texts per second of the model (batched, single, 16 concurrent single calls) and the cache hit path."""
    model = embedder.uncached() if hasattr(embedder, "uncached") else embedder
    await model.embed([_text() for _ in range(32)])  # load the session

    async def batch(i: int) -> None:
        await model.embed([_text() for _ in range(32)])

    async def single(i: int) -> None:
        await model.embed_one(_text())

    seconds = scaled_seconds(1.0)
    result = await perf.run(batch, concurrency=1, duration=seconds, name="embed_model_batch32")
    perf.record("embed_model_batch32_texts", texts_per_s=result.qps * 32)
    await perf.run(single, concurrency=1, duration=seconds, name="embed_model_single")
    await perf.run(single, concurrency=16, duration=seconds, warmup=16, name="embed_model_single_x16")

    cached = embedder.per_test() if hasattr(embedder, "per_test") else embedder
    texts = [f"Cached note {n}: the user prefers tea in the afternoon" for n in range(200)]
    vectors = await cached.embed(texts)
    again = await model.embed(texts[:8])
    cosines = np.sum(np.asarray(vectors[:8]) * np.asarray(again), axis=1)
    assert float(cosines.min()) > 0.99, f"a cached vector differs from the model's (cosine {cosines.min():.4f})"
    stats = getattr(cached, "stats", None)
    hits_before = (stats.hits, stats.texts) if stats is not None else None

    async def hit(i: int) -> None:
        await cached.embed_one(texts[i % len(texts)])

    await perf.run(hit, concurrency=16, duration=seconds, warmup=50, name="cache_embedding_hit_path")
    if hits_before is not None:
        hits, total = stats.hits - hits_before[0], stats.texts - hits_before[1]
        perf.record("cache_embedding_hits", hit_rate=hits / max(1, total))
