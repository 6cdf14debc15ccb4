"""The load engine's entry point: one run, in this process or over worker processes.

:func:`run_load` runs on the caller's event loop (:mod:`.runner`) unless the
spec asks for ``processes=N`` > 1, which spreads the closed-loop users over N
worker processes (:mod:`.workers`). Both return a :class:`~.result.LoadResult`
measured the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .result import LoadResult
from .runner import TickCallback, run_in_process
from .spec import LoadSpec, Op
from .workers import run_processes


async def run_load(op: Op, spec: LoadSpec, *, on_tick: TickCallback | None = None,
                   service_pids: Callable[[], Any] | None = None) -> LoadResult:
    """Run ``op`` as ``spec`` (from :func:`~.spec.validate`) says and return what was measured.

    ``on_tick`` is called about once a second (in-process runs); ``service_pids``
    lists the service processes whose CPU and memory are recorded.
    """
    if spec.processes and spec.processes > 1:
        return await run_processes(op, spec, service_pids=service_pids)
    return await run_in_process(op, spec, on_tick=on_tick, service_pids=service_pids)


__all__ = ["run_load"]
