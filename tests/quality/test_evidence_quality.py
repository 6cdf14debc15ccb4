"""Does the evidence point at the cause? (issue 23; run with --agentmem-perf)

The search scenario (the memory service without result cache over 2,000 memories,
4 users in closed loop) is recorded as a baseline, with a reference profile
(``--update-baselines --agentmem-profile``), then run twice more with a regression
injected through a conftest override of ``memory_service``, without any flag:

- ``sql``: one extra real query per search, with a slower plan (every memory sorted
  by an inner product, which no index serves: a sequential scan and a sort, not a sleep). The gate must fail and the
  report must put that statement at the top of the statements that grew.
- ``cpu``: Python CPU work per search (a pure-Python re-scoring of the results).
  The gate must fail; its re-measurement is profiled (py-spy installed) and the
  re-scoring function must top the functions whose share grew (differential
  flame graph against the baseline's profile) and appear in the plain one.

Run: ``pytest --agentmem-perf -p no:cacheprovider tests/quality/test_evidence_quality.py -s``
(about 2 minutes). Other engineers load this machine: the gate's own re-measurement
is what keeps a noisy run from failing the unchanged case, which is not repeated here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_agentmem.evidence.profile import py_spy_path
from pytest_agentmem.load.fixtures import PROFILED_RERUN

pytest_plugins = "pytester"

CONFTEST = '''
import os

import pytest_asyncio

from pytest_agentmem.memory.fixtures import memory_service_fixture

plain_service = memory_service_fixture(result_cache=None)
MODE = os.environ.get("INJECT", "")


def rescore(memories, query):
    """The injected CPU regression: a pure-Python re-scoring of every result."""
    total = 0
    for m in memories:
        for ch in m.content * 40:
            total += (ord(ch) * len(query)) % 13
    return total


class Injected:
    def __init__(self, inner, pool):
        self.inner, self.pool = inner, pool

    async def search(self, query, **kwargs):
        if MODE == "sql":  # one more real query: inner-product order, which no index serves (a sort of
            # every memory by a distance computed for each: a slower plan, not a sleep)
            await self.pool.fetch("SELECT id FROM memories ORDER BY embedding <#> "
                                  "(SELECT embedding FROM memories WHERE user_id = $1 LIMIT 1) LIMIT 10",
                                  kwargs.get("user_id"))
        found = await self.inner.search(query, **kwargs)
        if MODE == "cpu":
            rescore(found, query)
        return found

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest_asyncio.fixture
async def memory_service(plain_service, pg_pool):
    yield Injected(plain_service, pg_pool) if MODE else plain_service
'''

SCENARIO = '''
import pytest

from pytest_agentmem.datasets.corpus import memory_corpus


@pytest.mark.agentmem_perf
async def test_search(memory_service, perf):
    corpus = memory_corpus(2000, users=10, seed=3)
    for user in sorted(set(corpus.user_ids)):
        await memory_service.add_batch([t for t, u in zip(corpus.texts, corpus.user_ids) if u == user],
                                       user_id=user)
    questions = corpus.questions

    async def search(i):
        q = questions[i % len(questions)]
        await memory_service.search(q.text, user_id=q.user_id, limit=10)

    await perf.run(search, concurrency=4, duration=1.0, warmup=len(questions), rounds=3, name="search")
'''


def _evidence(pytester: pytest.Pytester) -> dict:
    record = json.loads((pytester.path / "r.json").read_text())["tests"][0]
    return record["measurements"][0]["evidence"]


@pytest.mark.agentmem_perf(reference=False)
def test_the_evidence_names_the_injected_cause(pytester: pytest.Pytester, service_urls: list[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_scenario=SCENARIO)
    args = ["--agentmem-perf", "-p", "no:cacheprovider", *service_urls, "--agentmem-report", "r.json",
            "--agentmem-profile-dir", str(pytester.path / "profiles")]
    pytester.runpytest(*args, "--update-baselines", "--agentmem-profile").assert_outcomes(passed=1)

    monkeypatch.setenv("INJECT", "sql")
    result = pytester.runpytest(*args)
    result.assert_outcomes(failed=1)
    evidence = _evidence(pytester)
    top = evidence["statements_grown"][0]
    print("\nsql: top statement that grew:", top["query"][:90], f"{top['grew_ms_per_op']:+.3f} ms/op;",
          f"db ms/op {evidence.get('ref_db_ms_per_op', 0):.3f} -> {evidence['db_ms_per_op']:.3f}")
    assert "<#>" in top["query"] and top["ref_ms_per_op"] is None
    result.stdout.fnmatch_lines(["*statements that grew against the baseline:", "*ms/op*ORDER BY embedding <#>*"])

    monkeypatch.setenv("INJECT", "cpu")
    result = pytester.runpytest(*args)
    result.assert_outcomes(failed=1)
    profile = _evidence(pytester).get("profile", {})
    if py_spy_path() is None:
        pytest.skip("py-spy is not installed: no profile of the re-measurement")
    assert "problem" not in profile, profile.get("problem")
    print("cpu: functions that grew:", [(r["function"], round(r["grew"], 3)) for r in profile["grown"][:3]])
    assert profile["scope"] == PROFILED_RERUN
    assert profile["grown"][0]["function"].startswith("rescore")
    assert "rescore" in Path(profile["svg"]).read_text() and "rescore" in Path(profile["diff_svg"]).read_text()
    assert any(r["function"].startswith("rescore") for r in profile["top"][:3])
    result.stdout.fnmatch_lines(["*functions whose share of samples grew*", "*pt  rescore*"])
