"""CPU time and RSS of this process and of the service processes during a run.

CPU is the difference of cumulative CPU times (user + system) between
:meth:`ResourceSampler.start` and :meth:`ResourceSampler.stop`; the peak RSS is
the highest value seen by :meth:`ResourceSampler.sample`, which the runner calls
about once a second. Service processes come and go (Postgres backends): every
process id seen is followed, a new one from zero CPU, so short-lived backends
are counted as long as a sample saw them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import psutil

MB = 1024 * 1024


def _cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


class ResourceSampler:
    """Samples this process and the processes ``service_pids()`` names."""

    def __init__(self, service_pids: Callable[[], Iterable[int]] | None = None) -> None:
        self._service_pids = service_pids
        self._me = psutil.Process()
        self._start_cpu = 0.0
        self._start_wall = 0.0
        self._rss_max = 0
        self._services_rss_max = 0
        self._services: dict[int, tuple[psutil.Process, float, float]] = {}  # pid: (proc, first, last)
        self._baseline = False
        self.extra_cpu_s = 0.0  # CPU reported by worker processes
        self.extra_rss_max = 0

    def start(self) -> None:
        self._start_wall = time.perf_counter()
        self._start_cpu = _cpu_s(self._me)
        self._baseline = True
        self.sample()
        self._baseline = False

    def sample(self) -> None:
        """Record the current RSS of everything and the CPU of the services."""
        try:
            self._rss_max = max(self._rss_max, self._me.memory_info().rss)
        except psutil.Error:
            pass
        if self._service_pids is None:
            return
        try:
            pids = list(self._service_pids())
        except Exception:  # noqa: BLE001 - sampling must never break a run
            return
        rss = 0
        for pid in pids:
            entry = self._services.get(pid)
            try:
                if entry is None:
                    proc = psutil.Process(pid)
                    cpu = _cpu_s(proc)
                    # born during the run: all its CPU belongs to the run
                    entry = (proc, cpu if self._baseline else 0.0, cpu)
                else:
                    proc = entry[0]
                    entry = (proc, entry[1], _cpu_s(proc))
                self._services[pid] = entry
                rss += proc.memory_info().rss
            except psutil.Error:
                continue
        self._services_rss_max = max(self._services_rss_max, rss)

    def stop(self) -> dict[str, float]:
        """The figures of the run (sampled once more at the end)."""
        self.sample()
        wall = max(time.perf_counter() - self._start_wall, 1e-9)
        cpu = _cpu_s(self._me) - self._start_cpu + self.extra_cpu_s
        out = {
            "process_cpu_s": round(cpu, 4),
            "process_cpu_pct": round(100.0 * cpu / wall, 1),
            "process_rss_mb_max": round(max(self._rss_max, self.extra_rss_max) / MB, 1),
        }
        if self._service_pids is not None:
            services_cpu = sum(last - first for _, first, last in self._services.values())
            out["services_cpu_s"] = round(services_cpu, 4)
            out["services_cpu_pct"] = round(100.0 * services_cpu / wall, 1)
            out["services_rss_mb_max"] = round(self._services_rss_max / MB, 1)
        return out


def service_pids_of(config: object) -> Callable[[], list[int]] | None:
    """A callable listing the pids of the services running for this pytest run."""
    try:
        from ..session import get_session

        manager = get_session(config).services  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - no session: not under pytest-agentmem
        return None

    def pids() -> list[int]:
        found: list[int] = []
        for service in manager.running.values():
            found.extend(service.process_ids())
        return found

    return pids
