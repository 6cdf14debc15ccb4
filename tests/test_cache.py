"""The caches: LRU, disk, and the write-invalidated result caches (in process and Redis)."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_agentmem.errors import ConfigurationError
from pytest_agentmem.memory.cache import (
    GLOBAL_SCOPE,
    DiskVectorCache,
    LRUVectorCache,
    RedisResultCache,
    RedisVectorCache,
    ResultCache,
    result_key,
    scopes_of,
    write_scopes,
)
from pytest_agentmem.memory.model import Memory

pytestmark = pytest.mark.asyncio


async def test_lru_evicts_the_least_recently_used() -> None:
    cache = LRUVectorCache(2)
    cache.put("m", "a", np.ones(3))
    cache.put("m", "b", np.zeros(3))
    assert cache.get("m", "a") is not None  # a is now the most recent
    cache.put("m", "c", np.ones(3))
    assert cache.get("m", "b") is None and cache.get("m", "a") is not None and len(cache) == 2
    assert cache.get("other-model", "a") is None  # keyed by model too
    with pytest.raises(ValueError):
        cache.get("m", "a")[0] = 5.0  # cached vectors are read-only


async def test_disk_cache_round_trip(tmp_path) -> None:
    cache = DiskVectorCache(tmp_path / "v.sqlite3")
    cache.put_many_nowait("m", {"a": np.arange(4, dtype=np.float32)})
    found = await cache.get_many("m", ["a", "b"], 4)
    assert list(found) == ["a"] and found["a"].tolist() == [0, 1, 2, 3]
    assert await cache.get_many("m", ["a"], 5) == {}  # another dimension is a miss
    assert cache.count("m") == 1
    cache.close()


async def test_scopes_and_keys() -> None:
    assert scopes_of() == (GLOBAL_SCOPE,)
    assert scopes_of(user_id="u", run_id="r") == ("user:u", "run:r")
    assert write_scopes([Memory("x", user_id="u", agent_id="a")]) == {GLOBAL_SCOPE, "user:u", "agent:a"}
    key = result_key("m", "q", user_id="u", agent_id=None, run_id=None, filters={"b": 1, "a": 2}, limit=5)
    assert key == result_key("m", "q", user_id="u", agent_id=None, run_id=None, filters={"a": 2, "b": 1}, limit=5)
    assert key != result_key("m", "q", user_id="u", agent_id=None, run_id=None, filters=None, limit=5)


async def _exercise(cache: ResultCache | RedisResultCache) -> None:
    scopes = scopes_of(user_id="u")
    results = [Memory("old content", user_id="u", score=0.9, metadata={"k": [1]}, embedding=np.ones(2))]
    cached, token = await cache.lookup("k1", scopes)
    assert cached is None
    await cache.store("k1", scopes, token, results)
    cached, _ = await cache.lookup("k1", scopes)
    assert cached is not None and cached[0].content == "old content" and cached[0].score == 0.9
    assert cached[0].metadata == {"k": [1]} and cached[0].embedding.tolist() == [1.0, 1.0]
    cached[0].metadata["k"].append(2)  # callers cannot corrupt the cache
    assert (await cache.lookup("k1", scopes))[0][0].metadata == {"k": [1]}

    # a write to another user leaves it; a write to this user invalidates it
    await cache.invalidate({"user:someone-else"})
    assert (await cache.lookup("k1", scopes))[0] is not None
    await cache.invalidate(write_scopes([Memory("x", user_id="u")]))
    assert (await cache.lookup("k1", scopes))[0] is None

    # an unscoped search depends on every write
    await cache.store("k2", scopes_of(), (await cache.lookup("k2", scopes_of()))[1], results)
    await cache.invalidate({"agent:a"})
    assert (await cache.lookup("k2", scopes_of()))[0] is None

    # a search that raced with a write: it read the generation before the write
    # and stores afterwards; its (possibly old) results are never served
    _, stale_token = await cache.lookup("k3", scopes)
    await cache.invalidate({"user:u"})
    await cache.store("k3", scopes, stale_token, results)
    assert (await cache.lookup("k3", scopes))[0] is None


async def test_result_cache_invalidation() -> None:
    cache = ResultCache(ttl=60)
    await _exercise(cache)
    assert cache.hits >= 3 and cache.misses >= 4


async def test_a_full_result_cache_gives_the_garbage_collector_nothing_to_scan() -> None:
    """Entries are untracked tuples: a full collection's pause does not grow with the cache."""
    import gc

    cache = ResultCache(ttl=60, max_entries=2_000)
    gc.collect()
    before = len(gc.get_objects())
    for i in range(2_000):
        results = [Memory(f"memory {i} {j}", user_id="u", score=0.5, metadata={"turn": [i, j]}) for j in range(10)]
        _, token = await cache.lookup(f"k{i}", ("user:u",))
        await cache.store(f"k{i}", ("user:u",), token, results)
    del results
    gc.collect()
    assert len(cache) == 2_000
    assert len(gc.get_objects()) - before < 2_000  # under one per entry (as Memory objects: 21 per entry)


async def test_result_cache_ttl_and_size() -> None:
    cache = ResultCache(ttl=0.0, max_entries=1)
    _, token = await cache.lookup("k", ("*",))
    await cache.store("k", ("*",), token, [])
    assert (await cache.lookup("k", ("*",)))[0] is None  # expired at once
    cache.ttl = 60
    for key in ("a", "b"):
        _, token = await cache.lookup(key, ("*",))
        await cache.store(key, ("*",), token, [])
    assert len(cache) == 1 and (await cache.lookup("b", ("*",)))[0] == []


async def test_redis_result_cache_invalidation(redis_client) -> None:
    await _exercise(RedisResultCache(redis_client, ttl=60))


async def test_redis_result_cache_is_shared_between_instances(redis_client) -> None:
    one, two = RedisResultCache(redis_client), RedisResultCache(redis_client)
    _, token = await one.lookup("k", ("user:u",))
    await one.store("k", ("user:u",), token, [Memory("shared", user_id="u")])
    assert (await two.lookup("k", ("user:u",)))[0][0].content == "shared"
    await two.invalidate({"user:u"})  # a write seen by another process
    assert (await one.lookup("k", ("user:u",)))[0] is None


@pytest.mark.parametrize("corrupt", [b"{not json", b'{"gen": [0]}', b'{"gen": [0], "results": "[{}]"}',
                                     b'{"gen": [0], "results": "[{\\"embedding\\": \\"%%%\\"}]"}', b"[1, 2]"])
async def test_a_corrupt_redis_result_entry_is_a_miss_and_is_replaced(redis_client, corrupt: bytes) -> None:
    cache = RedisResultCache(redis_client)
    scopes = ("user:u",)
    await redis_client.set(f"{cache.prefix}:k", corrupt)
    cached, token = await cache.lookup("k", scopes)
    assert cached is None and token == [0]
    assert cache.misses == 1 and cache.hits == 0 and cache.errors == 1 and cache.last_error
    await cache.store("k", scopes, token, [Memory("fresh", user_id="u")])  # the search's own store
    assert (await cache.lookup("k", scopes))[0][0].content == "fresh"


async def test_redis_vector_cache_refuses_decoding_clients(agentmem_redis) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(agentmem_redis.url, decode_responses=True)
    try:
        with pytest.raises(ConfigurationError, match="decode_responses=False"):
            RedisVectorCache(client)
    finally:
        await client.aclose()
