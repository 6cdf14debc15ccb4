"""Graph reasoning: 1-, 2- and 3-hop neighbourhoods on ``graph_store``.

::

    from pytest_agentmem.scenarios.graph import *  # noqa: F401,F403

One user's knowledge graph: ``3,000 x scale`` entities and ``6,000 x scale``
relations (8 predicates; mean degree 4 counting both directions, so a 3-hop
neighbourhood holds about a hundred entities), stored with ``add_relations``.
The answers are checked first against a breadth-first search the scenario does
itself on the relations it stored (so any graph store can be checked, not only
the shipped one): every 1-, 2- and 3-hop neighbourhood of 50 entities must be
exactly right, and so must a 2-hop query restricted to one predicate. Then each
hop count is measured under load at concurrency 8.

Runs on whatever ``graph_store`` gives: an object with ``add_relations(triples,
*, user_id)`` and ``neighbors(entity, *, user_id, hops, predicate=None)``.
"""

from __future__ import annotations

import random
from collections import defaultdict, deque
from typing import Any

import pytest

from .sizing import AB_TOLERANCE, scaled, scaled_seconds

__all__ = ["test_agentmem_scenario_graph_hops"]

PREDICATES = 8
USER = "graph-user"
CHECKED = 50


def _graph(entities: int, relations: int, seed: int = 5) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    names = [f"entity-{i}" for i in range(entities)]
    edges: set[tuple[str, str, str]] = set()
    while len(edges) < relations:
        subject, obj = rng.choice(names), rng.choice(names)
        if subject != obj:
            edges.add((subject, f"rel-{rng.randrange(PREDICATES)}", obj))
    return sorted(edges)


def _expected(edges: list[tuple[str, str, str]], start: str, hops: int,
              predicate: str | None = None) -> set[str]:
    """Entities within ``hops`` steps of ``start``, edges followed both ways (ground truth)."""
    adjacent: dict[str, set[str]] = defaultdict(set)
    for subject, pred, obj in edges:
        if predicate is None or pred == predicate:
            adjacent[subject].add(obj)
            adjacent[obj].add(subject)
    seen, frontier = {start: 0}, deque([start])
    while frontier:
        node = frontier.popleft()
        if seen[node] == hops:
            continue
        for other in adjacent[node]:
            if other not in seen:
                seen[other] = seen[node] + 1
                frontier.append(other)
    return set(seen) - {start}


@pytest.mark.agentmem_perf(max_error_rate=0.0, min_accuracy=1.0, compare_tolerance=AB_TOLERANCE)
async def test_agentmem_scenario_graph_hops(graph_store: Any, perf: Any) -> None:
    """1-, 2- and 3-hop neighbourhoods: checked exact against a BFS, then QPS per hop count."""
    entities = scaled(3_000, minimum=100)
    edges = _graph(entities, 2 * entities)
    await graph_store.add_relations(edges, user_id=USER)
    rng = random.Random(7)
    starts = [f"entity-{rng.randrange(entities)}" for _ in range(2_000)]

    checks, correct, sizes = 0, 0, {}
    for hops in (1, 2, 3):
        total = 0
        for entity in starts[:CHECKED]:
            got = await graph_store.neighbors(entity, user_id=USER, hops=hops)
            checks += 1
            correct += set(got) == _expected(edges, entity, hops)
            total += len(got)
        sizes[f"mean_{hops}hop_entities"] = total / CHECKED
    for entity in starts[:CHECKED]:
        got = await graph_store.neighbors(entity, user_id=USER, hops=2, predicate="rel-0")
        checks += 1
        correct += set(got) == _expected(edges, entity, 2, "rel-0")
    perf.record("graph_quality", accuracy=correct / checks, **sizes)
    assert correct == checks, f"{checks - correct} of {checks} neighbourhoods differ from a breadth-first search"

    for hops in (1, 2, 3):
        async def query(i: int, hops: int = hops) -> None:
            await graph_store.neighbors(starts[i % len(starts)], user_id=USER, hops=hops)

        result = await perf.run(query, concurrency=8, duration=scaled_seconds(1.0), warmup=50,
                                name=f"graph_{hops}hop")
        assert result.errors == 0, result.errors_by_type
