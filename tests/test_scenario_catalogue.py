"""The scenario catalogue in a user's project: it imports, collects, runs on the user's
own components (conftest overrides), checks correctness and follows the scale."""

from __future__ import annotations

import pytest

from pytest_agentmem.scenarios import catalogue
from pytest_agentmem.scenarios.sizing import scaled, scaled_seconds

pytest_plugins = "pytester"

SCENARIOS = [
    "test_agentmem_scenario_add", "test_agentmem_scenario_add_batch", "test_agentmem_scenario_search",
    "test_agentmem_scenario_update_delete", "test_agentmem_scenario_vector_search_pgvector",
    "test_agentmem_scenario_vector_search_lancedb", "test_agentmem_scenario_graph_hops",
    "test_agentmem_scenario_batch_operations", "test_agentmem_scenario_result_cache",
    "test_agentmem_scenario_embedding", "test_agentmem_scenario_locomo_recall",
    "test_agentmem_scenario_concurrent_users",
]

# A graph store of the user's own (pure Python, no services): the catalogue's graph
# scenario must run on it. BROKEN=1 makes it answer every query with the 1-hop set.
GRAPH_CONFTEST = """
import os
from collections import defaultdict

import pytest


class DictGraph:
    def __init__(self):
        self.adjacent = defaultdict(set)
        self.by_predicate = defaultdict(lambda: defaultdict(set))

    async def add_relations(self, relations, *, user_id):
        relations = list(relations)
        for s, p, o in relations:
            for a, b in ((s, o), (o, s)):
                self.adjacent[a].add(b)
                self.by_predicate[p][a].add(b)
        print(f"DictGraph stored {len(relations)} relations")
        return len(relations)

    async def neighbors(self, entity, *, user_id, hops=1, predicate=None):
        adjacent = self.adjacent if predicate is None else self.by_predicate[predicate]
        if os.environ.get("BROKEN"):
            hops = 1
        seen, frontier = {entity}, {entity}
        for _ in range(hops):
            frontier = {b for a in frontier for b in adjacent[a]} - seen
            seen |= frontier
        return seen - {entity}


@pytest.fixture
def graph_store():
    return DictGraph()
"""


def test_the_catalogue_exports_every_scenario() -> None:
    assert sorted(catalogue.__all__) == sorted(SCENARIOS)
    assert all(callable(getattr(catalogue, name)) for name in SCENARIOS)


def test_every_compared_scenario_takes_at_most_5_percent_in_a_b() -> None:
    from pytest_agentmem.marker import parse_marker

    for name in SCENARIOS:
        mark = next(m for m in getattr(getattr(catalogue, name), "pytestmark", []) if m.name == "agentmem_perf")
        marker = parse_marker(mark, name)
        if marker.reference:  # reference=False: compared with nothing
            assert marker.tolerance_for(compare=True) is not None, name
            assert marker.tolerance_for(compare=True) <= 0.05, name


def test_a_user_project_collects_the_whole_catalogue(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mine="from pytest_agentmem.scenarios.catalogue import *  # noqa\n")
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider")
    assert {line for line in result.outlines if "::" in line} == {f"test_mine.py::{n}" for n in SCENARIOS}
    # Without --agentmem-perf the scenarios are skipped, and need no services.
    result = pytester.runpytest("-p", "no:cacheprovider", "-q", "-rs")
    result.assert_outcomes(skipped=len(SCENARIOS))


def test_the_graph_scenario_runs_on_the_users_own_graph_store(pytester: pytest.Pytester,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest(GRAPH_CONFTEST)
    pytester.makepyfile(test_mine="from pytest_agentmem.scenarios.graph import *  # noqa\n")
    monkeypatch.setenv("AGENTMEM_SCENARIO_SCALE", "0.05")
    result = pytester.runpytest("--agentmem-perf", "-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*DictGraph stored 300 relations*"])  # 0.05 x 3,000 entities x 2

    monkeypatch.setenv("AGENTMEM_SCENARIO_SCALE", "0.1")
    result = pytester.runpytest("--agentmem-perf", "-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*DictGraph stored 600 relations*"])


def test_a_wrong_graph_store_fails_the_graph_scenario(pytester: pytest.Pytester,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest(GRAPH_CONFTEST)
    pytester.makepyfile(test_mine="from pytest_agentmem.scenarios.graph import *  # noqa\n")
    monkeypatch.setenv("AGENTMEM_SCENARIO_SCALE", "0.05")
    monkeypatch.setenv("BROKEN", "1")
    result = pytester.runpytest("--agentmem-perf", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*neighbourhoods differ from a breadth-first search*"])


def test_a_service_without_a_result_cache_skips_the_cache_scenario(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
import pytest

@pytest.fixture
def memory_service():
    return object()
""")
    pytester.makepyfile(test_mine="from pytest_agentmem.scenarios.caches import *  # noqa\n")
    result = pytester.runpytest("--agentmem-perf", "-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*memory_service has no result cache*"])


def test_scale_multiplies_sizes_and_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTMEM_SCENARIO_SCALE", "4")
    assert scaled(1_000) == 4_000 and scaled_seconds(1.5) == 6.0
    monkeypatch.setenv("AGENTMEM_SCENARIO_SCALE", "0.01")
    assert scaled(1_000, minimum=50) == 50 and scaled_seconds(1.5) == 0.5
    monkeypatch.delenv("AGENTMEM_SCENARIO_SCALE")
    assert scaled(1_000) == 1_000
