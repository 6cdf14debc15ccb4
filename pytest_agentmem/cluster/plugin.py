"""The load cluster's plugin object: the cluster of the run, its end, and what it refuses.

:class:`ClusterPlugin` (registered as ``agentmem-cluster`` when
``--agentmem-load-cluster`` is not ``local``) holds the run's
:class:`~.ray_cluster.RayCluster`, connected on the first
``perf.run(processes=N)`` and shut down when pytest ends (Ctrl-C and SIGTERM
included: the services plugin turns SIGTERM into KeyboardInterrupt, and an
``atexit`` hook is the last resort), so nothing of a local Ray cluster outlives
the run (A/B mode refuses a cluster: :func:`pytest_agentmem.config.refuse_compare_on_cluster`).
:func:`check_services_reachable` refuses a cluster run whose test
uses services on this machine's loopback while the cluster has nodes on other
machines.
"""

from __future__ import annotations

import atexit
from typing import Any
from urllib.parse import urlsplit

import pytest

from ..closure import fixture_closure
from ..config import Settings
from ..errors import ConfigurationError
from .ray_cluster import RayCluster

#: The run's services, as fixtures (a test whose closure holds one uses it).
_SERVICE_FIXTURES = {"postgres": ("agentmem_postgres", "--agentmem-postgres-url"),
                     "redis": ("agentmem_redis", "--agentmem-redis-url")}


class ClusterPlugin:
    """The run's load cluster (registered as ``agentmem-cluster``)."""

    NAME = "agentmem-cluster"

    def __init__(self, settings: Settings) -> None:
        self.cluster = RayCluster(settings.load_cluster, timeout=float(settings.service_timeout))
        atexit.register(self.cluster.shutdown)

    def pytest_report_header(self, config: pytest.Config) -> str:
        started = " (started on first use, stopped at the end)" if self.cluster.local else ""
        return f"agentmem: perf.run(processes=N) load workers on the {self.cluster.describe()}{started}"

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.cluster.shutdown()
        atexit.unregister(self.cluster.shutdown)


def cluster_of(config: pytest.Config) -> RayCluster | None:
    """The run's load cluster, or None when load workers run on this machine (``local``)."""
    plugin = config.pluginmanager.get_plugin(ClusterPlugin.NAME)
    return plugin.cluster if isinstance(plugin, ClusterPlugin) else None


def check_services_reachable(item: pytest.Item, cluster: RayCluster, settings: Settings,
                             services: Any) -> None:
    """A ConfigurationError when ``item`` uses a loopback service and the cluster has remote nodes."""
    names = fixture_closure(item)
    used = [svc for svc, (fixture, _) in _SERVICE_FIXTURES.items() if fixture in names]
    if not used:
        return
    remote = cluster.remote_nodes()
    if not remote:
        return
    bad = []
    for svc in used:
        running = services.running.get(svc) if services is not None else None
        url = running.url if running is not None else (settings.postgres_url if svc == "postgres"
                                                       else settings.redis_url)
        host = urlsplit(url).hostname if url else "127.0.0.1"
        if host is None or host in ("localhost", "::1") or host.startswith("127."):
            bad.append(svc)
    if bad:
        hosts = ", ".join(sorted({n.hostname or n.ip for n in remote}))
        flags = " / ".join(_SERVICE_FIXTURES[svc][1] for svc in bad)
        raise ConfigurationError(
            f"perf.run(processes=N) on the {cluster.describe()}: {', '.join(bad)} run on this machine's "
            f"loopback address, which the workers on other nodes ({hosts}) cannot reach; point the run at "
            f"servers they can reach with {flags} (or run with --agentmem-load-cluster local)")


__all__ = ["ClusterPlugin", "check_services_reachable", "cluster_of"]
