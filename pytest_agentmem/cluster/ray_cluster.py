"""The Ray cluster a run's load workers go to: a local one we start, or one that runs.

:class:`RayCluster` connects lazily (on the first ``perf.run(processes=N)``),
once per pytest process:

- ``ray:N`` starts a local Ray cluster of ``N`` nodes on this machine (a head
  and ``N - 1`` added nodes, ``ray.cluster_utils.Cluster``), small object stores,
  no dashboard; :meth:`RayCluster.shutdown` (at the end of the session, Ctrl-C
  included) stops every process of it and removes its session folder (logs).
- an address (``auto``, ``ray://host:port``, ``host:port``) joins a cluster that
  runs; it is left running. A cluster that cannot be reached is a
  :class:`ClusterError` within the service timeout: a TCP probe first, then
  ``ray.init`` in a thread with the same deadline.

The workers import ``pytest_agentmem`` and the op's modules: on a local cluster
they get this process's ``sys.path`` (``PYTHONPATH`` of the job's runtime
environment); on a remote cluster those must be installed on the nodes, except
for the op's own test module, which :mod:`.coordinator` ships by value.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from dataclasses import dataclass
from typing import Any

from ..errors import AgentmemError

#: Object store of each node of a local cluster (bytes): the workers ship only figures.
LOCAL_OBJECT_STORE = 100 * 1024 * 1024


class ClusterError(AgentmemError):
    """The load cluster cannot be reached or started, or a worker failed on it."""


@dataclass(frozen=True)
class NodeInfo:
    """A node of the cluster as Ray lists it."""

    node_id: str
    ip: str
    hostname: str
    alive: bool

    @property
    def short(self) -> str:
        return self.node_id[:8]


def is_local_target(target: str) -> bool:
    """Whether ``target`` (a parsed --agentmem-load-cluster) is a local cluster we start."""
    return target.startswith("ray:") and not target.startswith("ray://")


class RayCluster:
    """One pytest process's connection to its load cluster (see the module docstring)."""

    def __init__(self, target: str, *, timeout: float = 60.0) -> None:
        self.target = target
        self.timeout = float(timeout)
        self._lock = threading.RLock()
        self._local: Any = None  # ray.cluster_utils.Cluster when we started one
        self._session_dir = ""  # its logs (removed with it)
        self._connected = False
        self.address = ""

    # ------------------------------------------------------------------ lifecycle

    def connect(self) -> None:
        """Start or join the cluster (once); a :class:`ClusterError` saying why not."""
        with self._lock:
            if self._connected:
                return
            import ray

            if not is_local_target(self.target):
                self._check_reachable(self.target)  # an unreachable address says so first
            if ray.is_initialized():
                raise ClusterError("Ray is already initialised in this process (by the test's own "
                                   "code?); --agentmem-load-cluster needs to connect it itself")
            previous = _sigterm_handler()
            try:
                if is_local_target(self.target):
                    self._start_local(int(self.target.split(":", 1)[1]))
                else:
                    self._join(self.target)
            finally:
                # Ray installs a SIGTERM handler that exits on the spot; the run's own (the
                # services plugin turns SIGTERM into KeyboardInterrupt, so pytest unwinds and
                # stops the cluster and the servers) stays in charge.
                _restore_sigterm(previous)
            self._connected = True

    def _runtime_env(self) -> dict[str, Any]:
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        return {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}

    def _start_local(self, nodes: int) -> None:
        import ray
        from ray.cluster_utils import Cluster

        try:
            cluster = Cluster(initialize_head=True, head_node_args={
                "num_cpus": 1, "include_dashboard": False, "object_store_memory": LOCAL_OBJECT_STORE})
            self._local = cluster
            for _ in range(nodes - 1):
                cluster.add_node(num_cpus=1, object_store_memory=LOCAL_OBJECT_STORE)
            cluster.wait_for_nodes(timeout=self.timeout)
            self._session_dir = cluster.head_node.get_session_dir_path()
            ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.WARNING,
                     runtime_env=self._runtime_env())
        except Exception as exc:
            self.shutdown()
            raise ClusterError(f"could not start a local Ray cluster of {nodes} node(s): "
                               f"{type(exc).__name__}: {exc}") from exc
        self.address = cluster.address

    def _check_reachable(self, address: str) -> None:
        """A TCP probe of the head's address (not ``auto``): a clear error within the timeout."""
        if address == "auto":
            return
        hostport = address.split("://", 1)[-1]
        host, _, port = hostport.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=self.timeout).close()
        except OSError as exc:
            raise ClusterError(
                f"the Ray cluster at {address} cannot be reached: {exc} (waited at most "
                f"{self.timeout:g} s, --agentmem-service-timeout); check the address given to "
                "--agentmem-load-cluster and that the head runs (ray start --head)") from None

    def _join(self, address: str) -> None:
        """Join the cluster at ``address`` (:meth:`connect` has probed that it answers)."""
        import ray

        outcome: dict[str, Any] = {}

        def init() -> None:
            try:
                runtime_env = self._runtime_env() if address == "auto" else None
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING,
                         runtime_env=runtime_env)
                outcome["ok"] = True
            except BaseException as exc:  # noqa: BLE001 - reported below
                outcome["error"] = exc

        thread = threading.Thread(target=init, name="agentmem-ray-init", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            raise ClusterError(f"the Ray cluster at {address} did not accept this driver within "
                               f"{self.timeout:g} s (--agentmem-service-timeout)")
        if "error" in outcome:
            error = outcome["error"]
            raise ClusterError(f"could not join the Ray cluster at {address}: "
                               f"{type(error).__name__}: {str(error)[:500]}") from None
        self.address = address

    def shutdown(self) -> None:
        """Disconnect; stop the local cluster if we started one (every process of it)."""
        with self._lock:
            self.__dict__.pop("_pool", None)  # the coordinator's workers die with the connection
            try:
                import ray

                if ray.is_initialized():
                    ray.shutdown()
            except Exception:  # noqa: BLE001 - shutting down anyway
                pass
            if self._local is not None:
                local, self._local = self._local, None
                try:
                    local.shutdown()
                except Exception:  # noqa: BLE001
                    pass
                _remove_session(self._session_dir)
            self._connected = False

    # ------------------------------------------------------------------ queries

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def local(self) -> bool:
        """Whether this is a local cluster the plugin started."""
        return is_local_target(self.target)

    def nodes(self) -> list[NodeInfo]:
        """The cluster's nodes that are alive."""
        import ray

        return [NodeInfo(node_id=n["NodeID"], ip=n.get("NodeManagerAddress", ""),
                         hostname=n.get("NodeManagerHostname", ""), alive=bool(n.get("Alive")))
                for n in ray.nodes() if n.get("Alive")]

    def remote_nodes(self) -> list[NodeInfo]:
        """Alive nodes on another machine than this process (by IP address)."""
        return remote_of(self.nodes(), local_addresses())

    def describe(self) -> str:
        kind = f"local Ray cluster of {self.target.split(':')[1]} node(s)" if self.local else "Ray cluster"
        return f"{kind} at {self.address or self.target}"


def _remove_session(path: str) -> None:
    """Remove a stopped local cluster's session folder (its logs) and Ray's link to it."""
    import shutil

    if not path or not os.path.isdir(path):
        return
    shutil.rmtree(path, ignore_errors=True)
    latest = os.path.join(os.path.dirname(path), "session_latest")
    try:
        if os.path.islink(latest) and os.path.realpath(latest) == os.path.realpath(path):
            os.unlink(latest)
    except OSError:
        pass


def _sigterm_handler() -> Any:
    import signal

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.getsignal(signal.SIGTERM)


def _restore_sigterm(previous: Any) -> None:
    import signal

    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


def local_addresses() -> set[str]:
    """The IP addresses of this machine (loopback included)."""
    found = {"127.0.0.1", "::1", "localhost"}
    try:
        import psutil

        for addrs in psutil.net_if_addrs().values():
            found.update(a.address.split("%")[0] for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6))
    except Exception:  # noqa: BLE001 - the loopback set is still right
        pass
    return found


def remote_of(nodes: list[NodeInfo], local: set[str]) -> list[NodeInfo]:
    """The nodes of ``nodes`` whose address is not one of ``local``."""
    return [n for n in nodes if n.ip not in local]


__all__ = ["ClusterError", "NodeInfo", "RayCluster", "is_local_target", "local_addresses", "remote_of"]
