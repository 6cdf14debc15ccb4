"""The load worker that runs on a Ray node: an async actor with a load loop of its own.

Ray runs an async actor's methods on an event loop of Ray's; the worker runs
its operations on another one, a uvloop (when installed) in a thread of its
own, so that the operations and their clients never share a loop with Ray's
RPC and :meth:`LoadWorker.progress` answers while a share is measured. The
methods, in the order the coordinator calls them: :meth:`hello` (says where
the worker runs), :meth:`open` (build the op's clients), :meth:`measure` (one share of the run:
:func:`pytest_agentmem.load.workers.measure_share`), :meth:`close`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from concurrent.futures import Future
from typing import Any

from ..load import histogram as hdr
from ..load.loops import new_fast_loop
from ..load.spec import LoadSpec, Op
from ..load.worker_op import WorkerInfo, close_op, open_op
from ..load.workers import measure_share


class LoadWorker:
    """One load worker (used as a Ray actor class: ``ray.remote(LoadWorker)``)."""

    def __init__(self) -> None:
        self._op: Op | None = None
        self._loop = new_fast_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="agentmem-load-loop",
                                        daemon=True)
        self._thread.start()
        self._tick: dict[str, float] = {}
        self._state = "started"

    def _on_tick(self, elapsed: float, qps: float, p95: float, errors: int, ops: int) -> None:
        self._tick = {"elapsed_s": elapsed, "qps": qps, "p95_ms": p95, "errors": errors, "ops": ops,
                      "at": time.time()}

    async def _in_load_loop(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return await asyncio.wrap_future(future)

    async def hello(self, index: int) -> dict[str, Any]:
        """Where this worker runs (node id, host, address, pid, log files)."""
        import ray

        hdr.prepare()
        return {"index": index, "node": ray.get_runtime_context().get_node_id(),
                "host": socket.gethostname(), "ip": ray.util.get_node_ip_address(),
                "pid": os.getpid(), "logs": _log_paths()}

    async def open(self, op: Op, index: int, count: int) -> None:
        """Build the op's clients in this worker (a WorkerOp's setup)."""
        import ray

        node = ray.get_runtime_context().get_node_id()
        self._op = op
        self._tick = {}
        self._state = "opening"
        await self._in_load_loop(open_op(op, WorkerInfo(index=index, count=count, node=node,
                                                        host=socket.gethostname())))
        self._state = "open"

    async def measure(self, spec: LoadSpec) -> dict[str, Any]:
        """Measure this worker's share (started by the coordinator when every worker is open)."""
        assert self._op is not None, "open() first"
        self._state = "measuring"
        part = await self._in_load_loop(measure_share(self._op, spec, on_tick=self._on_tick))
        self._state = "measured"
        return dict(part)

    async def progress(self) -> dict[str, Any]:
        """The worker's state and its last second's figures (answered while it measures)."""
        return {"state": self._state, **self._tick}

    async def close(self) -> Any:
        """Tear the op's clients down; return what its teardown returned."""
        if self._op is None:
            return None
        self._state = "closing"
        try:
            return await self._in_load_loop(close_op(self._op))
        finally:
            self._op = None
            self._state = "closed"


def _log_paths() -> list[str]:
    """Where this process's stderr and stdout go (Ray's worker log files)."""
    paths = []
    for fd in (2, 1):
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if path.startswith("/") and path not in paths:
            paths.append(path)
    return paths


__all__ = ["LoadWorker"]
