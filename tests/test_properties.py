"""Property-based tests (hypothesis) of what both stores accept (issue 9).

Contents, metadata keys and values, scopes and filters drawn from unicode (lone
surrogates included), NUL, SQL and JSON metacharacters, huge values and deep
nesting, on the Postgres repository and on the LanceDB store: each memory is
stored and read back identically (types included: ``1`` stays an int, ``True``
a bool), or rejected with :class:`InvalidMemoryError` with nothing stored; a
filter is answered or rejected with :class:`InvalidMemoryError`, and a stored
scalar is found by an equality filter on it.

Example counts are small in the ordinary run (profile ``agentmem-quick``, a few
seconds a test); under ``--agentmem-perf`` the ``agentmem-soak`` profile runs
many more. The stores run on a private event loop (hypothesis drives sync code).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from reliability import tally

from pytest_agentmem.memory.model import InvalidMemoryError, Memory, MemoryNotFoundError

pytestmark = pytest.mark.slow

DIM = 8
settings.register_profile("agentmem-quick", max_examples=40, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("agentmem-soak", max_examples=300, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --------------------------------------------------------------------------- strategies

NASTY = ["'", '"', "\\", "';DROP TABLE memories;--", "$1", "%s", "{}", "[", "->>", "#>", "?|", "@>",
         "\x00", "\u2028", "\ufeff", "\U0001F600", "é", "ß", "\ud800", "\udfff", "NaN", "null", " "]
chars = st.characters(codec=None, exclude_categories=())  # every code point, surrogates included
text = st.one_of(st.text(chars, max_size=40), st.sampled_from(NASTY),
                 st.lists(st.sampled_from(NASTY), min_size=1, max_size=6).map("".join))
huge_text = st.integers(min_value=10_000, max_value=300_000).map(lambda n: "x" * n)
key = st.one_of(text, st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True))
scalar = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-2**63, max_value=2**63 - 1),
    st.integers(min_value=-2**80, max_value=2**80),  # beyond int64: rejected
    st.floats(allow_nan=True, allow_infinity=True),  # NaN and inf: rejected
    text, huge_text)
json_value = st.recursive(scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(key, inner, max_size=4)), max_leaves=12)


@st.composite
def deep(draw: Any) -> dict[str, Any]:
    """A dict nested 20..40 levels (the limit is 32)."""
    value: Any = draw(scalar)
    for _ in range(draw(st.integers(min_value=20, max_value=40))):
        value = {"k": value} if draw(st.booleans()) else [value]
    return {"deep": value}


metadata = st.one_of(st.dictionaries(key, json_value, max_size=5), deep())
content = st.one_of(text, huge_text)
scope = st.one_of(st.none(), text)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same JSON types throughout (1 is not 1.0, True is not 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


# --------------------------------------------------------------------------- the stores


class Driver:
    """A store on a private event loop, driven from hypothesis' sync examples."""

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop, store: Any) -> None:
        self.name, self.loop, self.store = name, loop, store
        self.tried = self.rejected = self.stored = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def count(self) -> int:
        return int(self.run(self.store.count()))


@pytest.fixture(params=["postgres", "lancedb"])
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Driver]:
    loop = asyncio.new_event_loop()
    closers: list[Any] = []
    try:
        if request.param == "postgres":
            import asyncpg
            from pgvector.asyncpg import register_vector

            from pytest_agentmem.memory.postgres import PostgresMemoryRepository

            dsn = request.getfixturevalue("pg_database")
            async def connect() -> Any:  # inside the loop: the pool binds to it
                return await asyncpg.create_pool(dsn, min_size=1, max_size=2, init=register_vector)

            pool = loop.run_until_complete(connect())
            closers.append(lambda: loop.run_until_complete(pool.close()))
            store: Any = PostgresMemoryRepository(pool, dim=DIM)
            loop.run_until_complete(store.setup())
        else:
            from pytest_agentmem.memory.lance import LanceDBMemoryStore

            store = loop.run_until_complete(LanceDBMemoryStore.open(tmp_path / "lance", dim=DIM))
            closers.append(store.close)
        yield Driver(request.param, loop, store)
    finally:
        for close in reversed(closers):
            close()
        loop.close()


def profile(config: pytest.Config) -> settings:
    from pytest_agentmem.session import get_session

    return settings.get_profile("agentmem-soak" if get_session(config).settings.perf else "agentmem-quick")


def vec(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32) + 0.1


def _store_and_read(d: Driver, memory: Memory, batch: bool = False) -> None:
    """``add`` (or ``add_batch`` with a valid memory before it) then ``get``."""
    d.tried += 1
    before = d.count()
    try:
        if batch:
            d.run(d.store.add_batch([Memory("fine", embedding=vec(7)), memory]))
        else:
            d.run(d.store.add(memory))
    except InvalidMemoryError:
        d.rejected += 1
        assert d.count() == before, "a rejected memory was stored"
        with pytest.raises(MemoryNotFoundError):
            d.run(d.store.get(memory.id))
        return
    d.stored += 1
    got = d.run(d.store.get(memory.id))
    assert got.content == memory.content
    assert (got.user_id, got.agent_id, got.run_id) == (memory.user_id, memory.agent_id, memory.run_id)
    assert same(got.metadata, memory.metadata), (got.metadata, memory.metadata)
    json.dumps(got.metadata)  # what was read back is plain JSON


def _tally(d: Driver, name: str) -> None:
    tally("inputs", f"{name} ({d.name})", tried=d.tried, rejected=d.rejected, stored=d.stored)
    assert d.tried > 0


# --------------------------------------------------------------------------- properties


def test_contents_and_scopes_are_stored_identically_or_rejected(driver: Driver, pytestconfig: pytest.Config) -> None:
    @profile(pytestconfig)
    @given(content=content, user=scope, agent=scope, seed=st.integers(0, 2**16), batch=st.booleans())
    @example(content="\ud800", user=None, agent=None, seed=0, batch=False)  # found: reached the driver
    @example(content="ok", user="\udfff", agent=None, seed=0, batch=True)
    def check(content: str, user: str | None, agent: str | None, seed: int, batch: bool) -> None:
        _store_and_read(driver, Memory(content, user_id=user, agent_id=agent, embedding=vec(seed)), batch)

    check()
    _tally(driver, "contents")


def test_metadata_is_stored_identically_or_rejected(driver: Driver, pytestconfig: pytest.Config) -> None:
    @profile(pytestconfig)
    @given(meta=metadata, seed=st.integers(0, 2**16), batch=st.booleans())
    @example(meta={"\ud800": None}, seed=0, batch=False)  # found: LanceDB changed the key
    @example(meta={"k": "\ud800"}, seed=0, batch=True)
    @example(meta={"": 1e16}, seed=0, batch=False)  # found: Postgres read it back as an int
    @example(meta={"big": [-2.5e300, 1e300]}, seed=0, batch=True)
    def check(meta: dict[str, Any], seed: int, batch: bool) -> None:
        _store_and_read(driver, Memory("a memory", metadata=meta, embedding=vec(seed)), batch)

    check()
    _tally(driver, "metadata")


operator_spec = st.one_of(
    scalar,
    st.dictionaries(st.sampled_from(["eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "exists", "like", ""]),
                    st.one_of(scalar, st.lists(scalar, max_size=3), json_value), min_size=0, max_size=3),
    st.lists(scalar, max_size=2))


def test_filters_are_answered_or_rejected(driver: Driver, pytestconfig: pytest.Config) -> None:
    driver.run(driver.store.add(Memory("anchor", user_id="u", metadata={"k": 1, "s": "x"}, embedding=vec(0))))

    @profile(pytestconfig)
    @given(filters=st.dictionaries(key, operator_spec, max_size=3))
    def check(filters: dict[str, Any]) -> None:
        driver.tried += 1
        try:
            found = driver.run(driver.store.search(vec(1), user_id="u", filters=filters, limit=5))
        except InvalidMemoryError:
            driver.rejected += 1
            return
        driver.stored += 1  # answered
        assert all(m.user_id == "u" for m in found)

    check()
    _tally(driver, "filters")


def test_a_stored_scalar_is_found_by_equality(driver: Driver, pytestconfig: pytest.Config) -> None:
    @profile(pytestconfig)
    @given(k=st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True), value=scalar,
           seed=st.integers(0, 2**16))
    @example(k="A", value=4.656347331577135e16, seed=0)  # found: a float >= 1e16 written exactly
    @example(k="A", value=2.0, seed=0)
    def check(k: str, value: Any, seed: int) -> None:
        user = f"s{driver.tried}"  # a scope of its own: examples repeat while hypothesis shrinks
        memory = Memory("scalar", user_id=user, metadata={k: value}, embedding=vec(seed))
        driver.tried += 1
        try:
            driver.run(driver.store.add(memory))
        except InvalidMemoryError:
            driver.rejected += 1
            return
        driver.stored += 1
        found = driver.run(driver.store.search(vec(seed), user_id=user, filters={k: value}, limit=5))
        assert [m.id for m in found] == [memory.id], (k, value)
        found = driver.run(driver.store.search(vec(seed), user_id=user, filters={k: {"exists": True}}, limit=5))
        assert [m.id for m in found] == [memory.id]

    check()
    _tally(driver, "equality filters")
