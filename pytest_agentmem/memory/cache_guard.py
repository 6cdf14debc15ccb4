"""The caches' Redis calls: bounded in time, and a failure is a cache miss, not an error.

A cache is an optimisation: when Redis is down, stalled or restarting, the memory
path answers from the store (Postgres, LanceDB) and the cache counts the failure
(``errors``, ``last_error``) instead of failing the operation or hanging it. Each
call has a deadline (:data:`REDIS_CACHE_TIMEOUT_S` by default) of its own, so a
client made without socket timeouts cannot hang a run either.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

import redis.exceptions

T = TypeVar("T")

#: Seconds one cache round trip to Redis may take before it counts as failed.
REDIS_CACHE_TIMEOUT_S = 2.0

#: What a failing Redis raises: refused or dropped connections, timeouts, a server
#: still loading its data after a restart, a reply cut short.
CACHE_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.RedisError, OSError, asyncio.TimeoutError, TimeoutError, EOFError)


async def bounded(call: Awaitable[T], timeout: float | None) -> T:
    """Await ``call``, raising ``TimeoutError`` after ``timeout`` seconds (``None``: no limit)."""
    if timeout is None:
        return await call
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(timeout):
            return await call
    return await asyncio.wait_for(call, timeout)  # pragma: no cover - Python 3.10


def describe(exc: BaseException) -> str:
    """``TimeoutError: ...`` for a cache's ``last_error``."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
