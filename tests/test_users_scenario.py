"""The concurrent-users scenario as a user imports it, on a small ramp: its records and its audit.

The full ramp (1,000 -> 20,000 agents, about a minute) runs in tests/perf/test_scenarios.py
with ``--agentmem-perf``; here the steps are shrunk so that the wiring is checked in seconds.
"""

from __future__ import annotations

import json

import pytest

import pytest_agentmem.scenarios.users as users

pytestmark = pytest.mark.slow

IMPORTED = """
from pytest_agentmem.scenarios.users import *  # noqa: F401,F403
"""


@pytest.fixture
def small_ramp(monkeypatch: pytest.MonkeyPatch) -> None:
    # the inner run (in process) reads the same module's constants
    monkeypatch.setattr(users, "STEPS", (20, 60))
    monkeypatch.setattr(users, "HOLD_S", (1.0, 1.5))
    monkeypatch.setattr(users, "THINK_S", 0.5)
    monkeypatch.setenv("AGENTMEM_SCENARIO_SCALE", "1")


FORGETFUL = """
import pytest_asyncio
from pytest_agentmem.memory.service import MemoryService


class Forgetful(MemoryService):
    async def update(self, memory_id, text):
        return await self.get(memory_id)  # acknowledged, never stored


@pytest_asyncio.fixture
async def memory_service(memory_repo, embedder):
    return Forgetful(memory_repo, embedder.per_test())
"""


def test_each_step_is_recorded_and_the_audit_catches_a_lost_update(
        pytester: pytest.Pytester, service_urls: list[str], small_ramp: None) -> None:
    """The scenario on the shipped service passes with every figure recorded; on a system that
    acknowledges updates it does not keep (``forgetful/``), the audit fails it.

    One inner run for both (a second in-process run attaching to the servers again crashed
    asyncpg's SSL negotiation in this process: a segmentation fault).
    """
    pytester.makepyfile(test_users=IMPORTED)
    forgetful = pytester.mkpydir("forgetful")
    (forgetful / "conftest.py").write_text(FORGETFUL)
    (forgetful / "test_forgetful_users.py").write_text(IMPORTED)
    result = pytester.runpytest("--agentmem-perf", "-p", "no:cacheprovider", "-s",
                                "--agentmem-report=r.json", *service_urls)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "concurrent users (think 0.5 s, mix search 70%/add 20%/update 10%):",
        "*    20 users: offered   40.0/s, served *",
        "*    60 users: offered  120.0/s, served *",
        "*largest step holding p95 <= 250 ms and error rate < 0.1%: * users",
        "*audit: acknowledged *, found *, wrong 0 *",
    ])
    result.stdout.fnmatch_lines(["*audit: acknowledged *, found *, wrong [1-9]*",
                                 "*audit: changed: *(its last acknowledged version)"])
    result.stdout.fnmatch_lines(["*audit.wrong * > max_wrong 0*"])
    report = json.loads((pytester.path / "r.json").read_text())
    tests = {t["nodeid"]: t for t in report["tests"]}
    assert tests["forgetful/test_forgetful_users.py::test_agentmem_scenario_concurrent_users"][
        "outcome"] == "failed"
    test = tests["test_users.py::test_agentmem_scenario_concurrent_users"]
    figures = {m["name"]: m for m in test["measurements"]}
    assert set(figures) == {"users_20", "users_60", "step_20", "step_60", "ramp", "audit"}
    for n in (20, 60):
        step = figures[f"users_{n}"]
        assert step["kind"] == "load" and step["load"]["think_s"] == 0.5 and step["load"]["concurrency"] == n
        assert {"qps", "p50_ms", "p95_ms", "p99_ms", "error_rate"} <= set(step["metrics"])
        # every action embeds a new text and asks the store: the caches did not answer
        assert step["metrics"]["result_cache_hit_rate"] == 0.0
        assert step["metrics"]["embedding_cache_hit_rate"] == 0.0
        record = figures[f"step_{n}"]["metrics"]
        assert record["users"] == n and record["offered_rate"] == n / 0.5
        assert record["served_rate"] == step["metrics"]["qps"]
    audited = figures["audit"]["metrics"]
    assert audited["acknowledged"] > 0 and audited["found"] == audited["acknowledged"]
    assert audited["lost"] == 0 and audited["wrong"] == 0
    assert figures["ramp"]["metrics"]["largest_users_holding"] in (0, 20, 60)
    checked = {(c["measurement"], c["metric"]) for c in test["checks"] if c["kind"] == "threshold"}
    assert {("audit", "lost"), ("audit", "wrong")} <= checked
    assert ("users_60", "error_rate") not in checked  # capacity is reported, not gated
