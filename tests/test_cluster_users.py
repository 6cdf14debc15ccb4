"""The catalogue's concurrent-users scenario over a local two-node Ray cluster (issue 19).

A small ramp (as tests/test_users_scenario.py shrinks it), in a pytest process of its
own with ``--agentmem-load-cluster ray``: every step runs over one worker a node,
and the one audit reads the writes every worker handed back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the [cluster] extra (ray) is not installed")

pytestmark = pytest.mark.slow

CONFTEST = """
import pytest_agentmem.scenarios.users as users

users.STEPS = (20, 60)
users.HOLD_S = (1.5, 2.0)
users.THINK_S = 0.5
"""

IMPORTED = """
from pytest_agentmem.scenarios.users import *  # noqa: F401,F403
"""


@pytest.mark.timeout(1500)  # Ray, the model in each worker and the ramp: slow on a fresh machine
def test_the_users_scenario_runs_over_the_cluster(pytester: pytest.Pytester,
                                                  service_urls: list[str]) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_users=IMPORTED)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    env = dict(os.environ, AGENTMEM_SCENARIO_SCALE="1",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "-q",
                           "--agentmem-perf", "--agentmem-load-cluster=ray", "--agentmem-report=r.json",
                           *service_urls], cwd=pytester.path, env=env, capture_output=True, text=True,
                          timeout=1400)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "concurrent users (think 0.5 s, mix search 70%/add 20%/update 10%, 2 workers over the load " \
           "cluster):" in out, out
    report = json.loads((pytester.path / "r.json").read_text())
    (test,) = report["tests"]
    figures = {m["name"]: m for m in test["measurements"]}
    for n in (20, 60):
        load = figures[f"users_{n}"]["load"]
        assert load["processes"] == 2 and load["placement"]["backend"] == "ray"
        assert len(load["placement"]["nodes"]) == 2, load["placement"]
        assert sum(w["ops"] for w in load["placement"]["per_worker"]) == load["ops"] > 0
    audited = figures["audit"]["metrics"]
    assert audited["acknowledged"] > 0 and audited["found"] == audited["acknowledged"]
    assert audited["lost"] == 0 and audited["wrong"] == 0
