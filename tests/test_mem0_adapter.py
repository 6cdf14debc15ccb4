"""The Mem0 adapter on the real services: Mem0 OSS on the run's pgvector and model, no LLM.

Skipped with the install command when ``mem0ai`` is not installed.
"""

from __future__ import annotations

import pytest

pytest.importorskip("mem0", reason="mem0ai is not installed: pip install 'pytest-agentmem[mem0]'")

from pytest_agentmem.adapters.mem0 import (  # noqa: E402
    Mem0MemoryService,
    Mem0UnsupportedError,
    mem0_memory_service,
)
from pytest_agentmem.adapters.mem0_backend import ForbiddenLLM, Mem0LLMCalled  # noqa: E402
from pytest_agentmem.memory.model import InvalidMemoryError, MemoryNotFoundError  # noqa: E402

memory_service = mem0_memory_service

ALICE = ["I love dogs and take my puppy to the park", "I work as an accountant in Berlin",
         "My favourite food is sushi", "I am learning to play the piano", "The meeting moved to Thursday"]
BOB = ["I have three cats and a parrot", "My dog is called Rex and he loves walks"]


@pytest.mark.asyncio
async def test_add_then_search_finds_it_for_the_right_user_only(memory_service: Mem0MemoryService) -> None:
    stored = await memory_service.add_batch(ALICE, user_id="alice",
                                            metadata=[{"dia_id": f"D1:{i}"} for i in range(len(ALICE))])
    assert [m.content for m in stored] == ALICE and len({m.id for m in stored}) == len(ALICE)
    await memory_service.add_batch(BOB, user_id="bob")
    found = await memory_service.search("What pets does she like?", user_id="alice", limit=5)
    assert found[0].content == ALICE[0]
    assert found[0].metadata == {"dia_id": "D1:0"}
    assert all(m.user_id == "alice" for m in found)
    assert [m.score for m in found] == sorted((m.score for m in found), reverse=True)
    bob = await memory_service.search("What pets does he have?", user_id="bob", limit=5)
    assert {m.content for m in bob} <= set(BOB) and bob, "a search returned another user's memory"
    assert memory_service.llm_calls == 0


@pytest.mark.asyncio
async def test_update_delete_history_and_no_stale_answer(memory_service: Mem0MemoryService) -> None:
    memory = await memory_service.add("I drink coffee every morning", user_id="u", metadata={"topic": "drinks"})
    got = await memory_service.get(memory.id)
    assert (got.content, got.user_id, got.metadata) == ("I drink coffee every morning", "u", {"topic": "drinks"})
    updated = await memory_service.update(memory.id, "I switched to green tea")
    assert updated.content == "I switched to green tea" and updated.updated_at is not None
    found = await memory_service.search("What does the user drink?", user_id="u", limit=3)
    assert [m.content for m in found if m.id == memory.id] == ["I switched to green tea"]
    await memory_service.delete(memory.id)
    with pytest.raises(MemoryNotFoundError):
        await memory_service.get(memory.id)
    with pytest.raises(MemoryNotFoundError):
        await memory_service.delete(memory.id)
    assert not [m for m in await memory_service.search("green tea", user_id="u", limit=10) if m.id == memory.id]
    events = await memory_service.history(memory.id)
    assert [(e.event, e.old_content, e.new_content) for e in events] == [
        ("ADD", None, "I drink coffee every morning"),
        ("UPDATE", "I drink coffee every morning", "I switched to green tea"),
        ("DELETE", "I switched to green tea", None)]


@pytest.mark.asyncio
async def test_delete_all_of_one_user_keeps_the_others(memory_service: Mem0MemoryService) -> None:
    await memory_service.add_batch(ALICE, user_id="alice")
    await memory_service.add_batch(BOB, user_id="bob")
    assert await memory_service.delete_all(user_id="alice") == len(ALICE)
    assert await memory_service.search("dogs", user_id="alice", limit=5) == []
    assert len(await memory_service.search("pets", user_id="bob", limit=5)) == len(BOB)


@pytest.mark.asyncio
async def test_filters_mem0_can_do_and_a_clear_error_for_those_it_cannot(
        memory_service: Mem0MemoryService) -> None:
    await memory_service.add("I like tea", user_id="u", metadata={"topic": "drinks", "n": 3})
    await memory_service.add("I like jazz", user_id="u", metadata={"topic": "music", "n": 7})
    found = await memory_service.search("What do I like?", user_id="u", filters={"topic": "music"})
    assert [m.content for m in found] == ["I like jazz"]
    found = await memory_service.search("What do I like?", user_id="u", filters={"n": {"lt": 5}})
    assert [m.content for m in found] == ["I like tea"]
    with pytest.raises(Mem0UnsupportedError, match="ne"):
        await memory_service.search("What do I like?", user_id="u", filters={"topic": {"ne": "music"}})
    with pytest.raises(Mem0UnsupportedError, match="user_id, agent_id or run_id"):
        await memory_service.search("What do I like?")
    with pytest.raises(InvalidMemoryError):
        await memory_service.search("", user_id="u")


@pytest.mark.asyncio
async def test_no_llm_is_called_and_one_that_was_would_fail(memory_service: Mem0MemoryService) -> None:
    await memory_service.add("I moved to Lisbon last spring", user_id="u")
    await memory_service.search("Where does the user live?", user_id="u")
    llm = memory_service.memory.llm
    assert isinstance(llm, ForbiddenLLM) and memory_service.llm_calls == 0
    # The guard is live: Mem0's inference path (infer=True) reaches it and fails.
    with pytest.raises(Exception) as caught:
        await memory_service.memory.add("I have a sister in Porto", user_id="u", infer=True)
    assert isinstance(caught.value, Mem0LLMCalled) or isinstance(caught.value.__cause__, Mem0LLMCalled)
    assert memory_service.llm_calls == 1
    llm.calls = 0  # the fixture fails a test whose Mem0 called an LLM


@pytest.mark.asyncio
async def test_telemetry_is_off_although_mem0_was_imported_first(memory_service: Mem0MemoryService) -> None:
    # This module imported mem0 (importorskip) before the adapter set MEM0_TELEMETRY.
    from mem0.memory import main, telemetry

    await memory_service.add("I like tea", user_id="u")
    assert telemetry.MEM0_TELEMETRY is False and main.MEM0_TELEMETRY is False
    assert telemetry._oss_telemetry_instance is None  # no PostHog client was made for events


def test_the_shipped_scenarios_run_against_mem0_with_one_override(
        pytester: pytest.Pytester, service_urls: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """What the README tells users to do: one line in a conftest, the scenarios unchanged."""
    monkeypatch.setenv("AGENTMEM_SCENARIO_SCALE", "0.05")
    pytester.makeconftest("from pytest_agentmem.adapters.mem0 import mem0_memory_service as memory_service\n")
    pytester.makepyfile(test_scenarios="from pytest_agentmem.scenarios.standard import (  # noqa: F401\n"
                                       "    test_agentmem_scenario_add, test_agentmem_scenario_add_batch,\n"
                                       "    test_agentmem_scenario_search, test_agentmem_scenario_update_delete)\n")
    result = pytester.runpytest("--agentmem-perf", *service_urls, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
