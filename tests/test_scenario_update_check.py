"""The update scenario's staleness check: a stale read fails it, a legal interleaving of
concurrent updates of one memory does not (a toy in-memory service drives the scenario)."""

from __future__ import annotations

import pytest

SERVICE = '''
import asyncio, itertools, pytest
from pytest_agentmem.memory.model import Memory


class Toy:
    """Words-overlap search over a dict; MODE picks how updates behave."""

    def __init__(self, mode):
        self.mode, self.rows, self.calls = mode, {}, itertools.count()

    async def add_batch(self, texts, *, user_id=None, **kw):
        return [await self.add(t, user_id=user_id) for t in texts]

    async def add(self, text, *, user_id=None, **kw):
        m = Memory(content=text, user_id=user_id)
        self.rows[m.id] = m
        return m

    async def update(self, memory_id, text):
        n = next(self.calls)
        if self.mode == "stale":
            return self.rows[memory_id]          # acknowledges, never applies
        if self.mode == "reordered" and n % 2 == 0:
            await asyncio.sleep(0.02)            # an earlier call lands after a later one
        self.rows[memory_id] = Memory(content=text, user_id=self.rows[memory_id].user_id, id=memory_id)
        return self.rows[memory_id]

    async def delete(self, memory_id):
        del self.rows[memory_id]

    async def search(self, query, *, user_id=None, limit=10, **kw):
        if self.mode == "reordered":
            await asyncio.sleep(0.03)            # the late, older write lands meanwhile
        words = set(query.lower().split())
        mine = [m for m in self.rows.values() if m.user_id == user_id]
        mine.sort(key=lambda m: -len(words & set(m.content.lower().split())))
        return mine[:limit]


@pytest.fixture
def memory_service():
    return Toy(MODE)
'''


@pytest.mark.parametrize(("mode", "outcome"), [("stale", "failed"), ("reordered", "passed")])
def test_stale_reads_fail_and_concurrent_reorderings_pass(pytester: pytest.Pytester,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         mode: str, outcome: str) -> None:
    monkeypatch.setenv("AGENTMEM_SCENARIO_SCALE", "0.05")
    pytester.makeconftest(f"MODE = {mode!r}\n" + SERVICE)
    pytester.makepyfile(test_update="from pytest_agentmem.scenarios.standard import "
                                    "test_agentmem_scenario_update_delete  # noqa: F401\n")
    result = pytester.runpytest("--agentmem-perf", "-p", "no:cacheprovider")
    result.assert_outcomes(**{outcome: 1})
    if mode == "stale":
        result.stdout.fnmatch_lines(["*stale or no content*wrote v*found v-1*"])
