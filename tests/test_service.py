"""MemoryService: the Mem0-style add/search path on the real model, LanceDB and Postgres."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

import pytest

from pytest_agentmem.memory.cache import ResultCache
from pytest_agentmem.memory.fixtures import memory_service_fixture
from pytest_agentmem.memory.model import InvalidMemoryError, Memory, MemoryNotFoundError
from pytest_agentmem.memory.service import MemoryService

lance_service = memory_service_fixture(repository="lancedb_store")
lance_redis_service = memory_service_fixture(repository="lancedb_store", result_cache="redis")
pytestmark = pytest.mark.asyncio

ALICE = ["I love dogs and take my puppy to the park", "I work as an accountant in Berlin",
         "My favourite food is sushi", "I am learning to play the piano", "The meeting moved to Thursday"]
BOB = ["I have three cats and a parrot", "My dog is called Rex and he loves walks"]


@pytest.fixture(params=["lance_service", "memory_service", "lance_redis_service"])
def service(request: pytest.FixtureRequest) -> MemoryService:
    """The service on LanceDB, on Postgres (the default fixture), and with the Redis result cache."""
    return request.getfixturevalue(request.param)


async def test_pets_question_finds_the_dog_memory_of_the_right_user(service: MemoryService) -> None:
    await service.add_batch(ALICE, user_id="alice")
    await service.add_batch(BOB, user_id="bob")
    results = await service.search("What pets does she like?", user_id="alice", limit=5)
    assert results[0].content == ALICE[0]
    assert all(r.user_id == "alice" for r in results)
    assert results[0].score > results[1].score
    bob = await service.search("What pets does he have?", user_id="bob", limit=5)
    assert {r.content for r in bob} == set(BOB)


async def test_crud_and_history_through_the_service(service: MemoryService) -> None:
    memory = await service.add("I drink coffee every morning", user_id="u", metadata={"topic": "drinks"})
    assert memory.embedding is not None and memory.embedding.shape == (service.embedder.dim,)
    assert (await service.get(memory.id)).content == "I drink coffee every morning"
    updated = await service.update(memory.id, "I switched to green tea")
    assert updated.content == "I switched to green tea"
    await service.delete(memory.id)
    with pytest.raises(MemoryNotFoundError):
        await service.get(memory.id)
    events = await service.history(memory.id)
    assert [(e.event, e.old_content, e.new_content) for e in events] == [
        ("ADD", None, "I drink coffee every morning"),
        ("UPDATE", "I drink coffee every morning", "I switched to green tea"),
        ("DELETE", "I switched to green tea", None)]


async def test_no_search_returns_old_content_after_update_or_delete(service: MemoryService) -> None:
    memory = await service.add("My cat is called Whiskers", user_id="u")
    await service.add("I enjoy hiking in the Alps", user_id="u")
    question = "What is the name of my cat?"
    assert (await service.search(question, user_id="u"))[0].content == "My cat is called Whiskers"
    assert (await service.search(question, user_id="u"))[0].content == "My cat is called Whiskers"
    assert service.result_cache is not None and service.result_cache.hits >= 1  # type: ignore[attr-defined]

    await service.update(memory.id, "My cat is called Tiger")
    for query in (question, "What is the name of my cat?"):
        contents = [m.content for m in await service.search(query, user_id="u")]
        assert "My cat is called Whiskers" not in contents and "My cat is called Tiger" in contents
    unscoped = [m.content for m in await service.search(question)]
    assert "My cat is called Whiskers" not in unscoped

    await service.delete(memory.id)
    assert all(m.id != memory.id for m in await service.search(question, user_id="u"))
    assert all(m.id != memory.id for m in await service.search(question))


async def test_searches_racing_with_updates_never_see_content_older_than_the_last_update(
        lance_service: MemoryService) -> None:
    memory = await lance_service.add("version 0 of the note", user_id="u")
    question = "which version is the note?"
    stop = asyncio.Event()

    async def searcher() -> None:
        while not stop.is_set():
            await lance_service.search(question, user_id="u", limit=3)
            await asyncio.sleep(0)  # a fully cached search never suspends

    readers = [asyncio.create_task(searcher()) for _ in range(4)]
    try:
        for version in range(1, 6):
            await lance_service.update(memory.id, f"version {version} of the note")
            contents = [m.content for m in await lance_service.search(question, user_id="u", limit=3)]
            assert contents == [f"version {version} of the note"], contents
    finally:
        stop.set()
        await asyncio.gather(*readers)


async def test_bad_input_stores_nothing(lance_service: MemoryService) -> None:
    repo = lance_service.repository
    for texts, match in ((["fine", ""], "empty"), (["fine", "x" * 256_001], "limit"),
                         (["fine", None], "must be a str"), ("just a string", "list of str")):
        with pytest.raises(InvalidMemoryError, match=match):
            await lance_service.add_batch(texts, user_id="u")  # type: ignore[arg-type]
    with pytest.raises(InvalidMemoryError, match="JSON cannot hold"):
        await lance_service.add_batch(["a", "b"], metadata=[{"x": 1}, {"x": float("nan")}])
    with pytest.raises(InvalidMemoryError, match="one dict"):
        await lance_service.add_batch(["a", "b"], metadata=[{"x": 1}])
    assert await repo.count() == 0  # type: ignore[attr-defined]
    with pytest.raises(InvalidMemoryError, match="empty"):
        await lance_service.search("   ")
    with pytest.raises(InvalidMemoryError, match="filter key"):
        await lance_service.search("anything", filters={"x'; DROP TABLE memories; --": 1})
    with pytest.raises(InvalidMemoryError, match="limit"):
        await lance_service.search("anything", limit=0)
    with pytest.raises(KeyError, match="no memory with id"):
        await lance_service.update("missing-id", "new text")
    with pytest.raises(KeyError, match="no memory with id"):
        await lance_service.delete("missing-id")


async def test_add_batch_with_metadata_and_filters(lance_service: MemoryService) -> None:
    memories = await lance_service.add_batch(
        ["I love dogs", "Dogs are loyal animals", "Stocks went up today"], user_id="u",
        metadata=[{"topic": "pets"}, {"topic": "facts"}, None])
    assert [m.metadata for m in memories] == [{"topic": "pets"}, {"topic": "facts"}, {}]
    results = await lance_service.search("dogs", user_id="u", filters={"topic": "facts"})
    assert [r.content for r in results] == ["Dogs are loyal animals"]


async def test_embeddings_of_repeated_questions_come_from_the_cache(lance_service: MemoryService) -> None:
    await lance_service.add("I love dogs", user_id="u")
    model = lance_service.embedder
    before = model.stats.computed
    for _ in range(3):
        await lance_service.search("a question asked three times?", user_id="u")
    assert model.stats.computed - before <= 1


async def test_a_result_cache_hit_answers_before_the_query_is_embedded(service: MemoryService) -> None:
    """Only a miss pays the embedder (model or embedding cache): a hit is the result cache's alone."""
    await service.add("I love dogs", user_id="u")
    first = await service.search("which pets?", user_id="u")
    asked = service.embedder.stats.texts
    assert await service.search("which pets?", user_id="u") == first
    assert service.result_cache is not None and service.result_cache.hits == 1  # type: ignore[attr-defined]
    assert service.embedder.stats.texts == asked
    await service.search("which pets now?", user_id="u")  # a miss embeds
    assert service.embedder.stats.texts == asked + 1


async def test_dimension_mismatch_is_refused(lancedb_store, embedder) -> None:
    from pytest_agentmem.errors import ConfigurationError
    from pytest_agentmem.memory.lance import LanceDBMemoryStore

    other = await LanceDBMemoryStore.open(lancedb_store.uri + "-other", dim=16)
    with pytest.raises(ConfigurationError, match="16-dim"):
        MemoryService(other, embedder, result_cache=ResultCache())


def ids(memories: list[Memory]) -> set[str]:
    return {m.id for m in memories}


async def test_delete_all_invalidates_every_search_it_affects(service: MemoryService) -> None:
    """A cached search scoped by agent or run (or by nothing) is not served after
    delete_all(user_id=...) removed memories it returned; another user's stays cached."""
    cat = await service.add("My cat is called Whiskers", user_id="u", agent_id="a", run_id="r")
    dog = await service.add("My dog is called Rex", user_id="v", agent_id="a")
    question = "What are my pets called?"
    scoped: list[dict[str, str]] = [{"agent_id": "a"}, {"run_id": "r"}, {}, {"user_id": "u", "agent_id": "a"}]
    for scopes in scoped:
        for _ in range(2):  # the second is served from the cache
            assert cat.id in ids(await service.search(question, **scopes)), scopes
    assert dog.id in ids(await service.search(question, user_id="v"))
    cache = service.result_cache
    assert cache is not None
    await service.delete_all(user_id="u")
    for scopes in scoped:
        assert cat.id not in ids(await service.search(question, **scopes)), scopes
    assert dog.id in ids(await service.search(question, agent_id="a"))
    hits = cache.hits  # type: ignore[attr-defined]
    assert dog.id in ids(await service.search(question, user_id="v"))  # not touched by the delete
    assert cache.hits == hits + 1  # type: ignore[attr-defined]


async def test_a_shared_redis_result_cache_never_mixes_stores(memory_repo, lancedb_store, embedder,  # type: ignore[no-untyped-def]
                                                              redis_client, tmp_path) -> None:
    """Services on different stores (or on a store made anew, as in another run)
    sharing one Redis never read each other's results; two handles on the same
    store share them."""
    from pytest_agentmem.memory.lance import LanceDBMemoryStore
    from pytest_agentmem.memory.postgres import PostgresMemoryRepository
    from pytest_agentmem.memory.result_cache import RedisResultCache

    def service_on(repository: Any) -> MemoryService:
        return MemoryService(repository, embedder.per_test(), result_cache=RedisResultCache(redis_client))

    question = "What is my cat called?"
    cat = "My cat is called Whiskers"
    other_lance = await LanceDBMemoryStore.open(tmp_path / "other", dim=embedder.dim)
    other_pg = PostgresMemoryRepository(memory_repo.pool, dim=embedder.dim, table="other_memories")
    await other_pg.setup()
    for first, second in ((lancedb_store, other_lance), (memory_repo, other_pg)):
        one = service_on(first)
        await one.add(cat, user_id="u")
        assert [m.content for m in await one.search(question, user_id="u")] == [cat]
        assert await service_on(second).search(question, user_id="u") == []
        same = service_on(first)  # another handle (say, another process) on the same data
        assert [m.content for m in await same.search(question, user_id="u")] == [cat]
        assert same.result_cache.hits == 1  # type: ignore[union-attr]

    # Another run: the same table made anew on the same server and database.
    async with memory_repo.pool.acquire() as conn:
        await conn.execute("DROP TABLE memories, memories_history")
    await memory_repo.setup()
    assert await service_on(memory_repo).search(question, user_id="u") == []
    # ... and the same LanceDB directory made anew.
    other_lance.close()
    shutil.rmtree(tmp_path / "other")
    remade = await LanceDBMemoryStore.open(tmp_path / "other", dim=embedder.dim)
    first = service_on(remade)
    await first.add("My dog is called Rex", user_id="u")
    assert [m.content for m in await first.search(question, user_id="u")] == ["My dog is called Rex"]
    remade.close()
    shutil.rmtree(tmp_path / "other")
    again = await LanceDBMemoryStore.open(tmp_path / "other", dim=embedder.dim)
    assert await service_on(again).search(question, user_id="u") == []
