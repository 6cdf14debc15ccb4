"""The load runner: closed loop (virtual users) and open loop (fixed arrival rate).

``op`` is an async callable taking the operation's index (0, 1, 2, ...; warm-up
operations take the first indices). Nothing here sleeps in place of work: the
runner only starts operations, times them and counts what happened.

Closed loop (``rate=None``): ``concurrency`` virtual users, each a task running
operations back to back; latency is from the call to the return of ``op``.
With ``think=T`` each user thinks before each of its operations (the first
included) for an exponentially distributed time of mean ``T`` seconds, not
counted in any latency: ``N`` users then offer about ``N / (T + latency)``
operations per second from the start (an exponential first wait is the
steady state: no burst of ``N`` operations at once), and a user in the
middle of its thinking when the run ends is simply stopped.

Open loop (``rate=R``): operation ``k`` is due at ``start + k / R`` whatever
happened before, launched as its own task, and its latency is measured from
that *intended* start (as wrk2 does), so a stall of the system - or of the
event loop - shows in the tail instead of being hidden by the runner waiting
(coordinated omission). ``concurrency`` caps the operations in flight; an
operation held back by the cap still counts its latency from its intended
start. A launch later than ``missed_schedule["threshold_ms"]`` is counted in
``missed_schedule``: the runner (or whatever blocked the event loop) could not
keep up with the schedule; ``capped`` counts the launches the cap delayed.

Both: the first ``warmup`` operations are run in a phase of their own and
excluded; the measured phase ends after ``duration`` seconds (no new operation
starts; those in flight finish and count) or after ``total`` operations. A
run with a ``duration`` ends on time, always: the operations still in flight
get a drain period (:func:`drain_grace`: the op ``timeout`` plus 1 s when one
is given, else ``max(1 s, 10 x p99 so far)`` capped at
:data:`MAX_DRAIN_GRACE_S`), after which they are cancelled and counted as
errors of type ``CancelledAtEndOfRun`` (``cancelled`` in the result). An
operation that swallows the cancellation is waited for at most
:data:`CANCEL_WAIT_S` more and then abandoned (a closed-loop user still
running is counted as one cancelled operation). A run with only ``total``
(no ``duration``) and no ``timeout`` has no time to end on: give a
``timeout``. An
operation running longer than ``timeout`` is cancelled and counted as a timeout
and an error; an exception is counted by type with a few sample messages and
never stops the run. Latencies are recorded as raw nanoseconds on the hot path
and folded into the HDR histogram once a second (see :mod:`.histogram`).

This module runs in one event loop; ``processes=N`` (spreading closed-loop
users over worker processes) is :mod:`.workers`, and :func:`.engine.run_load`
chooses. The run's parameters are checked in :mod:`.spec`.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from . import histogram as hdr
from .resources import ResourceSampler
from .result import (
    CANCELLED_AT_END,
    MAX_ERROR_SAMPLES,
    LoadResult,
)
from .spec import LoadSpec, Op

#: Called about once a second: (elapsed_s, ops_per_s, p95_ms, errors, ops).
TickCallback = Callable[[float, float, float, int, int], None]

_clock = time.perf_counter_ns
_HAS_TIMEOUT = sys.version_info >= (3, 11)  # asyncio.timeout()
_YIELD_EVERY = 256  # a user yields to the loop after this many ops that never suspended
_LAUNCH_BATCH = 512  # open loop: launches between two yields when behind schedule
_SAMPLE_CHARS = 300
_USER_TASK = "agentmem-user-"
#: Upper bound of the drain period without an op timeout (seconds).
MAX_DRAIN_GRACE_S = 10.0
#: Lower bound of the drain period without an op timeout (seconds).
MIN_DRAIN_GRACE_S = 1.0
#: Slack added to the op timeout for the drain period (seconds).
TIMEOUT_DRAIN_SLACK_S = 1.0
#: How long cancelled operations are given to finish before they are abandoned.
CANCEL_WAIT_S = 1.0


# --------------------------------------------------------------------------- one phase


class _Phase:
    """The counters of one phase (warm-up or measured), shared by the runner's tasks."""

    __slots__ = ("latencies", "errors", "timeouts", "cancelled", "cut", "by_type", "next_index",
                 "limit", "stopping", "end_ns", "hist", "intervals", "_last_errors", "start_ns", "_last_tick_ns",
                 "missed", "missed_lag_ns", "missed_max_ns", "capped", "think", "thinking", "draw")

    def __init__(self, first_index: int, limit: int) -> None:
        self.latencies: list[int] = []
        self.errors = 0
        self.timeouts = 0
        self.cancelled = 0
        self.cut = False  # set when the run's end cancels the operations still in flight
        self.by_type: dict[str, dict[str, Any]] = {}
        self.next_index = itertools.count(first_index).__next__
        self.limit = limit
        self.stopping = False
        self.end_ns = math.inf  # a closed-loop user starts no operation at or after this clock reading
        self.hist = hdr.new_histogram()
        self.intervals: list[tuple[float, float, int, int, np.ndarray, np.ndarray]] = []
        self._last_errors = 0
        self.start_ns = 0
        self._last_tick_ns = 0
        self.missed = 0
        self.missed_lag_ns = 0
        self.missed_max_ns = 0
        self.capped = 0
        self.think: float | None = None  # closed loop: users' mean think time (s)
        self.thinking: set[asyncio.Task[Any]] = set()  # users thinking right now
        self.draw = random.Random().expovariate

    def stop(self) -> None:
        """No new operation starts; users that are thinking stop now."""
        self.stopping = True
        for task in list(self.thinking):
            task.cancel()
        self.thinking.clear()

    async def think_once(self, mean: float) -> None:
        """One user's think time: exponential with mean ``mean`` seconds (ended by :meth:`stop`)."""
        task = asyncio.current_task()
        assert task is not None
        self.thinking.add(task)
        try:
            await asyncio.sleep(self.draw(1.0 / mean))
        finally:
            self.thinking.discard(task)

    def fail(self, exc: BaseException | None, *, timed_out: bool = False,
             cut: bool = False) -> None:
        self.errors += 1
        if cut:
            self.cancelled += 1
            kind, message = CANCELLED_AT_END, "still running when the run ended: cancelled"
        elif timed_out:
            self.timeouts += 1
            kind, message = "Timeout", "cancelled after the run's timeout"
        else:
            cls = type(exc)
            kind = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
            message = str(exc)[:_SAMPLE_CHARS] or repr(exc)[:_SAMPLE_CHARS]
        slot = self.by_type.get(kind)
        if slot is None:
            slot = self.by_type[kind] = {"count": 0, "samples": []}
        slot["count"] += 1
        if len(slot["samples"]) < MAX_ERROR_SAMPLES and message not in slot["samples"]:
            slot["samples"].append(message)

    def begin(self, duration: float | None = None) -> None:
        """Start the phase's clock; with a ``duration``, users start no operation after it."""
        self.start_ns = self._last_tick_ns = _clock()
        if duration is not None:
            self.end_ns = self.start_ns + duration * 1e9

    def flush(self) -> tuple[float, int, float, int]:
        """Fold the latencies since the last flush into the histogram; close an interval.

        Returns (interval_s, ops, p95_ms, errors) of the interval.
        """
        chunk = self.latencies[:]
        del self.latencies[:]  # same list object: the users' bound append stays valid
        errors = self.errors - self._last_errors
        self._last_errors = self.errors
        now = _clock()
        idx, cnt = hdr.sparse_counts(chunk)
        hdr.add_sparse(self.hist, idx, cnt)
        t = (now - self.start_ns) / 1e9
        dt = (now - self._last_tick_ns) / 1e9
        self._last_tick_ns = now
        self.intervals.append((t, dt, len(chunk) + errors, errors, idx, cnt))
        return dt, len(chunk) + errors, _p95_ms(cnt, idx), errors

    @property
    def ops(self) -> int:
        return int(self.hist.get_total_count()) + len(self.latencies) + self.errors

    def missed_schedule(self, threshold_ns: float) -> dict[str, float]:
        return {
            "count": self.missed,
            "max_lag_ms": self.missed_max_ns / 1e6,
            "mean_lag_ms": self.missed_lag_ns / self.missed / 1e6 if self.missed else 0.0,
            "capped": self.capped,
            "threshold_ms": threshold_ns / 1e6,
        }


def _p95_ms(cnt: np.ndarray, idx: np.ndarray) -> float:
    return hdr.sparse_percentile_us(idx, cnt, 95.0) / 1000.0


def timeline_of(intervals: list[tuple[float, float, int, int, np.ndarray, np.ndarray]]) -> list[dict[str, float]]:
    """The per-second timeline entries of a phase's intervals."""
    return [{"t": round(t, 3), "dt": round(dt, 3), "ops": ops, "errors": errors,
             "p95_ms": _p95_ms(cnt, idx)}
            for t, dt, ops, errors, idx, cnt in intervals if dt > 0]


def _task_cancelling() -> bool:
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return True if cancelling is None else bool(cancelling())


# --------------------------------------------------------------------------- operations


async def _run_ops(phase: _Phase, op: Op, timeout: float | None, index: int = -1,
                   intended: int = 0) -> None:
    """Run operations and record each one's latency or failure: the one place that does.

    ``index < 0``: a closed-loop virtual user, operations back to back until the
    phase ends, each timed from its call. ``index >= 0``: the one open-loop
    operation ``index``, timed from its ``intended`` start. ``timeout``
    seconds cancels an operation (a timeout and an error). The closed loop's
    path without a timeout is the runner's hot path: one branch per operation
    more than a bare loop (see tests/bench/test_load_perf.py).
    """
    append = phase.latencies.append
    next_index = phase.next_index
    limit = phase.limit
    end_ns = phase.end_ns  # the users start after the phase began
    clock = _clock
    closed = index < 0
    think = phase.think if closed else None
    done = 0
    while True:
        if closed:
            if think is not None:
                await phase.think_once(think)
            if phase.stopping:
                return
            index = next_index()
            if index >= limit:
                phase.stop()
                return
            intended = clock()
            if intended >= end_ns:  # on time even when the ops never yield to the loop's timer
                phase.stop()
                return
        try:
            if timeout is None:
                await op(index)
            elif _HAS_TIMEOUT:
                deadline = asyncio.timeout(timeout)
                async with deadline:
                    await op(index)
            else:  # pragma: no cover - Python 3.10
                await asyncio.wait_for(op(index), timeout)
        except (TimeoutError, asyncio.TimeoutError) as exc:
            # a timeout when our deadline expired (3.10: wait_for raised it); else the op's own error
            phase.fail(exc, timed_out=timeout is not None and (not _HAS_TIMEOUT or deadline.expired()))
        except Exception as exc:  # noqa: BLE001 - an op's failure is a measurement
            phase.fail(exc)
        except asyncio.CancelledError as exc:
            if _task_cancelling():
                if phase.cut:
                    phase.fail(None, cut=True)
                raise
            phase.fail(exc)
        else:
            append(clock() - intended)
        if not closed:
            return
        done += 1
        if not done % _YIELD_EVERY:
            await asyncio.sleep(0)  # an op that never suspends must not starve the loop


# --------------------------------------------------------------------------- closed loop


async def _closed_phase(phase: _Phase, op: Op, spec: LoadSpec, *, measured: bool,
                        on_tick: TickCallback | None, sampler: ResourceSampler | None) -> float:
    """Run the users until the phase ends; return the phase's wall time in seconds."""
    loop = asyncio.get_running_loop()
    phase.think = spec.think
    users = [loop.create_task(_run_ops(phase, op, spec.timeout), name=f"{_USER_TASK}{k}")
             for k in range(spec.concurrency or 1)]
    return await _supervise(phase, users, spec, measured=measured, on_tick=on_tick, sampler=sampler)


async def _supervise(phase: _Phase, workers: list[asyncio.Task[Any]], spec: LoadSpec, *,
                     measured: bool, on_tick: TickCallback | None,
                     sampler: ResourceSampler | None) -> float:
    """Start the clock, end the phase on time, tick once a second, wait for the workers.

    With a ``duration`` the phase ends on time: the workers get the drain
    period of :func:`drain_grace` after the duration, then they are cancelled
    (each operation in flight counted as cancelled at the end of the run).
    """
    loop = asyncio.get_running_loop()
    phase.begin(spec.duration if measured and spec.rate is None else None)
    ticker = loop.create_task(_tick(phase, spec.tick_s, on_tick, sampler)) if measured else None
    try:
        if measured and spec.duration is not None:
            _, pending = await asyncio.wait(workers, timeout=spec.duration)
            phase.stop()
            if pending:
                _, pending = await asyncio.wait(pending, timeout=drain_grace(spec, phase))
            if pending:
                await _cut(phase, pending)
        else:
            await asyncio.wait(workers)
        for task in workers:  # a worker's own failure (not an op's) propagates
            if task.done() and not task.cancelled():
                task.result()
    finally:
        for task in workers:
            task.cancel()
        if ticker is not None:
            ticker.cancel()
            try:
                await ticker
            except asyncio.CancelledError:
                pass
    elapsed = (_clock() - phase.start_ns) / 1e9
    phase.flush()
    return elapsed


def drain_grace(spec: LoadSpec, phase: _Phase) -> float:
    """Seconds the operations in flight get to finish once the duration is over.

    The op ``timeout`` plus :data:`TIMEOUT_DRAIN_SLACK_S` when one is given (its
    own timeout ends each operation); otherwise ``max(1 s, 10 x p99 so far)``,
    capped at :data:`MAX_DRAIN_GRACE_S`.
    """
    if spec.timeout is not None:
        return spec.timeout + TIMEOUT_DRAIN_SLACK_S
    p99_s = 0.0
    if phase.hist.get_total_count():  # folded once a second; counts microseconds
        p99_s = phase.hist.get_value_at_percentile(99.0) / 1e6
    elif phase.latencies:  # less than a second in: the raw nanoseconds
        ordered = sorted(phase.latencies)
        p99_s = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] / 1e9
    return min(MAX_DRAIN_GRACE_S, max(MIN_DRAIN_GRACE_S, 10.0 * p99_s))


async def _cut(phase: _Phase, pending: set[asyncio.Task[Any]]) -> None:
    """Cancel the workers still running; their operations in flight count as cancelled."""
    phase.cut = True
    for task in pending:
        task.cancel()
    _, stuck = await asyncio.wait(pending, timeout=CANCEL_WAIT_S)
    for task in stuck:  # an op swallowed the cancellation: abandoned, counted once
        if task.get_name().startswith(_USER_TASK):
            phase.fail(None, cut=True)


async def _tick(phase: _Phase, tick_s: float, on_tick: TickCallback | None,
                sampler: ResourceSampler | None) -> None:
    next_at = phase.start_ns + tick_s * 1e9
    while True:
        await asyncio.sleep(max(0.0, (next_at - _clock()) / 1e9))
        next_at += tick_s * 1e9
        dt, ops, p95, _ = phase.flush()
        if sampler is not None:
            sampler.sample()
        if on_tick is not None:
            try:
                on_tick((_clock() - phase.start_ns) / 1e9, ops / dt if dt > 0 else 0.0, p95,
                        phase.errors, phase.ops)
            except Exception:  # noqa: BLE001 - a display problem must not stop a run
                on_tick = None


# --------------------------------------------------------------------------- open loop


async def _open_phase(phase: _Phase, op: Op, spec: LoadSpec, first_index: int, *, measured: bool,
                      on_tick: TickCallback | None, sampler: ResourceSampler | None) -> tuple[float, float]:
    """Launch ops on the schedule; return (wall time, missed-schedule threshold in ns)."""
    assert spec.rate is not None
    period_ns = 1e9 / spec.rate
    threshold_ns = max(1e6, 2 * period_ns)
    scheduler = asyncio.get_running_loop().create_task(
        _schedule(phase, op, spec, first_index, period_ns, threshold_ns,
                  spec.duration if measured else None))
    elapsed = await _supervise(phase, [scheduler], spec, measured=measured, on_tick=on_tick,
                               sampler=sampler)
    return elapsed, threshold_ns


async def _schedule(phase: _Phase, op: Op, spec: LoadSpec, first_index: int, period_ns: float,
                    threshold_ns: float, duration: float | None) -> None:
    loop = asyncio.get_running_loop()
    timeout = spec.timeout
    cap = spec.concurrency
    clock = _clock
    inflight = 0
    tasks: set[asyncio.Task[Any]] = set()
    slot: asyncio.Future[None] | None = None

    async def one(index: int, intended: int) -> None:
        nonlocal inflight, slot
        try:
            await _run_ops(phase, op, timeout, index, intended)
        finally:
            inflight -= 1
            if slot is not None and not slot.done():
                slot.set_result(None)

    start = phase.start_ns or clock()
    end_ns = start + duration * 1e9 if duration is not None else math.inf
    # a share of a schedule split over workers starts ``schedule_offset_s`` in (see workers.share_specs)
    start += int(spec.schedule_offset_s * 1e9)
    launched = 0
    try:
        while True:
            capped_batch = False
            batch = 0
            while True:
                index = first_index + launched
                if index >= phase.limit or phase.stopping:
                    return
                intended = start + int(launched * period_ns)
                if intended >= end_ns:
                    return
                now = clock()
                if intended > now or batch >= _LAUNCH_BATCH:
                    break
                lag = now - intended
                if lag > threshold_ns and not capped_batch:
                    phase.missed += 1
                    phase.missed_lag_ns += lag
                    phase.missed_max_ns = max(phase.missed_max_ns, lag)
                if cap is not None and inflight >= cap:
                    phase.capped += 1
                    capped_batch = True
                    while inflight >= cap:
                        slot = loop.create_future()
                        await slot
                    slot = None
                inflight += 1
                task = loop.create_task(one(index, intended))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                launched += 1
                batch += 1
            await asyncio.sleep(max(0.0, (intended - clock()) / 1e9))
    finally:
        # Drain: bounded by _supervise, which cancels this task after the drain
        # period; the cancellation reaches the operations through the gather.
        if tasks:
            try:
                await asyncio.gather(*list(tasks))
            finally:
                for task in list(tasks):
                    task.cancel()


# --------------------------------------------------------------------------- entry points


async def run_in_process(op: Op, spec: LoadSpec, *, on_tick: TickCallback | None = None,
                         service_pids: Callable[[], Any] | None = None) -> LoadResult:
    """Run ``op`` as ``spec`` says on this event loop and return what was measured.

    ``spec.processes`` is not looked at: :func:`pytest_agentmem.load.engine.run_load`
    chooses between this and the worker processes.
    """
    hdr.prepare()
    sampler = ResourceSampler(service_pids)
    if spec.warmup:
        warm = _Phase(0, spec.warmup)
        await _run_phase(warm, op, replace(spec, duration=None), 0, measured=False,
                         on_tick=None, sampler=None)
    limit = spec.warmup + spec.total if spec.total is not None else sys.maxsize
    phase = _Phase(spec.warmup, limit)
    sampler.start()
    elapsed, threshold_ns = await _run_phase(phase, op, spec, spec.warmup, measured=True,
                                             on_tick=on_tick, sampler=sampler)
    resources = sampler.stop()
    return _result_of(phase, spec, elapsed, threshold_ns, resources)


async def _run_phase(phase: _Phase, op: Op, spec: LoadSpec, first_index: int, *, measured: bool,
                     on_tick: TickCallback | None,
                     sampler: ResourceSampler | None) -> tuple[float, float]:
    if spec.rate is None:
        elapsed = await _closed_phase(phase, op, spec, measured=measured, on_tick=on_tick,
                                      sampler=sampler)
        return elapsed, 0.0
    return await _open_phase(phase, op, spec, first_index, measured=measured, on_tick=on_tick,
                             sampler=sampler)


def _result_of(phase: _Phase, spec: LoadSpec, elapsed: float, threshold_ns: float,
               resources: dict[str, float]) -> LoadResult:
    return LoadResult.build(
        histogram=phase.hist, ops=phase.ops, errors=phase.errors, duration_s=elapsed,
        name=spec.name, timeouts=phase.timeouts, cancelled=phase.cancelled, concurrency=spec.concurrency, rate=spec.rate,
        warmup_ops=spec.warmup, mode=spec.mode, processes=1, think_s=spec.think,
        missed_schedule=phase.missed_schedule(threshold_ns) if spec.rate is not None else {},
        timeline=timeline_of(phase.intervals), errors_by_type=phase.by_type,
        resources=resources, loop=loop_name(),
    )


def loop_name() -> str:
    """``module.Class`` of the running event loop (``uvloop.Loop`` or asyncio's)."""
    loop = asyncio.get_running_loop()
    return f"{type(loop).__module__}.{type(loop).__qualname__}"


__all__ = ["LoadSpec", "Op", "TickCallback", "drain_grace", "loop_name", "run_in_process", "timeline_of"]
