"""GraphStore on a real Postgres: results equal a reference breadth-first search."""

from __future__ import annotations

import asyncio
import random
from collections import deque
from typing import Any

import pytest

from pytest_agentmem.memory.graph import GraphStore, Relation
from pytest_agentmem.memory.graph_index import AdjacencyIndex
from pytest_agentmem.memory.model import InvalidMemoryError
from pytest_agentmem.memory.pg_fixtures import graph_store_fixture

Triple = tuple[str, str, str]
eager_store = graph_store_fixture(compact_ratio=0.05, compact_min=8)


# --------------------------------------------------------------------------- reference


def steps(edges: set[Triple], node: str, direction: str, predicate: str | None) -> list[tuple[str, Triple]]:
    out = []
    for s, p, o in edges:
        if predicate is not None and p != predicate:
            continue
        if direction != "in" and s == node:
            out.append((o, (s, p, o)))
        if direction != "out" and o == node:
            out.append((s, (s, p, o)))
    return out


def ref_neighbors(edges: set[Triple], start: str, hops: int, direction: str = "both",
                  predicate: str | None = None) -> set[str]:
    depth = {start: 0}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if depth[node] == hops:
            continue
        for nbr, _ in steps(edges, node, direction, predicate):
            if nbr not in depth:
                depth[nbr] = depth[node] + 1
                queue.append(nbr)
    return set(depth) - {start}


def ref_paths(edges: set[Triple], src: str, dst: str, max_hops: int, direction: str = "both",
              predicate: str | None = None) -> list[list[Triple]]:
    found: list[list[Triple]] = []

    def walk(node: str, trail: list[Triple], seen: set[str]) -> None:
        if len(trail) == max_hops:
            return
        for nbr, edge in steps(edges, node, direction, predicate):
            if nbr == dst:
                found.append([*trail, edge])
            elif nbr not in seen:
                walk(nbr, [*trail, edge], seen | {nbr})

    if src != dst:
        walk(src, [], {src})
    return sorted(found, key=lambda path: (len(path), path))


def random_edges(rng: random.Random, nodes: int, count: int, predicates: int = 3) -> set[Triple]:
    names = [f"e{i}" for i in range(nodes)]
    return {(rng.choice(names), f"p{rng.randrange(predicates)}", rng.choice(names)) for _ in range(count)}


async def assert_matches(store: GraphStore, edges: set[Triple], rng: random.Random, user: str,
                         nodes: int, *, sql: bool = True, probes: int = 6) -> None:
    for _ in range(probes):
        start = f"e{rng.randrange(nodes)}"
        for hops in (1, 2, 3):
            for direction in ("both", "out", "in"):
                want = ref_neighbors(edges, start, hops, direction)
                assert await store.neighbors(start, user_id=user, hops=hops, direction=direction) == want
            want = ref_neighbors(edges, start, hops, "both", "p1")
            assert await store.neighbors(start, user_id=user, hops=hops, predicate="p1") == want
            if sql:
                assert await store.neighbors_sql(start, user_id=user, hops=hops) == \
                    ref_neighbors(edges, start, hops)
                assert await store.neighbors_sql(start, user_id=user, hops=hops, direction="out",
                                                 predicate="p0") == \
                    ref_neighbors(edges, start, hops, "out", "p0")
        dst = f"e{rng.randrange(nodes)}"
        for direction in ("both", "out"):
            got = await store.paths(start, dst, user_id=user, max_hops=3, direction=direction)
            assert [[tuple(r) for r in path] for path in got] == ref_paths(edges, start, dst, 3, direction)


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_queries_equal_reference_bfs_on_random_graphs(graph_store: GraphStore, seed: int) -> None:
    rng = random.Random(seed)
    nodes = rng.choice([15, 40, 120])
    edges = random_edges(rng, nodes, nodes * 2)
    assert await graph_store.add_relations(sorted(edges), user_id="u") == len(edges)
    await graph_store.add_relations(random_edges(rng, nodes, nodes), user_id="other")
    await assert_matches(graph_store, edges, rng, "u", nodes)


async def test_results_stay_equal_after_inserts_and_deletes(eager_store: GraphStore) -> None:
    """Small compaction thresholds: the overlay, tombstones and rebuilds all get exercised."""
    rng = random.Random(7)
    nodes = 60
    edges = random_edges(rng, nodes, 150)
    await eager_store.add_relations(edges, user_id="u")
    await assert_matches(eager_store, edges, rng, "u", nodes, probes=2)  # index loaded now
    for round_ in range(6):
        added = random_edges(rng, nodes + 10, 12)  # some new entities too
        new = await eager_store.add_relations(added, user_id="u")
        assert new == len(added - edges)
        edges |= added
        for edge in rng.sample(sorted(edges), 10):
            assert await eager_store.delete_relation(*edge, user_id="u")
            edges.discard(edge)
        assert not await eager_store.delete_relation("e1", "nope", "e2", user_id="u")
        one = ("e0", "p9", f"new{round_}")
        assert await eager_store.add_relation(*one, user_id="u")
        assert not await eager_store.add_relation(*one, user_id="u")
        edges.add(one)
        await assert_matches(eager_store, edges, rng, "u", nodes + 10, sql=round_ % 3 == 0, probes=2)
    index = await eager_store.index("u")
    assert index.compactions > 0 and eager_store.loads == 1
    assert set(await eager_store.relations(user_id="u")) == {Relation(*e) for e in edges}
    fresh = GraphStore(eager_store.pool)  # reloads from Postgres
    await assert_matches(fresh, edges, rng, "u", nodes + 10, sql=False, probes=2)


async def test_delete_entity_and_delete_all(graph_store: GraphStore) -> None:
    await graph_store.add_relations([("alice", "likes", "dogs"), ("bob", "likes", "dogs"),
                                     ("alice", "knows", "bob")], user_id="u")
    assert await graph_store.neighbors("dogs", user_id="u") == {"alice", "bob"}
    assert await graph_store.delete_entity("alice", user_id="u") == 2
    assert await graph_store.neighbors("dogs", user_id="u") == {"bob"}
    assert await graph_store.entities(user_id="u") == ["bob", "dogs"]
    assert await graph_store.delete_all(user_id="u") == 1
    assert await graph_store.neighbors("dogs", user_id="u") == set()
    assert await graph_store.relations(user_id="u") == []


async def test_users_are_isolated_and_paths_name_the_relations(graph_store: GraphStore) -> None:
    await graph_store.add_relations([("alice", "owns", "rex"), ("rex", "is_a", "dog")], user_id="a")
    await graph_store.add_relations([("alice", "fears", "dog")], user_id="b")
    assert await graph_store.neighbors("alice", user_id="a", hops=2) == {"rex", "dog"}
    assert await graph_store.neighbors("alice", user_id="b", hops=2) == {"dog"}
    assert await graph_store.neighbors("alice", user_id="c", hops=2) == set()
    assert await graph_store.paths("alice", "dog", user_id="a") == [
        [Relation("alice", "owns", "rex"), Relation("rex", "is_a", "dog")]]
    assert await graph_store.paths("dog", "alice", user_id="a", direction="out") == []
    assert await graph_store.paths("alice", "alice", user_id="a") == []
    assert await graph_store.neighbors("unknown", user_id="a") == set()
    assert await graph_store.neighbors("alice", user_id="a", predicate="unknown") == set()


@pytest.mark.parametrize(("call", "message"), [
    (lambda g: g.neighbors("a", user_id="u", hops=0), "hops must be an int in 1..3"),
    (lambda g: g.neighbors("a", user_id="u", hops=4), "hops must be an int in 1..3"),
    (lambda g: g.neighbors_sql("a", user_id="u", hops=True), "hops"),
    (lambda g: g.paths("a", "b", user_id="u", max_hops=9), "max_hops"),
    (lambda g: g.neighbors("a", user_id=None), "user_id is required"),
    (lambda g: g.neighbors("", user_id="u"), "entity must be a non-empty str"),
    (lambda g: g.neighbors("a", user_id="u", direction="up"), "direction"),
    (lambda g: g.add_relation("a", "", "b", user_id="u"), "predicate"),
    (lambda g: g.add_relation("a\x00", "p", "b", user_id="u"), "subject"),
    (lambda g: g.add_relations([("a", "p")], user_id="u"), "triple"),
    (lambda g: g.add_relations([("a", "p", "b"), ("c", "p", 3)], user_id="u"), "object"),
])
async def test_bad_input_is_rejected_and_nothing_stored(graph_store: GraphStore, call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidMemoryError, match=message):
        await call(graph_store)
    assert await graph_store.relations(user_id="u") == []


async def test_names_with_sql_metacharacters_are_data(graph_store: GraphStore) -> None:
    odd = ["a'; DROP TABLE graph_relations; --", 'b") OR 1=1', "$1", "é 🙂"]
    await graph_store.add_relations([(odd[0], odd[2], odd[1]), (odd[1], "x", odd[3])], user_id=odd[0])
    assert await graph_store.neighbors(odd[0], user_id=odd[0], hops=2) == {odd[1], odd[3]}
    assert await graph_store.neighbors_sql(odd[0], user_id=odd[0], hops=2, predicate=odd[2]) == {odd[1]}


def test_index_compacts_and_keeps_answers() -> None:
    rng = random.Random(3)
    edges = random_edges(rng, 50, 120)
    index = AdjacencyIndex(edges, compact_min=4, compact_ratio=0.0)
    for edge in rng.sample(sorted(edges), 30):
        assert index.remove(*edge)
        edges.discard(edge)
    for edge in random_edges(rng, 55, 30):
        index.add(*edge)
        edges.add(edge)
    assert index.compactions >= 5 and index.delta <= 4
    for start in ("e1", "e2", "e3", "e54"):
        for hops in (1, 2, 3):
            assert index.neighbors(start, hops) == ref_neighbors(edges, start, hops)


class FaultAfterCommitPool:
    """The real pool, with a fault armed for the next release of a connection: the
    statement has run and committed, then the release raises (a connection lost)
    or waits to be cancelled (a caller that gives up)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.fault: str | None = None
        self.waiting = asyncio.Event()

    def acquire(self, timeout: float | None = None) -> Any:
        return _FaultyAcquire(self, self.pool.acquire(timeout=timeout))


class _FaultyAcquire:
    def __init__(self, owner: FaultAfterCommitPool, inner: Any) -> None:
        self.owner = owner
        self.inner = inner

    async def __aenter__(self) -> Any:
        return await self.inner.__aenter__()

    async def __aexit__(self, *exc: Any) -> None:
        await self.inner.__aexit__(*exc)
        fault, self.owner.fault = self.owner.fault, None
        if fault == "raise":
            raise ConnectionResetError("injected: connection lost after commit")
        if fault == "cancel":
            self.owner.waiting.set()
            await asyncio.Event().wait()


@pytest.mark.parametrize("fault", ["raise", "cancel"])
async def test_the_index_follows_postgres_when_a_write_fails_after_commit(pg_pool: Any, fault: str) -> None:
    pool = FaultAfterCommitPool(pg_pool)
    store = GraphStore(pool)
    await store.setup()
    await store.add_relations([("a", "knows", "b"), ("b", "knows", "c"), ("c", "likes", "d")], user_id="u")
    writes = [lambda: store.add_relation("d", "knows", "e", user_id="u"),
              lambda: store.delete_relation("a", "knows", "b", user_id="u"),
              lambda: store.add_relations([("a", "knows", "c"), ("e", "likes", "f")], user_id="u"),
              lambda: store.delete_entity("c", user_id="u"),
              lambda: store.delete_all(user_id="u")]
    for write in writes:
        await store.index("u")  # loaded, so a write has an index to keep in step
        pool.fault = fault
        pool.waiting.clear()
        task = asyncio.ensure_future(write())
        if fault == "cancel":
            await pool.waiting.wait()
            task.cancel()
        with pytest.raises((ConnectionResetError, asyncio.CancelledError)):
            await task
        for entity in await store.entities(user_id="u") or ["a"]:
            assert await store.neighbors(entity, user_id="u", hops=3) == \
                await store.neighbors_sql(entity, user_id="u", hops=3), (write, entity)
