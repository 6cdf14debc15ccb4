"""Say what was measured: every load run records the system's cache hit rates beside its QPS.

- the figures: hit rates from counter deltas, summed over rounds, warm-up excluded;
- the ``perf`` fixture reads the counter sources a test's fixtures register, and the
  summary says when a run was mostly cache hits (and not otherwise);
- the shipped ``memory_service`` registers its result- and embedding-cache counters:
  the same search asked again and again is called a cache measurement, new wording is not.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytest_agentmem.counters import counter_delta, read_counters
from pytest_agentmem.load import merge_results, run_load, validate
from pytest_agentmem.load.result import cache_note, cache_rates
from pytest_agentmem.memory.cache import ResultCache
from pytest_agentmem.memory.service import MemoryService

# --------------------------------------------------------------------------- the figures


def test_hit_rates_come_from_the_counters_that_moved() -> None:
    before = {"result_cache_hits": 10, "result_cache_lookups": 20, "embedding_cache_hits": 0,
              "embedding_lookups": 5}
    after = {"result_cache_hits": 108, "result_cache_lookups": 120, "embedding_cache_hits": 0,
             "embedding_lookups": 25}
    delta = counter_delta(before, after)
    assert delta == {"result_cache_hits": 98, "result_cache_lookups": 100, "embedding_cache_hits": 0,
                     "embedding_lookups": 20}
    assert cache_rates(delta) == {"result_cache_hit_rate": 0.98, "embedding_cache_hit_rate": 0.0}
    assert cache_rates({"result_cache_hits": 0, "result_cache_lookups": 0}) == {}  # not asked: no figure


def test_the_note_names_the_cache_that_answered() -> None:
    assert cache_note("search_repeated", {"qps": 7000, "result_cache_hit_rate": 0.98}) == (
        "search_repeated: 98% result-cache hits: this measured the cache, not the store")
    assert "embedding-cache hits" in cache_note("s", {"result_cache_hit_rate": 0.1,
                                                      "embedding_cache_hit_rate": 0.9})
    assert cache_note("search", {"result_cache_hit_rate": 0.02, "embedding_cache_hit_rate": 0.3}) is None
    assert cache_note("noop", {"qps": 1.0}) is None
    # half the texts from the cache (an update, then a search of the same text) is not "most"
    assert cache_note("update_then_search", {"result_cache_hit_rate": 0.0, "embedding_cache_hit_rate": 0.5}) is None


def test_sources_are_summed_and_a_broken_one_is_skipped() -> None:
    def broken() -> dict[str, float]:
        raise RuntimeError("gone")

    sources = {"a": lambda: {"result_cache_hits": 1, "other": 5, "embedding_lookups": True},
               "b": lambda: {"result_cache_hits": 2, "result_cache_lookups": 4}, "c": broken}
    assert read_counters(sources) == {"result_cache_hits": 3.0, "result_cache_lookups": 4.0}


@pytest.mark.asyncio
async def test_merged_rounds_sum_their_counters() -> None:
    async def noop(index: int) -> None:
        return None

    rounds = []
    for hits in (90, 10):
        result = await run_load(noop, validate(noop, total=10, timeout=1.0, name="r"))
        result.caches = {"result_cache_hits": hits, "result_cache_lookups": 100}
        rounds.append(result)
    merged = merge_results(rounds)
    assert merged.caches == {"result_cache_hits": 100, "result_cache_lookups": 200}
    assert merged.metrics()["result_cache_hit_rate"] == 0.5
    assert [r["result_cache_hit_rate"] for r in merged.rounds] == [0.9, 0.1]
    assert merged.to_dict()["caches"]["result_cache_lookups"] == 200


# --------------------------------------------------------------------------- the perf fixture

COUNTED = """
import pytest
from pytest_agentmem.counters import watch_counters


class Cache:
    def __init__(self):
        self.hits = self.lookups = 0

    def stats(self):
        return {"result_cache_hits": self.hits, "result_cache_lookups": self.lookups}


@pytest.fixture
def cache(request):
    made = Cache()
    watch_counters(request.node, "cache", made.stats)
    return made


@pytest.mark.agentmem_perf(reference=False)
async def test_repeated(cache, perf):
    async def search(i):
        cache.lookups += 1
        cache.hits += i % 50 != 0  # one miss in 50
    result = await perf.run(search, concurrency=2, total=500, warmup=100, timeout=5,
                            name="search_repeated", rounds=2)
    assert result.caches == {"result_cache_hits": 980, "result_cache_lookups": 1000}  # no warm-up
    assert result.metrics()["result_cache_hit_rate"] == 0.98
    assert result.warmup_ops == 100


@pytest.mark.agentmem_perf(reference=False)
async def test_new_questions(cache, perf):
    async def search(i):
        cache.lookups += 1
    result = await perf.run(search, concurrency=2, total=200, timeout=5, name="search_new")
    assert result.metrics()["result_cache_hit_rate"] == 0.0


@pytest.mark.agentmem_perf(reference=False)
async def test_no_cache(perf):
    async def op(i):
        pass
    result = await perf.run(op, concurrency=2, total=50, timeout=5, name="plain")
    assert result.caches == {} and "result_cache_hit_rate" not in result.metrics()
"""


def test_perf_records_the_registered_counters_and_the_summary_says_cache(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(COUNTED)
    result = pytester.runpytest("--agentmem-perf", "-p", "no:cacheprovider", "--agentmem-report=r.json")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_repeated: search_repeated: 98% result-cache hits: "
                                 "this measured the cache, not the store"])
    assert "search_new:" not in result.stdout.str() and "plain:" not in result.stdout.str()
    report = json.loads((pytester.path / "r.json").read_text())
    loads = {m["name"]: m for t in report["tests"] for m in t["measurements"]}
    assert loads["search_repeated"]["metrics"]["result_cache_hit_rate"] == 0.98
    assert loads["search_repeated"]["load"]["caches"]["result_cache_lookups"] == 1000
    assert [t["notes"] for t in report["tests"] if t["nodeid"].endswith("test_new_questions")] == [[]]


# --------------------------------------------------------------------------- the memory service


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_service_counts_its_cache_hits(memory_repo: Any, embedder: Any) -> None:
    service = MemoryService(memory_repo, embedder.per_test(), result_cache=ResultCache())
    await service.add("Alice has a grey cat called Pixel", user_id="u")
    first = service.cache_stats()
    await service.search("which pet does Alice have?", user_id="u")
    await service.search("which pet does Alice have?", user_id="u")  # a hit: answered before embedding
    await service.search_uncached("which pet does Alice have?", user_id="u")  # embeds: from the cache
    moved = counter_delta(first, service.cache_stats())
    assert moved == {"result_cache_hits": 1, "result_cache_lookups": 2,
                     "embedding_cache_hits": 1, "embedding_lookups": 2}
    assert MemoryService(memory_repo, embedder.uncached()).cache_stats() == {
        "embedding_cache_hits": 0, "embedding_lookups": 0}  # no result cache: no result figures


SERVICE_RUNS = """
import itertools
import pytest

QUESTIONS = ["what pet does Alice have?", "where is Bob travelling?", "what is Carmen's job?"]


@pytest.mark.agentmem_perf(reference=False)
async def test_search(memory_service, perf):
    await memory_service.add_batch(["Alice has a grey cat called Pixel", "Bob is going to Japan",
                                    "Carmen works as a nurse"], user_id="u1")
    asked = itertools.count()

    async def search_repeated(i):
        await memory_service.search(QUESTIONS[i % 3], user_id="u1")

    async def search_new(i):
        await memory_service.search(f"{QUESTIONS[i % 3]} (asked {next(asked)})", user_id="u1")

    cached = await perf.run(search_repeated, concurrency=4, total=200, warmup=3, timeout=30,
                            name="search_repeated")
    fresh = await perf.run(search_new, concurrency=4, total=40, timeout=30, name="search_new")
    assert cached.metrics()["result_cache_hit_rate"] == 1.0
    assert "embedding_cache_hit_rate" not in cached.metrics()  # a result-cache hit never asks the embedder
    assert fresh.metrics()["result_cache_hit_rate"] == 0.0
    assert fresh.metrics()["embedding_cache_hit_rate"] == 0.0
"""


@pytest.mark.slow
def test_memory_service_runs_say_when_the_cache_was_measured(pytester: pytest.Pytester,
                                                              service_urls: list[str]) -> None:
    pytester.makepyfile(SERVICE_RUNS)
    result = pytester.runpytest("--agentmem-perf", "-p", "no:cacheprovider", *service_urls)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*search_repeated: 100% result-cache hits: this measured the cache, "
                                 "not the store"])
    assert "search_new:" not in result.stdout.str()
