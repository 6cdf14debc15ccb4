"""The load engine's entry point: one run, in this process, over worker processes or a cluster.

:func:`run_load` runs on the caller's event loop (:mod:`.runner`) unless the
spec asks for ``processes=N`` > 1, which spreads the users (closed loop) or the
schedule (open loop) over N workers: processes of this machine
(:mod:`.workers`) or, given a ``cluster`` (``--agentmem-load-cluster``), Ray
actors spread over its nodes (:mod:`pytest_agentmem.cluster`). All return a
:class:`~.result.LoadResult` measured the same way. A
:class:`~.worker_op.WorkerOp` is opened once per worker (here: once per run).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .result import LoadResult
from .runner import TickCallback, run_in_process
from .spec import LoadSpec, Op
from .worker_op import close_op, open_op
from .workers import run_processes


async def run_load(op: Op, spec: LoadSpec, *, on_tick: TickCallback | None = None,
                   service_pids: Callable[[], Any] | None = None,
                   cluster: Any = None) -> LoadResult:
    """Run ``op`` as ``spec`` (from :func:`~.spec.validate`) says and return what was measured.

    ``on_tick`` is called about once a second (in-process and cluster runs);
    ``service_pids`` lists the service processes whose CPU and memory are
    recorded; ``cluster`` (a :class:`pytest_agentmem.cluster.ray_cluster.RayCluster`)
    runs the workers of ``processes=N`` there instead of on this machine.
    """
    if spec.processes and spec.processes > 1:
        if cluster is not None:
            from ..cluster.coordinator import run_on_cluster

            return await run_on_cluster(cluster, op, spec, on_tick=on_tick, service_pids=service_pids)
        return await run_processes(op, spec, service_pids=service_pids)
    await open_op(op)
    returned = None
    try:
        result = await run_in_process(op, spec, on_tick=on_tick, service_pids=service_pids)
    finally:
        returned = await close_op(op)
    if returned is not None:
        result.worker_returns = [returned]
    return result


__all__ = ["run_load"]
