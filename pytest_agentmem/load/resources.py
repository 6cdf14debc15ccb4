"""CPU time and RSS of this process and of the service processes during a run.

CPU (user + system) is taken at :meth:`ResourceSampler.start` and at
:meth:`ResourceSampler.stop`, i.e. at the start and the end of every round
(each round is one ``run_load``), and the figures are the differences:

- ``process_cpu_s``: this process (every thread), plus ``extra_cpu_s``, the CPU
  the worker processes of ``processes=N`` report for their measured phase.
- ``services_cpu_s``: the service processes ``service_pids()`` lists (the
  server's top process and all its descendants: Postgres' postmaster, its
  backends and background workers; Redis). Each listed process contributes its
  own CPU **and the CPU of its children that it has reaped** (``cutime`` and
  ``cstime`` of ``/proc/<pid>/stat``). A backend that is born and gone between
  the two readings - a short connection - is therefore counted too: when it
  exits the postmaster reaps it and its CPU moves into the postmaster's
  children times. The total is exact up to two races, both of the order of one
  process's last few milliseconds: a child reaped between the reading of the
  child and the reading of its parent in one sample (counted twice), or
  between the parent's and the child's (lost).
- ``model_cpu_s``: the part of ``process_cpu_s`` the embedding model's runs took
  (:func:`~pytest_agentmem.counters.model_cpu_s`; absent when worker processes
  ran the operations, whose model runs this process does not see).

Not counted: services without process ids here (``external`` servers, other
hosts, containers this process cannot see), processes of the service that
are not descendants of its top process, and, with ``processes=N``, the worker
processes' warm-up is excluded for the workers themselves but the services'
CPU during the workers' warm-up is included (the parent cannot see when their
warm-up ends).

The peak RSS is the highest value seen by :meth:`ResourceSampler.sample`, which
the runner calls about once a second (and at start and stop).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import psutil

from ..counters import model_cpu_s

if TYPE_CHECKING:
    from ..services.manager import ServiceManager

MB = 1024 * 1024


def process_clock_s(pid: int) -> float | None:
    """CPU seconds (user + system, every thread) of process ``pid`` at nanosecond resolution.

    Reads the kernel's per-process CPU clock (``clock_gettime`` on the clock id of
    ``clock_getcpuclockid(pid)``); ``/proc``'s figures count clock ticks (10 ms),
    which is 5 % of a 0.2 s round. None where that clock cannot be read.
    """
    try:
        return time.clock_gettime(((~pid) << 3) | 2)  # CPUCLOCK_SCHED, process-wide
    except (OSError, OverflowError, AttributeError, ValueError):
        return None


def run_queue_wait_s() -> float | None:
    """Seconds the calling thread has spent ready to run but waiting for a CPU.

    The second field of Linux's ``/proc/thread-self/schedstat``: time the
    scheduler gave to *other* threads while this one could have run. Called from
    the event loop's thread, which runs every operation of a run, it is the time
    a neighbour held the CPU the operations needed; an operation waiting for I/O
    or a lock (sleeping) does not count. (Summing every thread of the process
    would lose the wait of threads that end between two readings.) None where it
    cannot be read.
    """
    try:
        with open("/proc/thread-self/schedstat", "rb") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def machine_busy_s() -> float | None:
    """CPU seconds every CPU of the machine has spent busy (all processes, the kernel, and
    ``steal``: time the hypervisor gave to other guests). None where it cannot be read."""
    try:
        times = psutil.cpu_times()
    except (psutil.Error, OSError):
        return None
    idle = float(times.idle) + float(getattr(times, "iowait", 0.0))
    return float(sum(times)) - idle - float(getattr(times, "guest", 0.0)) - float(getattr(times, "guest_nice", 0.0))


def _cpu_s(proc: psutil.Process) -> float:
    own = process_clock_s(proc.pid)
    if own is not None:
        return own
    times = proc.cpu_times()
    return float(times.user + times.system)


def _cpu_with_children_s(proc: psutil.Process) -> float:
    """Own CPU plus the CPU of the children this process has reaped (waited for)."""
    times = proc.cpu_times()
    own = process_clock_s(proc.pid)
    return float((own if own is not None else times.user + times.system)
                 + getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0))


def services_cpu_total(pids: Iterable[int]) -> float:
    """Cumulative CPU seconds of the processes ``pids`` and of their reaped children.

    ``pids`` must list a process tree (a top process and its descendants); the
    difference of two totals is the tree's CPU between them (see the module
    docstring for what it misses).
    """
    total = 0.0
    for pid in sorted(set(pids), reverse=True):  # children (usually higher pids) first
        try:
            total += _cpu_with_children_s(psutil.Process(pid))
        except psutil.Error:
            continue
    return total


class ResourceSampler:
    """Samples this process and the processes ``service_pids()`` names."""

    def __init__(self, service_pids: Callable[[], Iterable[int]] | None = None) -> None:
        self._service_pids = service_pids
        self._me = psutil.Process()
        self._start_cpu = 0.0
        self._start_wall = 0.0
        self._start_wait: float | None = None
        self._start_busy: float | None = None
        self._start_services_cpu = 0.0
        self._start_model_cpu = 0.0
        self._rss_max = 0
        self._services_rss_max = 0
        self.extra_cpu_s = 0.0  # CPU reported by worker processes
        self.extra_rss_max = 0

    def _pids(self) -> list[int] | None:
        if self._service_pids is None:
            return None
        try:
            return list(self._service_pids())
        except (psutil.Error, OSError):  # a process went away while listed: no figures this time
            return None

    def start(self) -> None:
        """Take the CPU readings the run's figures start from."""
        pids = self._pids()
        self._start_services_cpu = services_cpu_total(pids) if pids else 0.0
        self._start_wall = time.perf_counter()
        self._start_wait = run_queue_wait_s()
        self._start_busy = machine_busy_s()
        self._start_cpu = _cpu_s(self._me)
        self._start_model_cpu = model_cpu_s()
        self._sample_rss(pids)

    def sample(self) -> None:
        """Record the current RSS of this process and of the services."""
        self._sample_rss(self._pids())

    def _sample_rss(self, pids: list[int] | None) -> None:
        try:
            self._rss_max = max(self._rss_max, self._me.memory_info().rss)
        except psutil.Error:
            pass
        if not pids:
            return
        rss = 0
        for pid in set(pids):
            try:
                rss += psutil.Process(pid).memory_info().rss
            except psutil.Error:
                continue
        self._services_rss_max = max(self._services_rss_max, rss)

    def stop(self) -> dict[str, float]:
        """The figures of the run (CPU read again now, RSS sampled once more)."""
        cpu = _cpu_s(self._me) - self._start_cpu + self.extra_cpu_s
        model_cpu = model_cpu_s() - self._start_model_cpu
        busy = machine_busy_s()
        wait = run_queue_wait_s()
        wall = max(time.perf_counter() - self._start_wall, 1e-9)
        pids = self._pids()
        services_cpu = (max(0.0, services_cpu_total(pids) - self._start_services_cpu)
                        if pids else 0.0)
        self._sample_rss(pids)
        out = {
            "process_cpu_s": round(cpu, 4),
            "process_cpu_pct": round(100.0 * cpu / wall, 1),
            "process_rss_mb_max": round(max(self._rss_max, self.extra_rss_max) / MB, 1),
        }
        if not self.extra_cpu_s:
            out["model_cpu_s"] = round(model_cpu, 4)
        if wait is not None and self._start_wait is not None:
            out["process_wait_s"] = round(wait - self._start_wait, 4)
            out["process_wait_pct"] = round(100.0 * (wait - self._start_wait) / wall, 1)
        if busy is not None and self._start_busy is not None and pids:
            # the CPU other processes of the machine took meanwhile, in cores: what a neighbour
            # used (ours: this process, its workers' reported CPU, the services'). Only where the
            # services' processes are seen: an external server on this host would count as a
            # neighbour while it serves the run
            others = busy - self._start_busy - cpu - services_cpu
            out["foreign_cpu_cores"] = round(max(0.0, others) / wall, 3)
        if self._service_pids is not None:
            out["services_cpu_s"] = round(services_cpu, 4)
            out["services_cpu_pct"] = round(100.0 * services_cpu / wall, 1)
            out["services_rss_mb_max"] = round(self._services_rss_max / MB, 1)
        return out


def service_pids_of(services: ServiceManager) -> Callable[[], list[int]]:
    """A callable listing the pids of the services ``services`` runs now (their process trees)."""

    def pids() -> list[int]:
        found: list[int] = []
        for service in services.running.values():
            found.extend(service.process_ids())
        return found

    return pids
