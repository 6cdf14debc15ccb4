"""``processes=N``: closed-loop users spread over N worker processes.

Workers are started with ``spawn`` (a clean interpreter: no inherited event
loop, sockets or threads), wait at a barrier until all are ready so their
measured phases overlap, run their share of the users, total and warm-up on
their own event loop (uvloop when installed), and send back their histogram in
the standard encoding with their counters; the parent merges them exactly.
``op`` must be picklable - a module-level async function or a
``functools.partial`` of one, importable by a fresh interpreter - and must open
its own connections inside the worker (fixtures of the test process do not
cross process boundaries); :func:`.spec.validate` checks that it pickles.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

from . import histogram as hdr
from .loops import new_fast_loop
from .resources import ResourceSampler
from .result import LoadResult, merge_errors
from .runner import loop_name, run_in_process
from .spec import LoadSpec, Op

_BARRIER: Any = None
_BARRIER_TIMEOUT_S = 120.0


def _init_worker(barrier: Any) -> None:
    global _BARRIER
    _BARRIER = barrier


def _shares(amount: int, parts: int) -> list[int]:
    base, extra = divmod(amount, parts)
    return [base + (1 if k < extra else 0) for k in range(parts)]


def _worker_run(op: Op, spec: LoadSpec) -> dict[str, Any]:
    """Run one share in this worker process; return picklable figures."""
    import psutil

    runner = asyncio.Runner(loop_factory=new_fast_loop) if hasattr(asyncio, "Runner") else None
    if _BARRIER is not None:
        _BARRIER.wait(_BARRIER_TIMEOUT_S)

    async def main() -> tuple[LoadResult, str]:
        result = await run_in_process(op, spec)
        return result, loop_name()

    if runner is not None:
        with runner:
            result, loop = runner.run(main())
    else:  # pragma: no cover - Python 3.10
        loop_obj = new_fast_loop()
        try:
            result, loop = loop_obj.run_until_complete(main())
        finally:
            loop_obj.close()
    return {
        "histogram": hdr.encode(result.histogram), "ops": result.ops, "errors": result.errors,
        "timeouts": result.timeouts, "cancelled": result.cancelled, "duration_s": result.duration_s,
        "errors_by_type": result.errors_by_type, "timeline": result.timeline,
        "cpu_s": result.resources.get("process_cpu_s", 0.0),
        "rss_max": psutil.Process().memory_info().rss, "loop": loop,
    }


async def run_processes(op: Op, spec: LoadSpec, *,
                        service_pids: Callable[[], Any] | None = None) -> LoadResult:
    """Run ``spec`` with its users spread over ``spec.processes`` workers."""
    n = int(spec.processes or 1)
    users = _shares(int(spec.concurrency or 1), n)
    totals = _shares(spec.total, n) if spec.total is not None else [None] * n
    warmups = _shares(spec.warmup, n)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(n)
    sampler = ResourceSampler(service_pids)
    pool = ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_init_worker,
                               initargs=(barrier,))
    try:
        futures = [pool.submit(_worker_run, op,
                               replace(spec, concurrency=users[k], total=totals[k],
                                       warmup=warmups[k], processes=None))
                   for k in range(n)]
        sampler.start()
        sampling = asyncio.get_running_loop().create_task(_sample(sampler))
        try:
            parts = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        finally:
            sampling.cancel()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return _merge(parts, spec, sampler)


async def _sample(sampler: ResourceSampler) -> None:
    while True:
        await asyncio.sleep(1.0)
        sampler.sample()


def _merge(parts: list[dict[str, Any]], spec: LoadSpec, sampler: ResourceSampler) -> LoadResult:
    sampler.extra_cpu_s = sum(p["cpu_s"] for p in parts)
    sampler.extra_rss_max = max(p["rss_max"] for p in parts)
    resources = sampler.stop()
    hist = hdr.merge(hdr.decode(p["histogram"]) for p in parts)
    duration = max(p["duration_s"] for p in parts)
    timeline: list[dict[str, float]] = []
    for k in range(max(len(p["timeline"]) for p in parts)):
        entries = [p["timeline"][k] for p in parts if k < len(p["timeline"])]
        timeline.append({
            "t": max(e["t"] for e in entries), "dt": max(e["dt"] for e in entries),
            "ops": sum(e["ops"] for e in entries), "errors": sum(e["errors"] for e in entries),
            # the slowest worker's p95 (per-second histograms are not shipped)
            "p95_ms": max(e["p95_ms"] for e in entries),
        })
    return LoadResult.build(
        histogram=hist, ops=sum(p["ops"] for p in parts), errors=sum(p["errors"] for p in parts),
        duration_s=duration, name=spec.name, timeouts=sum(p["timeouts"] for p in parts),
        cancelled=sum(p.get("cancelled", 0) for p in parts),
        concurrency=spec.concurrency, rate=None, warmup_ops=spec.warmup, mode="closed",
        processes=len(parts), timeline=timeline,
        errors_by_type=merge_errors(p["errors_by_type"] for p in parts),
        resources=resources, loop=parts[0]["loop"], think_s=spec.think,
    )


__all__ = ["run_processes"]
