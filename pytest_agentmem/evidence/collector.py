"""The evidence of one measured round: read before and after its measured phase.

:class:`RoundCollector` is built once per ``perf.run`` from the test's
:mod:`.sources` and the run's settings; for each round :meth:`RoundCollector.before`
reads the cumulative counters (statements, Redis commands, I/O) and starts a
sampler of the pool and the I/O counters, and :meth:`RoundCollector.after`
stops it, reads again and returns the round's figures. :func:`merge_rounds`
sums the rounds of a measurement.

A round's evidence::

    {"statements": [...], "statements_status": "ok", "db_ms_per_op": 4.1,
     "pool": {"in_use_mean": 3.2, ...}, "pool_timeline": [[t, in_use, idle, open, waiting]],
     "io": {"process_disk_read": ..., ...}, "io_timeline": [[t, {...}]],
     "redis": [...], "duration_s": 2.0, "ops": 1234}
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from .io import IOReader, io_delta, merge_io
from .pool import pool_state, summarise_pool
from .redis_stats import commandstats_delta, merge_commandstats, read_commandstats
from .sources import EvidenceSources
from .statements import StatementReader, merge_statements, statement_delta, without_own_reset

#: Seconds between two samples of the pool and of the I/O counters.
POOL_INTERVAL_S = 0.1
IO_INTERVAL_S = 1.0


class RoundCollector:
    """Collects the evidence ``kinds`` of the rounds of one ``perf.run``."""

    def __init__(self, sources: EvidenceSources, kinds: Iterable[str],
                 service_pids: Callable[[], Iterable[int]] | None = None) -> None:
        self.kinds = frozenset(kinds)
        self._pools = dict(sources.pools) if ({"statements", "pool"} & self.kinds) else {}
        self._redis = dict(sources.redis) if "redis" in self.kinds else {}
        self._readers = {name: StatementReader(pool) for name, pool in self._pools.items()} \
            if "statements" in self.kinds else {}
        self._io = IOReader(service_pids) if "io" in self.kinds else None
        self._before: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._pool_samples: list[list[Any]] = []
        self._io_samples: list[list[Any]] = []
        self._t0 = 0.0
        self._sampling_s = 0.0

    @property
    def active(self) -> bool:
        """True if there is anything to collect."""
        return bool(self._readers or self._redis or self._io is not None
                    or ("pool" in self.kinds and self._pools))

    async def before(self) -> None:
        """Read the counters the round starts from and start sampling."""
        self._before = {"statements": {}, "redis": {}}
        for name, reader in self._readers.items():
            self._before["statements"][name] = await reader.read()
        for name, client in self._redis.items():
            try:
                self._before["redis"][name] = await read_commandstats(client)
            except Exception:  # noqa: BLE001 - a server that refuses INFO: no Redis figures
                self._before["redis"][name] = None
        self._pool_samples, self._io_samples = [], []
        self._sampling_s = 0.0
        self._t0 = time.perf_counter()
        if self._io is not None:
            self._before["io"] = self._io.read()
        if ("pool" in self.kinds and self._pools) or self._io is not None:
            self._task = asyncio.get_running_loop().create_task(self._sample())

    async def _sample(self) -> None:
        next_io = 0.0
        while True:
            began = time.perf_counter()
            now = began - self._t0
            if "pool" in self.kinds and self._pools:
                states = [pool_state(p) for p in self._pools.values()]
                states = [s for s in states if s]
                if states:
                    waiting = [s["waiting"] for s in states if s["waiting"] is not None]
                    self._pool_samples.append([round(now, 3), sum(s["in_use"] for s in states),
                                               sum(s["idle"] for s in states), sum(s["open"] for s in states),
                                               sum(waiting) if waiting else None])
            if self._io is not None and now >= next_io:
                self._io_samples.append([round(now, 3),
                                         io_delta(self._before["io"], self._io.read(relist=False))])
                next_io = now + IO_INTERVAL_S
            self._sampling_s += time.perf_counter() - began
            await asyncio.sleep(POOL_INTERVAL_S)

    async def after(self, ops: int) -> dict[str, Any]:
        """Stop sampling, read the counters again and return the round's evidence."""
        duration = time.perf_counter() - self._t0
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        # the event loop's time the samples took during the round: the collectors' cost on it
        out: dict[str, Any] = {"ops": int(ops), "duration_s": round(duration, 4),
                               "sampling_s": round(self._sampling_s, 6)}
        if self._io is not None:
            total = io_delta(self._before["io"], self._io.read())
            out["io"] = total
            self._io_samples.append([round(duration, 3), total])
            out["io_timeline"] = self._io_samples
        if "pool" in self.kinds and self._pools:
            out["pool"] = summarise_pool(self._pool_samples)
            out["pool_timeline"] = self._pool_samples
        if self._readers:
            rows: list[dict[str, Any]] = []
            statuses = {}
            for name, reader in self._readers.items():
                after = await reader.read()
                rows += without_own_reset(statement_delta(self._before["statements"].get(name, {}), after,
                                                          ops=ops), ops=ops)
                statuses[name] = (reader.status, reader.detail)
            out["statements"] = rows
            out["statements_status"] = _status(statuses)
            if any(status == "ok" for status, _ in statuses.values()) and ops > 0:
                out["db_ms_per_op"] = sum(r["total_ms"] for r in rows) / ops
        if self._redis:
            commands: list[dict[str, Any]] = []
            for name, client in self._redis.items():
                was = self._before["redis"].get(name)
                if was is None:
                    continue
                try:
                    commands += commandstats_delta(was, await read_commandstats(client), ops=ops)
                except Exception:  # noqa: BLE001
                    continue
            out["redis"] = commands
        return out


def _status(statuses: dict[str, tuple[str, str]]) -> str:
    if all(status == "ok" for status, _ in statuses.values()):
        return "ok"
    return "; ".join(f"{name}: {status}" + (f" ({detail})" if detail else "")
                     for name, (status, detail) in statuses.items() if status != "ok")


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One measurement's evidence from its rounds' (sums; timelines end to end)."""
    rounds = [r for r in rounds if r]
    if not rounds:
        return {}
    ops = sum(int(r.get("ops", 0)) for r in rounds)
    duration = sum(float(r.get("duration_s", 0.0)) for r in rounds)
    sampling = sum(float(r.get("sampling_s", 0.0)) for r in rounds)
    out: dict[str, Any] = {"ops": ops, "rounds": len(rounds), "duration_s": round(duration, 4),
                           "sampling_s": round(sampling, 6),
                           "sampling_share": round(sampling / duration, 6) if duration > 0 else 0.0}
    if any("statements" in r for r in rounds):
        out["statements"] = merge_statements([r.get("statements", []) for r in rounds], ops=ops)
        out["statements_status"] = rounds[-1].get("statements_status", "")
        db = [r["db_ms_per_op"] * r["ops"] for r in rounds if "db_ms_per_op" in r]
        if db and ops:
            out["db_ms_per_op"] = sum(db) / ops
    if any("redis" in r for r in rounds):
        out["redis"] = merge_commandstats([r.get("redis", []) for r in rounds], ops=ops)
    offset = 0.0
    pool_line: list[list[Any]] = []
    io_line: list[list[Any]] = []
    carried: dict[str, float] = {}
    for r in rounds:
        pool_line += [[round(s[0] + offset, 3), *s[1:]] for s in r.get("pool_timeline", [])]
        for t, figures in r.get("io_timeline", []):
            io_line.append([round(t + offset, 3), {k: carried.get(k, 0.0) + v for k, v in figures.items()}])
        if "io" in r:
            carried = merge_io([carried, r["io"]])
        offset += float(r.get("duration_s", 0.0))
    if any("io" in r for r in rounds):
        out["io"] = merge_io([r.get("io", {}) for r in rounds])
        out["io_timeline"] = io_line
    if pool_line:
        out["pool"] = summarise_pool(pool_line)
        out["pool_timeline"] = pool_line
    return out
