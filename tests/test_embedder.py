"""The real embedding model: semantics, batching, truncation, bad input, caches."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from pytest_agentmem.gate.plugin import GatePlugin
from pytest_agentmem.memory.cache import DiskVectorCache, LRUVectorCache
from pytest_agentmem.memory.embed_batch import ModelRunner, cgroup_cpu_limit, default_workers
from pytest_agentmem.memory.embedder import (
    Embedder,
    EmbedderUnavailableError,
    load_model,
)
from pytest_agentmem.memory.model import MAX_CONTENT_CHARS, InvalidMemoryError
from pytest_agentmem.session import get_session, plugin_of


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


async def test_similar_sentences_are_closer_than_unrelated(embedder: Embedder) -> None:
    dogs, puppies, stocks = await embedder.embed(
        ["I love dogs", "Puppies are my favourite", "The quarterly tax report is due on Friday"])
    assert cos(dogs, puppies) > 0.45
    assert cos(dogs, puppies) > cos(dogs, stocks) + 0.3


async def test_shape_dtype_and_unit_norm(embedder: Embedder) -> None:
    vectors = await embedder.embed(["one", "two words", "three words here"])
    assert vectors.shape == (3, embedder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.dim == 384 and "MiniLM" in embedder.model_id
    single = await embedder.embed_one("one")
    assert single.shape == (embedder.dim,)
    assert (await embedder.embed([])).shape == (0, embedder.dim)


async def test_batch_equals_single_embeddings(embedder: Embedder) -> None:
    model = embedder.uncached()
    texts = [f"Memory number {i}: the user mentioned topic {i % 7} at lunch" for i in range(12)]
    batch = await model.embed(texts)
    singles = np.stack([await model.embed_one(t) for t in texts])
    # int8 activations are quantised per batch, so padding may move the last digits
    np.testing.assert_allclose(np.sum(batch * singles, axis=1), 1.0, atol=2e-3)
    assert model.stats.computed == 24 and model.stats.hits == 0


async def test_concurrent_calls_are_coalesced_into_batches(embedder: Embedder) -> None:
    model = embedder.uncached()
    texts = [f"concurrent question {i} about the weekend plans" for i in range(48)]
    before = model.model_batches
    results = await asyncio.gather(*(model.embed_one(t) for t in texts))
    batches = model.model_batches - before
    assert batches < len(texts) / 4, f"{batches} model batches for {len(texts)} concurrent calls"
    direct = await model.embed(texts)
    np.testing.assert_allclose(np.sum(np.stack(results) * direct, axis=1), 1.0, atol=2e-3)


class RecordingRunner(ModelRunner):
    """The real model on ``workers`` threads, recording each batch's size and how many ran at once.

    With ``meet``, every batch waits (up to 10 s) until ``meet`` batches are running
    together: batches that do not run side by side fail with ``BrokenBarrierError``.
    """

    def __init__(self, embedder: Embedder, workers: int, meet: int = 0) -> None:
        super().__init__(embedder._runner.loaded, max_batch=32, workers=workers)
        self.sizes: list[int] = []
        self.active = self.most = 0
        self.lock = threading.Lock()
        self.barrier = threading.Barrier(meet) if meet else None

    def compute(self, texts: list[str]) -> np.ndarray:
        with self.lock:
            self.sizes.append(len(texts))
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            if self.barrier is not None:
                self.barrier.wait(timeout=10)
            return super().compute(texts)
        finally:
            with self.lock:
                self.active -= 1


async def test_queued_texts_are_split_between_workers_that_run_side_by_side(embedder: Embedder) -> None:
    runner = RecordingRunner(embedder, workers=2, meet=2)
    model = Embedder(runner.loaded, _runner=runner)
    try:
        texts = [f"side by side question {i} about the holidays" for i in range(16)]
        vectors = await asyncio.gather(*(model.embed_one(t) for t in texts))
    finally:
        runner.executor.shutdown(wait=True)
    assert runner.sizes == [8, 8] and runner.most == 2
    direct = await embedder.uncached().embed(texts)
    np.testing.assert_allclose(np.sum(np.stack(vectors) * direct, axis=1), 1.0, atol=2e-3)


async def test_one_call_with_many_texts_uses_every_worker(embedder: Embedder) -> None:
    runner = RecordingRunner(embedder, workers=2, meet=2)
    model = Embedder(runner.loaded, _runner=runner)
    try:
        await model.embed([f"a long list, text {i}" for i in range(40)])
    finally:
        runner.executor.shutdown(wait=True)
    assert runner.sizes == [20, 20]


async def test_one_worker_runs_one_batch_at_a_time(embedder: Embedder) -> None:
    runner = RecordingRunner(embedder, workers=1)
    model = Embedder(runner.loaded, _runner=runner)
    try:
        await asyncio.gather(*(model.embed_one(f"one at a time {i}") for i in range(16)))
        await model.embed([f"then a list, text {i}" for i in range(40)])
    finally:
        runner.executor.shutdown(wait=True)
    assert runner.sizes == [16, 32, 8] and runner.most == 1


@pytest.mark.parametrize("v2, v1, expected", [
    ("max 100000\n", None, None),              # cgroup v2, no quota
    ("150000 100000\n", None, 2),              # docker --cpus=1.5: 2 threads
    ("100000 100000\n", None, 1),
    (None, ("-1", "100000"), None),             # cgroup v1, no quota
    (None, ("400000", "100000"), 4),
    (None, None, None),                         # no cgroup files (not Linux, or hidden)
    ("garbage", None, None),
])
def test_a_container_cpu_quota_limits_the_default_workers(tmp_path, v2, v1, expected) -> None:
    cpu_max, v1_dir = tmp_path / "cpu.max", tmp_path / "cpu"
    if v2 is not None:
        cpu_max.write_text(v2)
    if v1 is not None:
        v1_dir.mkdir()
        (v1_dir / "cpu.cfs_quota_us").write_text(v1[0] + "\n")
        (v1_dir / "cpu.cfs_period_us").write_text(v1[1] + "\n")
    assert cgroup_cpu_limit(cpu_max, v1_dir) == expected


def test_workers_default_to_the_usable_cores_and_must_be_positive(embedder: Embedder) -> None:
    assert 1 <= embedder.workers == default_workers() <= 8
    with pytest.raises(ValueError, match="workers must be at least 1"):
        ModelRunner(embedder._runner.loaded, max_batch=32, workers=0)


async def test_identical_concurrent_texts_are_embedded_once(embedder: Embedder) -> None:
    model = embedder.uncached()
    results = await asyncio.gather(*(model.embed_one("the very same text") for _ in range(10)))
    assert model._runner.batched_texts >= 1
    for vector in results[1:]:
        np.testing.assert_array_equal(vector, results[0])


async def test_event_loop_keeps_running_while_the_model_works(embedder: Embedder) -> None:
    model = embedder.uncached()
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    await model.embed([f"a longer sentence number {i} to keep the model busy for a while" for i in range(64)])
    done = True
    await task
    assert ticks >= 5, "the event loop was blocked while embedding"


async def test_long_text_is_truncated_to_the_token_limit(embedder: Embedder) -> None:
    assert embedder.max_tokens == 256
    long_text = " ".join(f"word{i}" for i in range(2000))
    a, b = await embedder.embed([long_text, long_text + " and a completely different ending about volcanoes"])
    assert cos(a, b) > 0.999  # only the first 256 tokens count


@pytest.mark.parametrize("bad, match", [
    ("", "empty"), ("   \n", "empty"), ("x" * (MAX_CONTENT_CHARS + 1), "limit"), ("a\x00b", "NUL"),
    (None, "must be a str"), (42, "must be a str"),
])
async def test_bad_texts_are_rejected(embedder: Embedder, bad: object, match: str) -> None:
    before = embedder.stats.computed
    with pytest.raises(InvalidMemoryError, match=match):
        await embedder.embed(["fine", bad])  # type: ignore[list-item]
    assert embedder.stats.computed == before  # nothing half-done


async def test_a_str_instead_of_a_list_is_rejected(embedder: Embedder) -> None:
    with pytest.raises(InvalidMemoryError, match="list of str"):
        await embedder.embed("not a list")  # type: ignore[arg-type]


async def test_l1_cache_hits_and_stats(embedder: Embedder) -> None:
    model = Embedder(embedder._runner.loaded, l1=LRUVectorCache(100), _runner=embedder._runner)
    first = await model.embed(["cached text one", "cached text two"])
    again = await model.embed(["cached text two", "cached text one", "cached text three"])
    np.testing.assert_array_equal(again[0], first[1])
    stats = model.stats
    assert (stats.calls, stats.texts, stats.l1_hits, stats.computed) == (2, 5, 2, 3)
    assert stats.hit_rate == pytest.approx(2 / 5)
    assert stats.as_dict()["hits"] == 2


async def test_disk_cache_survives_a_new_embedder(embedder: Embedder, tmp_path) -> None:
    path = tmp_path / "emb.sqlite3"
    first = Embedder(embedder._runner.loaded, disk=DiskVectorCache(path), _runner=embedder._runner)
    vectors = await first.embed(["persisted one", "persisted two"])
    first.disk.close()  # flushes the queued writes
    second = Embedder(embedder._runner.loaded, disk=DiskVectorCache(path), _runner=embedder._runner)
    again = await second.embed(["persisted two", "persisted one"])
    second.disk.close()
    assert second.stats.disk_hits == 2 and second.stats.computed == 0
    np.testing.assert_array_equal(again, vectors[::-1])


async def test_redis_l2_cache_is_shared(embedder: Embedder, redis_client) -> None:
    writer = embedder.uncached().with_redis(redis_client)
    vectors = await writer.embed(["shared through redis", "another shared text"])
    reader = embedder.uncached().with_redis(redis_client)
    again = await reader.embed(["another shared text", "shared through redis"])
    assert reader.stats.l2_hits == 2 and reader.stats.computed == 0
    np.testing.assert_array_equal(again, vectors[::-1])


def test_model_name_is_in_the_session(embedder: Embedder, pytestconfig: pytest.Config) -> None:
    assert get_session(pytestconfig).embedding_model == embedder.model_id


def test_the_embedder_gives_the_gate_a_probe_of_the_model(embedder: Embedder,
                                                          pytestconfig: pytest.Config) -> None:
    name = f"embedding model {embedder.model_id}"
    probe = get_session(pytestconfig).speed_probes[name]
    assert probe.fixture == "embedder"  # only tests using it are normalised by it
    before = (embedder.stats.computed, embedder.model_batches)
    assert probe.run() > 0
    assert (embedder.stats.computed, embedder.model_batches) == before  # no counter moved
    components = plugin_of(pytestconfig, GatePlugin).calibration()["components"]
    assert components[name] > 0  # what a baseline records beside the Python probe


def test_an_unknown_model_fails_clearly(tmp_path) -> None:
    with pytest.raises(EmbedderUnavailableError, match="could not load the fastembed model") as info:
        load_model("nobody/no-such-embedding-model", cache_dir=tmp_path)
    assert "AGENTMEM_EMBEDDING_MODEL" in str(info.value)
