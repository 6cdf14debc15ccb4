"""The gate end to end, ``--update-baselines``: the write/compare/rewrite cycle, what is not
written, and the rounds a real ``perf.run`` baseline gets. Figures come from ``gate_project``.
"""

from __future__ import annotations

import json
import os
import re

import pytest
from gate_project import HEALTHY, TESTS, bdir, figures, make_project, rounds, run, stored, with_search

from pytest_agentmem.gate.baseline import SCHEMA, VERSION, baseline_path
from pytest_agentmem.gate.calibration import PROBE_NAME


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    return make_project(pytester)


def test_update_baselines_cycle(project: pytest.Pytester) -> None:
    first = run(project, "--update-baselines")
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines(["*search.qps*1000*(none)*updated*"])
    data = stored(project, "test_perf.py::test_search")
    assert data["schema"] == SCHEMA and data["version"] == VERSION
    assert data["nodeid"] == "test_perf.py::test_search"
    assert [r["qps"] for r in data["measurements"]["search"]["rounds"]] == [
        r["qps"] for r in HEALTHY["search"]["rounds"]]
    assert {"machine", "stack"} <= set(data["fingerprint"])
    assert data["fingerprint"]["machine"]["cpu_count"] == os.cpu_count()
    assert data["calibration"]["probe"] == PROBE_NAME
    text = baseline_path(bdir(project), "test_perf.py::test_search").read_text()
    assert text == json.dumps(data, sort_keys=True, indent=2) + "\n"  # key-sorted
    assert not list(bdir(project).glob(".*.tmp"))  # no temp file left behind

    same = run(project)
    same.assert_outcomes(passed=2)
    same.stdout.fnmatch_lines(["*search.qps*1000*1000*pass*"])

    figures(project, with_search(rounds=rounds(qps=1300, p95_ms=9.0, error_rate=0.0, recall=0.95)))
    better = run(project, "--update-baselines")
    better.assert_outcomes(passed=2)
    better.stdout.fnmatch_lines(["*search.p95_ms*9*12*-25%*updated*", "*search.qps*1300*1000*+30%*updated*"])
    assert stored(project, "test_perf.py::test_search")["measurements"]["search"]["metrics"]["qps"] == 1300


def test_update_does_not_write_a_test_that_failed(project: pytest.Pytester) -> None:
    project.makepyfile(test_perf=TESTS + '''
@pytest.mark.agentmem_perf
def test_broken(record):
    record("search")
    raise AssertionError("the body failed")

@pytest.mark.agentmem_perf(max_p95_ms=1)
def test_too_slow(record):
    record("search")
''')
    result = run(project, "--update-baselines")
    result.assert_outcomes(passed=2, failed=2)
    assert not baseline_path(bdir(project), "test_perf.py::test_broken").exists()
    assert not baseline_path(bdir(project), "test_perf.py::test_too_slow").exists()
    assert baseline_path(bdir(project), "test_perf.py::test_search").exists()
    result.stdout.fnmatch_lines(["*baseline not updated: the test failed its thresholds*"])


def test_real_perf_fixture_baseline_gets_enough_rounds(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_real='''
import asyncio
import pytest

@pytest.mark.agentmem_perf(tolerance="1000%", max_error_rate=0)
async def test_noop(perf):
    async def op(i):
        await asyncio.sleep(0)
    await perf.run(op, concurrency=2, total=50, name="noop")
    perf.record("quality", recall=1.0)
''')
    first = run(pytester, "--update-baselines")
    first.assert_outcomes(passed=1)
    data = stored(pytester, "test_real.py::test_noop")
    assert len(data["measurements"]["noop"]["rounds"]) == 5  # topped up for the statistics
    assert data["measurements"]["quality"]["metrics"] == {"recall": 1.0}
    again = run(pytester)
    again.assert_outcomes(passed=1)
    again.stdout.fnmatch_lines(["*quality.recall*1*1*pass*"])
    # judged (the rounds are enough), or said busy where other processes took the CPU: never quiet
    assert re.search(r"noop\.qps .*(pass|not judged: machine busy)$", again.stdout.str(), re.MULTILINE)
