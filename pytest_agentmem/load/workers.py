"""``processes=N``: a run's users (closed loop) or schedule (open loop) spread over N workers.

Workers are started with ``spawn`` (a clean interpreter: no inherited event
loop, sockets or threads), open their operation (:class:`~.worker_op.WorkerOp`
builds its clients once in each worker), wait at a barrier until all are ready
so their measured phases overlap, run their share (:func:`share_specs`) on their
own event loop (uvloop when installed), and send back their histogram in the
standard encoding with their counters; the parent merges them exactly
(:func:`merge_parts`). ``op`` must be picklable - a module-level async function,
a ``functools.partial`` of one or a ``WorkerOp`` of such - importable by a fresh
interpreter, and must open its own connections inside the worker (fixtures of
the test process do not cross process boundaries); :func:`.spec.validate`
checks that it pickles. The same split, per-worker measurement and merge serve
the Ray cluster's workers (:mod:`pytest_agentmem.cluster`).

Closed loop: worker ``k`` of ``n`` runs its share of the users, of ``total``
and of ``warmup``. Open loop at ``R`` ops/s: operation ``j`` of the whole
schedule is due at ``j / R``; worker ``k`` takes the operations ``j = k, k + n,
k + 2n, ...``, that is rate ``R / n`` starting ``k / R`` in
(``LoadSpec.schedule_offset_s``), so the union of the shares is the intended
schedule, and a cap on operations in flight (``concurrency``) is split too.
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
from .result import LoadResult, merge_errors, merge_missed
from .runner import TickCallback, loop_name, run_in_process
from .spec import LoadSpec, Op
from .worker_op import WorkerInfo, close_op, open_op

_BARRIER: Any = None
_BARRIER_TIMEOUT_S = 120.0


def _init_worker(barrier: Any) -> None:
    global _BARRIER
    _BARRIER = barrier


def _shares(amount: int, parts: int) -> list[int]:
    base, extra = divmod(amount, parts)
    return [base + (1 if k < extra else 0) for k in range(parts)]


def share_specs(spec: LoadSpec, parts: int) -> list[LoadSpec]:
    """The shares of ``spec`` for ``parts`` workers (see the module docstring)."""
    n = int(parts)
    totals = _shares(spec.total, n) if spec.total is not None else [None] * n
    warmups = _shares(spec.warmup, n)
    if spec.rate is None:
        users = _shares(int(spec.concurrency or 1), n)
        return [replace(spec, concurrency=users[k], total=totals[k], warmup=warmups[k], processes=None)
                for k in range(n)]
    caps = _shares(spec.concurrency, n) if spec.concurrency is not None else [None] * n
    return [replace(spec, rate=spec.rate / n, concurrency=caps[k], total=totals[k], warmup=warmups[k],
                    processes=None, schedule_offset_s=k / spec.rate)
            for k in range(n)]


async def measure_share(op: Op, spec: LoadSpec, *, on_tick: TickCallback | None = None) -> dict[str, Any]:
    """Run one worker's share on this event loop; return its figures as plain, picklable data."""
    import psutil

    result = await run_in_process(op, spec, on_tick=on_tick)
    return {
        "histogram": hdr.encode(result.histogram), "ops": result.ops, "errors": result.errors,
        "timeouts": result.timeouts, "cancelled": result.cancelled, "duration_s": result.duration_s,
        "errors_by_type": result.errors_by_type, "timeline": result.timeline,
        "missed_schedule": result.missed_schedule,
        "cpu_s": result.resources.get("process_cpu_s", 0.0),
        "rss_max": psutil.Process().memory_info().rss, "loop": loop_name(),
    }


def _worker_run(op: Op, spec: LoadSpec, index: int, count: int) -> dict[str, Any]:
    """Run one share in this worker process; return picklable figures."""
    runner = asyncio.Runner(loop_factory=new_fast_loop) if hasattr(asyncio, "Runner") else None

    async def main() -> dict[str, Any]:
        await open_op(op, WorkerInfo(index=index, count=count))
        try:
            if _BARRIER is not None:
                await asyncio.get_running_loop().run_in_executor(None, _BARRIER.wait, _BARRIER_TIMEOUT_S)
            part = await measure_share(op, spec)
        finally:
            returned = await close_op(op)
        part["returned"] = returned
        return part

    if runner is not None:
        with runner:
            return runner.run(main())
    loop_obj = new_fast_loop()  # pragma: no cover - Python 3.10
    try:
        return loop_obj.run_until_complete(main())
    finally:
        loop_obj.close()


async def run_processes(op: Op, spec: LoadSpec, *,
                        service_pids: Callable[[], Any] | None = None) -> LoadResult:
    """Run ``spec`` with its users (or schedule) spread over ``spec.processes`` workers."""
    n = int(spec.processes or 1)
    shares = share_specs(spec, n)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(n)
    sampler = ResourceSampler(service_pids)
    pool = ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_init_worker,
                               initargs=(barrier,))
    try:
        futures = [pool.submit(_worker_run, op, shares[k], k, n) for k in range(n)]
        sampler.start()
        sampling = asyncio.get_running_loop().create_task(_sample(sampler))
        try:
            parts = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        finally:
            sampling.cancel()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return merge_parts(parts, spec, sampler, placement={
        "backend": "processes", "workers": n, "nodes": {_host(): n}})


def _host() -> str:
    import socket

    return socket.gethostname()


async def _sample(sampler: ResourceSampler) -> None:
    while True:
        await asyncio.sleep(1.0)
        sampler.sample()


def merge_parts(parts: list[dict[str, Any]], spec: LoadSpec, sampler: ResourceSampler, *,
                placement: dict[str, Any] | None = None) -> LoadResult:
    """One result of the workers' figures: histograms, counts, errors, timelines and CPU summed exactly."""
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
        concurrency=spec.concurrency, rate=spec.rate, warmup_ops=spec.warmup, mode=spec.mode,
        processes=len(parts), timeline=timeline,
        missed_schedule=merge_missed([p.get("missed_schedule") or {} for p in parts]),
        placement=dict(placement or {}), worker_returns=[p.get("returned") for p in parts],
        errors_by_type=merge_errors(p["errors_by_type"] for p in parts),
        resources=resources, loop=parts[0]["loop"], think_s=spec.think,
    )


__all__ = ["measure_share", "merge_parts", "run_processes", "share_specs"]
