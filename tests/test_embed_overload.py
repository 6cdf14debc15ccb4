"""An overloaded embedder drops the texts nobody waits for any more (found by the users scenario).

Under more load than the model serves, operations are cancelled (their timeout, the
end of a load run) while their texts are still queued. Those texts must not reach the
model: otherwise the queue of abandoned work only grows, and every later request
waits behind it (the concurrent-users ramp saw every operation of a step cut off
after one overloaded step).
"""

from __future__ import annotations

import asyncio

import pytest

from pytest_agentmem.memory.embedder import Embedder

pytestmark = pytest.mark.slow


async def test_texts_of_cancelled_callers_are_not_computed(embedder: Embedder) -> None:
    model = embedder.uncached()
    before = model.model_batches
    callers = [asyncio.ensure_future(model.embed_one(f"abandoned note number {k} about the garden"))
               for k in range(300)]
    batcher = model._batcher()
    while not batcher.busy:  # they queue; the model takes its first batches (whatever its speed)
        await asyncio.sleep(0.001)
    for caller in callers:
        caller.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    while batcher.busy:  # the batches in the model's hands finish
        await asyncio.sleep(0.01)
    assert batcher.dropped >= 300 - 2 * 32, batcher.dropped  # at most the batches already running
    assert model.model_batches - before <= 2
    assert not batcher.pending and not batcher.waiters
    # the embedder still answers, at once
    assert (await model.embed_one("a new question")).shape == (model.dim,)


async def test_a_text_another_caller_waits_for_is_still_computed(embedder: Embedder) -> None:
    model = embedder.uncached()
    first = asyncio.ensure_future(model.embed_one("the same shared text"))
    second = asyncio.ensure_future(model.embed_one("the same shared text"))
    await asyncio.sleep(0)
    first.cancel()
    vector = await second
    assert vector.shape == (model.dim,)
