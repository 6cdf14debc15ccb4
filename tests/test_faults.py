"""Faults injected into the real servers during load, each followed by an audit (issue 9).

- a stalled Redis (SIGSTOP) makes ``redis_client`` time out instead of hanging, and the
  caches step aside (counted misses), also on a client made without timeouts;
- Redis killed and restarted mid-run: the memory service keeps answering from
  Postgres, the cache's failures are counted, and it serves hits again afterwards;
- Postgres restarted mid-run: the failed operations are counted, the pool recovers,
  no acknowledged write is lost;
- Redis paused longer than the timeout: searches answered, no stale result served;
- the pool exhausted: operations wait, time out and are counted, then recover;
- faults refuse servers this run did not start (external mode).

Each scenario is short (a few seconds) and runs in the ordinary suite on the
servers the plugin starts; ``--agentmem-services=local`` is needed (skipped otherwise).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import pytest_asyncio
from reliability import tally

from pytest_agentmem.load import run_load, validate
from pytest_agentmem.memory.audit import AuditReport, WriteLog, audit
from pytest_agentmem.memory.cache import RedisResultCache
from pytest_agentmem.memory.model import MemoryNotFoundError
from pytest_agentmem.memory.service import MemoryService
from pytest_agentmem.services.faults import Faults
from pytest_agentmem.services.fixtures import redis_client_fixture

pytestmark = pytest.mark.slow

#: Short timeouts so that a scenario takes seconds (the defaults are 2 s).
TIMEOUT_S = 0.5
redis_client = redis_client_fixture(socket_timeout=TIMEOUT_S, connect_timeout=TIMEOUT_S)

TOPICS = ["dogs", "the garden", "a trip to Lisbon", "the quarterly report", "chess openings",
          "sourdough bread", "the dentist", "a jazz concert"]
QUERIES = ["what about my dog?", "garden plans", "travel to Portugal", "work reports", "baking"]
USERS = [f"u{n}" for n in range(3)]


@pytest.fixture
def faults(agentmem_faults: Faults, agentmem_services: Any) -> Faults:
    for name in ("postgres", "redis"):
        if agentmem_services.mode_for(name) != "local":
            pytest.skip("fault injection needs servers this run starts (--agentmem-services=local)")
    return agentmem_faults


@pytest_asyncio.fixture
async def cached_service(memory_repo: Any, embedder: Any, redis_client: Any) -> MemoryService:
    """The full path with the search-result cache in Redis (short timeouts)."""
    cache = RedisResultCache(redis_client, ttl=60, timeout=TIMEOUT_S)
    return MemoryService(memory_repo, embedder.per_test(), result_cache=cache)


class Workload:
    """Adds (logged for the audit), deletes of acknowledged memories, searches; three users."""

    def __init__(self, service: MemoryService) -> None:
        self.service = service
        self.log = WriteLog()
        self.live: list[str] = []

    async def op(self, i: int) -> None:
        user = USERS[i % len(USERS)]
        kind = i % 6
        if kind in (0, 1, 2):
            memory = await self.log.add(self.service, f"note {i}: about {TOPICS[i % len(TOPICS)]}", user_id=user)
            self.live.append(memory.id)
        elif kind == 3 and len(self.live) > 4:
            await self.log.delete(self.service, self.live.pop(0))
        else:
            await self.service.search(QUERIES[i % len(QUERIES)], user_id=user, limit=5)

    def queries(self) -> list[tuple[str, dict[str, Any]]]:
        return [(q, {"user_id": u}) for q in QUERIES for u in USERS]


async def run_with(workload: Workload, chaos: Any, *, duration: float = 3.0, concurrency: int = 4,
                   timeout: float = 10.0) -> Any:
    spec = validate(workload.op, concurrency=concurrency, duration=duration, timeout=timeout, name="faults")
    result, _ = await asyncio.gather(run_load(workload.op, spec), chaos())
    return result


async def audited(workload: Workload, faults: Faults, result: Any, name: str) -> AuditReport:
    report = await audit(workload.log, workload.service.repository, service=workload.service,
                         faults=faults, queries=workload.queries())
    summary = faults.summary()
    tally("fault", name, ops=result.ops, ops_failed=result.errors, injected=summary["injected"],
          survived=summary["survived"], acknowledged=report.acknowledged, lost=report.lost,
          in_doubt=report.in_doubt, in_doubt_stored=report.in_doubt_stored or 0,
          queries=report.queries, stale=report.stale_reads + report.deleted_served + report.graph_wrong)
    print(f"{name}: {result.ops} ops, {result.errors} failed {dict(result.errors_by_type)}; audit: {report}")
    return report


# --------------------------------------------------------------------------- a stalled Redis


@pytest.mark.asyncio
async def test_a_paused_redis_times_out_instead_of_hanging(faults: Faults, redis_client: Any) -> None:
    import redis.exceptions

    await redis_client.set("k", b"v")
    async with faults.paused("redis"):
        with pytest.raises(redis.exceptions.TimeoutError):
            await asyncio.wait_for(redis_client.get("k"), 60)  # the guard only catches a hang
    assert await redis_client.get("k") == b"v"  # the client reconnects once the server runs


@pytest.mark.asyncio
async def test_caches_step_aside_on_a_client_without_timeouts(faults: Faults, agentmem_redis: Any) -> None:
    """A user's client made without socket timeouts: the caches' own deadline still holds."""
    import redis.asyncio as aioredis

    from pytest_agentmem.memory.cache import RedisVectorCache
    from pytest_agentmem.memory.model import Memory

    client = aioredis.Redis.from_url(agentmem_redis.url)
    try:
        cache = RedisResultCache(client, prefix="t:res", timeout=TIMEOUT_S)
        vectors = RedisVectorCache(client, prefix="t:emb", timeout=TIMEOUT_S)
        _, token = await cache.lookup("q", ("user:a",))
        await cache.store("q", ("user:a",), token, [Memory("old answer", user_id="a")])
        assert (await cache.lookup("q", ("user:a",)))[0] is not None
        async with faults.paused("redis"):
            assert await asyncio.wait_for(cache.lookup("q", ("user:a",)), 60) == (None, None)
            await asyncio.wait_for(cache.invalidate({"user:a"}), 60)  # a write while Redis stalls
            assert cache.pending_invalidations >= 1
            assert await asyncio.wait_for(vectors.get_many("m", ["d"], 4), 60) == {}
        assert cache.errors >= 2 and "Timeout" in cache.last_error and vectors.errors == 1
        # The write's invalidation is replayed before anything is served: no stale answer.
        assert (await cache.lookup("q", ("user:a",)))[0] is None
        assert cache.pending_invalidations == 0
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- scenarios


@pytest.mark.asyncio
async def test_redis_killed_and_restarted_mid_run(faults: Faults, cached_service: MemoryService) -> None:
    workload = Workload(cached_service)
    cache = cached_service.result_cache

    async def chaos() -> None:
        await asyncio.sleep(0.8)
        await faults.kill("redis")
        await asyncio.sleep(0.8)
        await faults.start("redis")

    result = await run_with(workload, chaos)
    report = await audited(workload, faults, result, "redis killed, restarted")
    assert result.errors == 0, result.errors_by_type  # answered from Postgres throughout
    assert cache.errors > 0  # ... while the cache's failures were counted
    assert faults.summary() == {"injected": 1, "survived": 1}
    hits = cache.hits
    for _ in range(2):
        await cached_service.search("garden plans", user_id="u0")
    assert cache.hits > hits  # the cache is back
    report.assert_clean()


@pytest.mark.asyncio
async def test_postgres_restarted_mid_run(faults: Faults, cached_service: MemoryService) -> None:
    workload = Workload(cached_service)

    async def chaos() -> None:
        await asyncio.sleep(0.8)
        await faults.restart("postgres")

    result = await run_with(workload, chaos, duration=4.0)
    report = await audited(workload, faults, result, "postgres restarted")
    assert faults.summary() == {"injected": 1, "survived": 1}
    assert sum(v["count"] for v in result.errors_by_type.values()) == result.errors
    assert report.acknowledged > 0 and report.lost == 0
    # The pool recovered: the service answers and writes again.
    memory = await cached_service.add("after the restart", user_id="u0")
    assert (await cached_service.get(memory.id)).content == "after the restart"
    report.assert_clean()


@pytest.mark.asyncio
async def test_redis_paused_longer_than_the_timeout(faults: Faults, cached_service: MemoryService) -> None:
    workload = Workload(cached_service)
    cache = cached_service.result_cache

    async def chaos() -> None:
        await asyncio.sleep(0.6)
        await faults.pause("redis", 3 * TIMEOUT_S)

    result = await run_with(workload, chaos)
    report = await audited(workload, faults, result, "redis paused")
    assert result.errors == 0, result.errors_by_type
    assert cache.errors > 0 and "Timeout" in cache.last_error
    assert faults.summary() == {"injected": 1, "survived": 1}
    report.assert_clean()


@pytest.mark.asyncio
async def test_pool_exhaustion(faults: Faults, memory_repo: Any, embedder: Any, redis_client: Any) -> None:
    memory_repo.acquire_timeout = TIMEOUT_S  # wait this long for a connection, then fail the operation
    service = MemoryService(memory_repo, embedder.per_test(),
                            result_cache=RedisResultCache(redis_client, timeout=TIMEOUT_S))
    workload = Workload(service)

    async def chaos() -> None:
        await asyncio.sleep(0.6)
        await faults.exhaust_pool(memory_repo.pool, 3 * TIMEOUT_S)

    result = await run_with(workload, chaos)
    report = await audited(workload, faults, result, "pool exhausted")
    assert result.errors > 0 and set(result.errors_by_type) <= {"TimeoutError", "asyncio.exceptions.TimeoutError"}
    assert faults.summary() == {"injected": 1, "survived": 1}
    memory = await service.add("after the exhaustion", user_id="u0")
    assert (await service.get(memory.id)).content == "after the exhaustion"
    report.assert_clean()


# --------------------------------------------------------------------------- the audit can fail


@pytest.mark.asyncio
async def test_the_audit_finds_a_lost_write_and_a_served_deleted_memory(memory_repo: Any, embedder: Any) -> None:
    from pytest_agentmem.memory.cache import ResultCache

    service = MemoryService(memory_repo, embedder.per_test(), result_cache=ResultCache())
    log = WriteLog()
    kept = await log.add(service, "a note about dogs", user_id="u")
    gone = await log.add(service, "a note about cats", user_id="u")
    await service.search("pets", user_id="u")  # cached with both
    await memory_repo.delete(kept.id)  # behind the service's back: "lost", and the cache is stale
    report = await audit(log, memory_repo, service=service, queries=[("pets", {"user_id": "u"})])
    assert (report.acknowledged, report.found, report.lost, report.stale_reads) == (2, 1, 1, 1)
    assert not report.ok and "lost" in str(report)
    with pytest.raises(AssertionError, match="acknowledged 2, found 1, wrong 2"):
        report.assert_clean()
    with pytest.raises(MemoryNotFoundError):
        await memory_repo.get(kept.id)
    assert (await memory_repo.get(gone.id)).content == "a note about cats"


@pytest.mark.asyncio
async def test_writes_acknowledged_before_a_fault_are_told_from_in_flight_ones(memory_repo: Any) -> None:
    from pytest_agentmem.services.faults import Fault

    log = WriteLog()
    before = log._begin("add")
    before.acked, before.memory_id, before.content = time.monotonic(), "m1", "x"
    fault = Fault("restart", "postgres", started=time.monotonic() + 1, ended=time.monotonic() + 2)
    in_flight = log._begin("add")
    in_flight.error = "ConnectionDoesNotExistError"
    report = await audit(log, memory_repo, faults=[fault])  # an empty store: m1 is lost
    assert (report.lost_before_fault, report.lost_after, report.in_doubt, report.in_doubt_stored) == (1, 0, 1, 0)


# --------------------------------------------------------------------------- refusals


def test_faults_refuse_servers_this_run_did_not_start(pytester: pytest.Pytester, service_urls: list[str]) -> None:
    pytester.makepyfile('''
        import pytest
        from pytest_agentmem.services.faults import FaultInjectionError

        @pytest.mark.asyncio
        async def test_pause(agentmem_faults, agentmem_redis):
            with pytest.raises(FaultInjectionError, match="external mode.*--agentmem-services=local"):
                await agentmem_faults.pause("redis", 0.1)
            with pytest.raises(FaultInjectionError, match="unknown service 'mysql'"):
                await agentmem_faults.restart("mysql")
    ''')
    pytester.runpytest("-p", "no:cacheprovider", *service_urls).assert_outcomes(passed=1)

