"""Project-wide test configuration of pytest-agentmem's own test suite."""

from __future__ import annotations

import importlib
import importlib.util
import os

import pytest

from pytest_agentmem.memory.embed_model import default_cache_dir

#: Modules whose compiled parts cannot be loaded a second time in one process. pytester
#: removes the modules an inner (in-process) run imported when it ends, so a module first
#: imported inside one inner run is loaded again by the next: scipy, onnxruntime and numpy
#: raise "cannot load module more than once per process", lancedb panics, and onnx ABORTS
#: the whole test process (nanobind: "refusing to add duplicate key"), depending only on
#: the order the tests ran in. Imported here, before any test, they are never reloaded.
ONCE_PER_PROCESS = ("numpy", "scipy.stats", "onnx", "onnxruntime", "lancedb")
for _name in ONCE_PER_PROCESS:
    if importlib.util.find_spec(_name.partition(".")[0]) is not None:
        importlib.import_module(_name)

# pytester points HOME at each inner run's temporary directory, so the default model cache
# (~/.cache/pytest-agentmem) would be empty in every inner run, and each would assemble and
# quantise the embedding model again (2.5 s, and the onnx import above). Inner runs share
# this run's cache instead; a test of the cache's location sets or removes the variable itself.
os.environ.setdefault("AGENTMEM_CACHE_DIR", str(default_cache_dir()))


@pytest.fixture(autouse=True)
def _not_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner runs judge as on a developer's machine whatever CI says (``CI=true`` turns
    ``--agentmem-strict`` on by default); the tests of that default set it themselves."""
    monkeypatch.delenv("CI", raising=False)


@pytest.fixture(autouse=True)
def _one_process_a_side(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner A/B runs measure one process a side unless a test says otherwise: the suite's A/B
    tests check the mechanics (pairing, messages, cleanup) on a 2-core machine, and three
    processes a side (the default) would triple each of them."""
    monkeypatch.setenv("AGENTMEM_COMPARE_PROCESSES", "1")


@pytest.fixture
def service_urls(agentmem_services) -> list[str]:  # type: ignore[no-untyped-def]
    """Command-line options that point an inner pytester run at this run's servers.

    Inner runs then reuse the servers instead of starting their own (external mode).
    """
    return [f"--agentmem-postgres-url={agentmem_services.postgres.dsn}",
            f"--agentmem-redis-url={agentmem_services.redis.url}"]
