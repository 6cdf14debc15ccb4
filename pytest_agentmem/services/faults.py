"""Fault injection against the real servers, during load: the ``agentmem_faults`` fixture.

Call it from your own tests while a workload runs on the same event loop::

    async def test_survives_a_redis_restart(perf, memory_service, agentmem_faults):
        async def chaos():
            await asyncio.sleep(1.0)
            await agentmem_faults.restart("redis")

        result, _ = await asyncio.gather(perf.run(op, concurrency=8, duration=4), chaos())

Faults (each awaits until it is over, never blocking the event loop, and is
recorded in ``agentmem_faults.history`` with its start and end on the
``time.monotonic`` clock, which :mod:`pytest_agentmem.audit` uses to tell
acknowledged-before-fault writes from in-flight ones):

- ``restart(name)``: an orderly stop and start on the same port, data dir and
  password (``down_s`` seconds in between); ``hard=True`` kills instead (SIGKILL).
- ``kill(name)`` / ``start(name)``: the server is gone until ``start``.
- ``pause(name, seconds)``: SIGSTOP, then SIGCONT: connections stay open and
  nothing answers (what a stalled server or a full network buffer looks like).
- ``exhaust_pool(pool, seconds)`` / ``async with pool_exhausted(pool)``: every
  connection of an asyncpg pool is held, so the workload waits for one.

Only servers this run launched itself (``--agentmem-services=local``) can be
stopped and started; for an external server or a container the fixture raises
:class:`FaultInjectionError` naming the fix. At the end of the test every paused
server is resumed and every stopped one started again, so later tests find them.

What a restart may lose (durability is off on test servers by design):

- Redis runs without persistence: any restart or kill loses everything in it
  (caches only; they come back empty).
- Postgres runs with ``fsync=off`` and ``synchronous_commit=off``. An orderly
  ``restart`` (fast shutdown, a shutdown checkpoint) loses nothing it
  acknowledged. A hard restart or ``kill`` (a crash) may lose the transactions
  acknowledged in the last few hundred milliseconds before it (their WAL was not
  yet written: up to three ``wal_writer_delay`` periods, 600 ms by default); an
  OS crash with ``fsync=off`` may corrupt the cluster outright. The audit counts
  writes acknowledged before a crash that are missing as lost: a test that
  kills Postgres should expect and say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from ..errors import AgentmemError
from .plugin import service_manager

#: Seconds a restarted server has to answer again.
READY_TIMEOUT_S = 60.0


class FaultInjectionError(AgentmemError):
    """A fault cannot be injected here (a server this run did not start, an unknown name)."""


@dataclass
class Fault:
    """One injected fault: what, on which service, when (``time.monotonic``), and whether
    the service answered again afterwards (``recovered``)."""

    kind: str
    service: str
    started: float
    ended: float | None = None
    recovered: bool | None = None
    detail: str = ""

    @property
    def duration_s(self) -> float:
        return (self.ended if self.ended is not None else time.monotonic()) - self.started


@dataclass
class Faults:
    """Injects faults into the servers of ``services`` (a :class:`ServiceManager`)."""

    services: Any
    ready_timeout: float = READY_TIMEOUT_S
    history: list[Fault] = field(default_factory=list)

    # ------------------------------------------------------------------ server faults

    async def restart(self, name: str, *, down_s: float = 0.0, hard: bool = False) -> Fault:
        """Stop ``name`` (orderly, or SIGKILL when ``hard``), wait ``down_s``, start it, wait until it answers."""
        process = self._process(name, "restart")
        fault = self._begin("hard-restart" if hard else "restart", name)
        await asyncio.to_thread(process.kill if hard else process.halt)
        if down_s > 0:
            await asyncio.sleep(down_s)
        await self._start(name, process, fault)
        return fault

    async def kill(self, name: str) -> Fault:
        """Kill ``name`` (SIGKILL to the server and its children); it stays down until :meth:`start`."""
        process = self._process(name, "kill")
        fault = self._begin("kill", name)
        await asyncio.to_thread(process.kill)
        fault.ended = None  # ends when start() brings it back
        return fault

    async def start(self, name: str) -> Fault:
        """Start a killed server again and wait until it answers; closes the open ``kill``."""
        process = self._process(name, "start")
        open_kill = next((f for f in reversed(self.history)
                          if f.service == name and f.kind == "kill" and f.ended is None), None)
        fault = open_kill or self._begin("start", name)
        await self._start(name, process, fault)
        return fault

    async def pause(self, name: str, seconds: float) -> Fault:
        """Freeze ``name`` for ``seconds`` (SIGSTOP, then SIGCONT)."""
        async with self.paused(name) as fault:
            await asyncio.sleep(seconds)
        return fault

    @contextlib.asynccontextmanager
    async def paused(self, name: str) -> AsyncIterator[Fault]:
        """``name`` is frozen (SIGSTOP) inside the block and resumed (SIGCONT) when it ends."""
        process = self._process(name, "pause")
        fault = self._begin("pause", name)
        process.pause()
        try:
            yield fault
        finally:
            process.resume()
            fault.ended = time.monotonic()
            fault.recovered = await asyncio.to_thread(self._answers, name)

    # ------------------------------------------------------------------ pool exhaustion

    async def exhaust_pool(self, pool: Any, seconds: float) -> Fault:
        """Hold every connection of the asyncpg ``pool`` for ``seconds``."""
        async with self.pool_exhausted(pool) as fault:
            await asyncio.sleep(seconds)
        return fault

    @contextlib.asynccontextmanager
    async def pool_exhausted(self, pool: Any) -> AsyncIterator[Fault]:
        """Every connection of ``pool`` is held inside the block (acquired first, at once
        as they come free); they go back to the pool when it ends."""
        size = int(pool.get_max_size())
        fault = self._begin("exhaust-pool", "postgres", detail=f"{size} connections held")
        held: list[Any] = []
        try:
            for _ in range(size):
                held.append(await pool.acquire())
            yield fault
        finally:
            for conn in held:
                await pool.release(conn)
            fault.ended = time.monotonic()
            fault.recovered = True

    # ------------------------------------------------------------------ bookkeeping

    def summary(self) -> dict[str, int]:
        """``{"injected": n, "survived": n}``: faults, and those after which the server answered."""
        return {"injected": len(self.history),
                "survived": sum(1 for f in self.history if f.recovered)}

    def heal(self) -> None:
        """Resume every paused server and start every stopped one (the fixture's teardown)."""
        for name in ("postgres", "redis"):
            service = self.services.running.get(name)
            process = getattr(service, "process", None) if service is not None else None
            if process is None:
                continue
            process.resume()
            if not process.alive():
                process.start()
                self._refresh(name, process)
                for fault in self.history:
                    if fault.service == name and fault.ended is None:
                        fault.ended = time.monotonic()
                        fault.recovered = self._wait_ready(name)

    # ------------------------------------------------------------------ internals

    def _begin(self, kind: str, name: str, detail: str = "") -> Fault:
        fault = Fault(kind=kind, service=name, started=time.monotonic(), detail=detail)
        self.history.append(fault)
        return fault

    def _process(self, name: str, what: str) -> Any:
        if name not in ("postgres", "redis"):
            raise FaultInjectionError(f"unknown service {name!r}: faults can be injected into "
                                      "'postgres' and 'redis'")
        service = self.services.get(name)
        process = getattr(service, "process", None)
        if process is None:
            raise FaultInjectionError(
                f"cannot {what} {name}: it runs in {service.mode} mode, and only servers this run "
                "launched itself can be paused, stopped and restarted; run with "
                "--agentmem-services=local (and without --agentmem-postgres-url / --agentmem-redis-url)")
        return process

    async def _start(self, name: str, process: Any, fault: Fault) -> None:
        # Spawned on this thread, not a worker thread: the server's parent-death signal
        # fires when the thread that forked it ends (an executor's thread ends with the loop).
        process.start()
        self._refresh(name, process)
        fault.recovered = await asyncio.to_thread(self._wait_ready, name)
        fault.ended = time.monotonic()
        if not fault.recovered:
            tail = process.log_tail()
            raise FaultInjectionError(f"{name} did not answer within {self.ready_timeout:.0f} s of its "
                                      f"restart\n--- last lines of the server log ---\n{tail}")

    def _refresh(self, name: str, process: Any) -> None:
        self.services.running[name].pids = (process.pid,)

    def _wait_ready(self, name: str) -> bool:
        from .readiness import wait_until_ready

        process = self.services.running[name].process
        try:
            wait_until_ready(lambda: self._probe(name), timeout=self.ready_timeout,
                             transient=(Exception,), still_alive=process.alive)
        except (TimeoutError, ChildProcessError):
            return False
        return True

    def _answers(self, name: str) -> bool:
        try:
            self._probe(name)
        except Exception:  # noqa: BLE001 - any failure means "does not answer"
            return False
        return True

    def _probe(self, name: str) -> None:
        url = self.services.running[name].url
        if name == "redis":
            import redis

            client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
            try:
                client.ping()
            finally:
                client.close()
            return
        from ._sync import run_sync

        async def probe() -> None:
            import asyncpg

            conn = await asyncpg.connect(url, timeout=2)
            try:
                await conn.fetchval("SELECT 1")
            finally:
                await conn.close()

        run_sync(probe())


@pytest.fixture
def agentmem_faults(pytestconfig: pytest.Config) -> Iterator[Faults]:
    """Fault injection into this run's servers (see :mod:`pytest_agentmem.faults`);
    every server is running again when the test ends."""
    faults = Faults(service_manager(pytestconfig))
    try:
        yield faults
    finally:
        faults.heal()
