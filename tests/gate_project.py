"""The project the gate's end-to-end tests (``tests/test_gate_*.py``) run with pytester.

Generated perf tests are fed with controlled figures.

The generated conftest's ``record`` fixture plays the load runner: it reads the
figures of a measurement from ``figures.json`` (``figures-again.json`` or
``figures-again-<N>.json`` in the gate's fresh processes, when there is one: :func:`figures_again`) (rounds, and the rounds a
re-measurement would give), asks the gate ``pytest_agentmem_confirm_rounds`` like
the runner does at the end of ``perf.run``, appends the extra rounds if asked,
and files the Measurement. The outer test rewrites ``figures.json`` between runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_agentmem.gate.baseline import baseline_path

CONFTEST = '''
import json
import os
import statistics
from pathlib import Path

import pytest

from pytest_agentmem.gate.plugin import GatePlugin
from pytest_agentmem.measurement import Measurement, measurements_of
from pytest_agentmem.session import SpeedProbe, get_session, plugin_of

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _calibration(request):
    fixed = HERE / "calibration.json"
    if fixed.exists():
        probe = json.loads(fixed.read_text())
        plugin_of(request.config, GatePlugin).probe = probe
        # its components as if a fixture had loaded them (``record``, unless it says which)
        for name, rate in probe.get("components", {}).items():
            get_session(request.config).speed_probes[name] = SpeedProbe(
                probe.get("components_fixture", "record"), lambda rate=rate: rate)


FRESH = {"process": 0}


def pytest_sessionstart(session):
    if os.environ.get("AGENTMEM_REPRODUCING"):  # count the gate's fresh processes of this run
        counter = HERE / "again-count"
        FRESH["process"] = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(FRESH["process"]))


def _figures_file():
    # the gate's fresh processes (a failure must reproduce) measure figures-again-<N>.json (the
    # N-th of the run), else figures-again.json, when given
    if os.environ.get("AGENTMEM_REPRODUCING"):
        for again in (HERE / f"figures-again-{FRESH['process']}.json", HERE / "figures-again.json"):
            if again.exists():
                return again
    return HERE / "figures.json"


@pytest.fixture
def record(request):
    def _record(name):
        spec = json.loads(_figures_file().read_text())[name]
        rounds = [dict(r) for r in spec["rounds"]]
        metrics = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        m = Measurement(name, metrics, rounds, kind="record")
        hook = request.config.hook
        extra = hook.pytest_agentmem_confirm_rounds(item=request.node, measurement=m)
        if extra:
            confirm = spec.get("confirm") or spec["rounds"]
            m.rounds += [dict(confirm[i % len(confirm)]) for i in range(extra)]
            m.confirmations = extra
            m.metrics = {k: statistics.median(r[k] for r in m.rounds) for k in m.rounds[0]}
        hook.pytest_agentmem_measurement(item=request.node, measurement=m)
        measurements_of(request.node).append(m)
        return m
    return _record
'''

TESTS = '''
import pytest

@pytest.mark.agentmem_perf(max_p95_ms=50, min_qps=100)
def test_search(record):
    record("search")

@pytest.mark.agentmem_perf
def test_add(record):
    record("add")
'''


def rounds(n: int = 5, **centre: float) -> list[dict[str, float]]:
    """``n`` rounds scattered +-2% around ``centre`` (deterministic)."""
    wiggle = [1.0, 1.02, 0.98, 1.01, 0.99, 1.015, 0.985, 1.005, 0.995, 1.0]
    return [{k: v * wiggle[i % len(wiggle)] for k, v in centre.items()} for i in range(n)]


HEALTHY = {
    "search": {"rounds": rounds(qps=1000, p95_ms=12.0, error_rate=0.0, recall=0.95)},
    "add": {"rounds": rounds(qps=500, p95_ms=4.0, items_per_s=2000)},
}


def make_project(pytester: pytest.Pytester) -> pytest.Pytester:
    """``pytester`` with the conftest, ``test_perf.py`` (test_search, test_add) and healthy figures."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_perf=TESTS)
    figures(pytester, HEALTHY)
    return pytester


def figures(pytester: pytest.Pytester, data: dict[str, Any]) -> None:
    (pytester.path / "figures.json").write_text(json.dumps(data))


def figures_again(pytester: pytest.Pytester, data: dict[str, Any], process: int | None = None) -> None:
    """What the tests measure when the gate runs them again in a fresh process (in the
    ``process``-th of a run only, counted from 1, when given)."""
    name = "figures-again.json" if process is None else f"figures-again-{process}.json"
    (pytester.path / name).write_text(json.dumps(data))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    (pytester.path / "again-count").unlink(missing_ok=True)  # the fresh processes of this run count from 1
    return pytester.runpytest("--agentmem-perf", "-p", "no:cacheprovider", "-p", "no:randomly", *args)


def bdir(pytester: pytest.Pytester) -> Path:
    return pytester.path / "perf_baselines"


def stored(pytester: pytest.Pytester, nodeid: str) -> dict[str, Any]:
    return json.loads(baseline_path(bdir(pytester), nodeid).read_text())


def with_search(**changes: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(HEALTHY))
    data["search"].update(changes)
    return data
