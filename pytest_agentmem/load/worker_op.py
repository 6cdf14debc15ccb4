"""``WorkerOp``: an operation whose clients are built once in each load worker.

Fixtures live in the test process; with ``processes=N`` (worker processes, or
Ray actors on other machines) the operation runs elsewhere and must open its
own connections there. A :class:`WorkerOp` says how: ``setup(worker)`` is
awaited once in each worker, before the workers start together, and returns
the worker's clients (a memory service, a pool...); each operation is
``op(clients, index)``; ``teardown(clients)`` (optional) is awaited once after
the measured phase, and what it returns travels back to the test in
``LoadResult.worker_returns`` (one entry per worker, so it must pickle). With
no ``teardown``, clients that have an ``aclose()`` or ``close()`` are closed.

Everything it holds must pickle (module-level functions, ``functools.partial``
of them with plain arguments such as URLs); the connections themselves are made
in the worker. Without ``processes=`` the same object runs in the test's own
event loop (setup once per run), so one test serves both ways::

    async def connect(dsn, redis_url, worker):      # once per worker
        return await build_my_service(dsn, redis_url)

    async def search(service, index):
        await service.search(QUESTIONS[index % len(QUESTIONS)], user_id="u1")

    op = WorkerOp(search, setup=functools.partial(connect, dsn, redis_url))
    result = await perf.run(op, concurrency=16, processes=4, duration=30)
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WorkerInfo:
    """Which worker a ``setup`` runs in: ``index`` of ``count`` (0-based), and where."""

    index: int = 0
    count: int = 1
    node: str = ""  # Ray node id, or "" on this machine
    host: str = ""


class WorkerOp:
    """An operation ``op(clients, index)`` with its clients built by ``setup(worker)`` per worker."""

    def __init__(self, op: Callable[[Any, int], Awaitable[Any]],
                 setup: Callable[[WorkerInfo], Awaitable[Any]],
                 teardown: Callable[[Any], Awaitable[Any]] | None = None) -> None:
        if not callable(op) or not callable(setup) or (teardown is not None and not callable(teardown)):
            raise TypeError("WorkerOp(op, setup, teardown=None): op(clients, index), setup(worker) "
                            "and teardown(clients) must be async callables")
        self.op = op
        self.setup = setup
        self.teardown = teardown
        self._clients: Any = None
        self._open = False

    def __getstate__(self) -> dict[str, Any]:
        # the clients never travel: each worker builds its own
        return {"op": self.op, "setup": self.setup, "teardown": self.teardown}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["op"], state["setup"], state["teardown"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"WorkerOp({_name(self.op)}, setup={_name(self.setup)})"

    async def open(self, worker: WorkerInfo | None = None) -> None:
        """Build this worker's clients (once)."""
        if not self._open:
            self._clients = await self.setup(worker or WorkerInfo())
            self._open = True

    async def close(self) -> Any:
        """Tear this worker's clients down; return what ``teardown`` returned (else None)."""
        if not self._open:
            return None
        clients, self._clients, self._open = self._clients, None, False
        if self.teardown is not None:
            return await self.teardown(clients)
        for name in ("aclose", "close"):
            closer = getattr(clients, name, None)
            if callable(closer):
                done = closer()
                if inspect.isawaitable(done):
                    await done
                break
        return None

    async def __call__(self, index: int) -> Any:
        if not self._open:
            raise RuntimeError("WorkerOp called before open(): the load engine opens it in each worker")
        return await self.op(self._clients, index)


def _name(fn: Any) -> str:
    inner = getattr(fn, "func", fn)  # functools.partial
    return getattr(inner, "__qualname__", repr(inner))


async def open_op(op: Any, worker: WorkerInfo | None = None) -> None:
    """Open ``op`` if it is a :class:`WorkerOp` (a plain async callable needs nothing)."""
    if isinstance(op, WorkerOp):
        await op.open(worker)


async def close_op(op: Any) -> Any:
    """Close ``op`` if it is a :class:`WorkerOp`; return its teardown's value."""
    if isinstance(op, WorkerOp):
        return await op.close()
    return None


__all__ = ["WorkerInfo", "WorkerOp", "close_op", "open_op"]
