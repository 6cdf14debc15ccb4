"""The main job: the whole scenario catalogue, run against the shipped components.

    pytest tests/perf --agentmem-perf --agentmem-report=agentmem-report.json --agentmem-html=agentmem-report.html

This is how a user runs it against their own system: import the catalogue into a
test module; override ``memory_service``, ``memory_repo``, ``lancedb_store``,
``graph_store`` or ``embedder`` in a conftest to swap a component.
``AGENTMEM_SCENARIO_SCALE`` grows every data set and measurement (default 1.0:
about five minutes on a 2-core machine). The project's own engine benchmarks
(load engine overhead, server start times, raw COPY, 100k-row stores) live in
``tests/bench`` and are not part of this job.
"""

from pytest_agentmem.scenarios.catalogue import *  # noqa: F401,F403
