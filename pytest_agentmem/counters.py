"""Counters of the system under test (cache hits) that every load run records beside its QPS.

A fixture that builds a system with caches registers a *counter source* on the
test item: a callable returning cumulative counts (never reset). The ``perf``
fixture reads every source before and after each measured round and files the
difference with the run (``LoadResult.caches``), so a figure such as "2,400
QPS" always comes with how many of those operations a cache answered::

    from pytest_agentmem.counters import watch_counters

    @pytest_asyncio.fixture
    async def memory_service(request, memory_repo, embedder):
        service = MySystem(memory_repo, embedder)
        watch_counters(request.node, "memory_service", service.cache_stats)
        yield service

The shipped ``memory_service`` fixture registers its service's
:meth:`~pytest_agentmem.memory.service.MemoryService.cache_stats`. A source
returns any of the :data:`COUNTERS` (others are ignored); several sources are
summed. This module sits below both the memory components and the load
engine, so neither imports the other.

It also keeps one process-wide count that needs no source: the CPU time the
embedding model's runs took in this process (:func:`add_model_cpu`, called by the
model's threads; :func:`model_cpu_s`, read by the load engine at the start and
end of each round). How much of an operation's CPU goes to the model tells the
gate which other tests move with it from one machine to another (a model's
vector kernels and Python do not speed up alike).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

import pytest

#: The counts a source may return: cumulative, per operation of the system.
#: ``result_cache_lookups`` searches that asked the result cache, ``result_cache_hits``
#: those it answered; ``embedding_lookups`` texts the embedder was asked for,
#: ``embedding_cache_hits`` those its caches answered (the model did not run).
COUNTERS = ("result_cache_hits", "result_cache_lookups", "embedding_cache_hits", "embedding_lookups")

#: A counter source: returns the cumulative counts of :data:`COUNTERS` it knows.
CounterSource = Callable[[], Mapping[str, float]]

COUNTER_SOURCES_KEY = pytest.StashKey[dict[str, CounterSource]]()


def watch_counters(item: pytest.Item, name: str, source: CounterSource) -> None:
    """Register ``source`` under ``name`` for ``item``'s load runs (a later one replaces it)."""
    if not callable(source):
        raise TypeError(f"watch_counters: source must be a callable returning counts, got {source!r}")
    sources = item.stash.get(COUNTER_SOURCES_KEY, None)
    if sources is None:
        sources = item.stash[COUNTER_SOURCES_KEY] = {}
    sources[name] = source


def counter_sources(item: pytest.Item) -> dict[str, CounterSource]:
    """The sources registered for ``item`` (empty if none)."""
    return dict(item.stash.get(COUNTER_SOURCES_KEY, {}))


def read_counters(sources: Mapping[str, CounterSource]) -> dict[str, float]:
    """The sum of every source's :data:`COUNTERS` now (a failing source is skipped)."""
    total: dict[str, float] = {}
    for source in sources.values():
        try:
            counts = source()
        except Exception:  # noqa: BLE001 - a broken counter must not fail a measurement
            continue
        for key in COUNTERS:
            value = counts.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                total[key] = total.get(key, 0.0) + float(value)
    return total


def counter_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """``after - before`` of the counters both readings hold (only those that moved or exist)."""
    return {key: after[key] - before.get(key, 0.0) for key in COUNTERS if key in after}


_model_cpu_lock = threading.Lock()
_model_cpu_s = 0.0


def add_model_cpu(seconds: float) -> None:
    """Count ``seconds`` of CPU an embedding model's run took (thread CPU time, this process)."""
    global _model_cpu_s
    if seconds > 0:
        with _model_cpu_lock:
            _model_cpu_s += seconds


def model_cpu_s() -> float:
    """The CPU seconds the embedding model's runs took in this process so far (cumulative)."""
    with _model_cpu_lock:
        return _model_cpu_s


__all__ = ["COUNTERS", "COUNTER_SOURCES_KEY", "CounterSource", "add_model_cpu", "counter_delta", "counter_sources",
           "model_cpu_s", "read_counters", "watch_counters"]
