"""Project-wide test configuration of pytest-agentmem's own test suite."""

from __future__ import annotations

import importlib.util

import pytest

# Import here, before any test, what a pytester in-process run may import first: pytester
# removes the modules an inner run imported when it ends, and scipy's compiled modules
# cannot be loaded a second time in one process ("cannot load module more than once per
# process"), so a later test of ours that imports scipy would fail, depending on order.
if importlib.util.find_spec("scipy") is not None:
    import scipy.stats  # noqa: F401


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
