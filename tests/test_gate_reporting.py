"""The gate end to end, what it hands on: verdicts filed for the reports, the summary under
pytest-xdist, and pytest-benchmark results gated like perf.run's. Figures come from
``gate_project``.
"""

from __future__ import annotations

import json

import pytest
from gate_project import TESTS, bdir, figures, make_project, rounds, run, stored, with_search

from pytest_agentmem.gate.recordings import RUN_KEY


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    return make_project(pytester)


BENCH = '''
import hashlib, os

WORK = int(os.environ.get("GATE_BENCH_WORK", "1"))
TEXT = b"agent memory " * 2000

def work():
    for _ in range(WORK):
        hashlib.sha256(TEXT).digest()

def test_hash(benchmark):
    benchmark.pedantic(work, rounds=40, iterations=5, warmup_rounds=2)
'''


def test_verdicts_are_filed_for_the_reports(project: pytest.Pytester) -> None:
    from pytest_agentmem.gate.plugin import GatePlugin
    from pytest_agentmem.gate.verdict import TestVerdict
    from pytest_agentmem.session import plugin_of

    run(project, "--update-baselines")
    slow = rounds(qps=1000, p95_ms=18.0, error_rate=0.0, recall=0.95)
    figures(project, with_search(rounds=slow, confirm=slow))
    result = project.inline_run("--agentmem-perf", "-p", "no:cacheprovider")
    config = result.getcalls("pytest_terminal_summary")[0].config
    verdicts = {v.nodeid: v for v in plugin_of(config, GatePlugin).verdicts}
    search = verdicts["test_perf.py::test_search"]
    assert isinstance(search, TestVerdict) and search.outcome == "failed"
    failing = {c.metric: c for c in search.failures}
    assert set(failing) == {"p95_ms"}
    assert failing["p95_ms"].confirmed and 0.45 < failing["p95_ms"].change < 0.55
    assert json.loads(json.dumps(search.to_dict()))["checks"][0]["measurement"] == "search"
    assert verdicts["test_perf.py::test_add"].outcome == "passed"


def test_xdist_update_and_gate(project: pytest.Pytester) -> None:
    project.makepyfile(test_more=TESTS.replace("test_search", "test_search2").replace("test_add", "test_add2"))
    result = run(project, "-n", "2", "-p", "no:benchmark", "--update-baselines")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*agentmem performance gate*", "*gate: 4 updated*"])
    assert len(list(bdir(project).glob("*.json"))) == 4
    # both workers name the same run in their recordings, so the tests' recordings line up
    runs = {r[RUN_KEY] for f in bdir(project).glob("*.json")
            for m in json.loads(f.read_text())["measurements"].values() for r in m["recordings"]}
    assert len(runs) == 1
    slow = rounds(qps=1000, p95_ms=18.0, error_rate=0.0, recall=0.95)
    figures(project, with_search(rounds=slow, confirm=slow))
    result = run(project, "-n", "2", "-p", "no:benchmark")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*gate: 2 failed, 2 passed*"])


def test_xdist_summary_does_not_need_the_report_plugin(project: pytest.Pytester) -> None:
    """The workers' verdicts reach the controller's gate summary on the gate's own channel."""
    project.makepyfile(test_more=TESTS.replace("test_search", "test_search2").replace("test_add", "test_add2"))
    result = run(project, "-n", "2", "-p", "no:benchmark", "-p", "no:agentmem-report", "--update-baselines")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*agentmem performance gate*", "*gate: 4 updated*"])
    slow = rounds(qps=1000, p95_ms=18.0, error_rate=0.0, recall=0.95)
    figures(project, with_search(rounds=slow, confirm=slow))
    result = run(project, "-n", "2", "-p", "no:benchmark", "-p", "no:agentmem-report")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*gate: 2 failed, 2 passed*"])


def test_pytest_benchmark_results_are_gated(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_bench=BENCH)
    args = ("-p", "no:cacheprovider", "--benchmark-disable-gc")
    first = pytester.runpytest(*args, "--update-baselines")
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["*benchmark.median_ms*updated*"])
    data = stored(pytester, "test_bench.py::test_hash")
    assert data["measurements"]["benchmark"]["kind"] == "benchmark"
    assert len(data["measurements"]["benchmark"]["rounds"]) == 30
    monkeypatch.setenv("GATE_BENCH_WORK", "4")  # 4x the real work
    slow = pytester.runpytest(*args)
    slow.assert_outcomes(failed=1)
    slow.stdout.fnmatch_lines(["*benchmark.median_ms * > baseline * (+*%, tolerance 15%, p=*"])
