"""Servers the user already runs, given by URL: checked, never started or stopped."""

from __future__ import annotations

import time

from ..errors import ServiceUnavailableError
from ..redact import redact_text, redact_url
from ._sync import run_sync
from .base import RunningService

#: An external server gets a short deadline: it is meant to be up already.
EXTERNAL_TIMEOUT_S = 10.0


def attach_postgres(url: str, *, timeout: float = EXTERNAL_TIMEOUT_S) -> RunningService:
    """Check that ``url`` answers and offers pgvector; describe it."""
    __tracebackhide__ = True
    import asyncpg

    started = time.perf_counter()

    async def probe() -> tuple[str, str | None, int | None]:
        conn = await asyncpg.connect(url, timeout=min(timeout, EXTERNAL_TIMEOUT_S))
        try:
            version = await conn.fetchval("SHOW server_version")
            vector = await conn.fetchval(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
            postmaster = _parent_of(await conn.fetchval("SELECT pg_backend_pid()"), url)
        finally:
            await conn.close()
        return str(version).split()[0], vector, postmaster

    try:
        version, vector, postmaster = run_sync(probe())
    except (OSError, asyncio_timeout_errors(), asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ServiceUnavailableError(
            f"cannot connect to PostgreSQL at {redact_url(url)}: {redact_text(str(exc)) or type(exc).__name__}",
            hint="check that the server runs and the URL (host, port, user, password, database) is "
                 "right, or drop --agentmem-postgres-url to let the plugin start its own server",
        ) from None
    if vector is None:
        raise ServiceUnavailableError(
            f"PostgreSQL at {redact_url(url)} has no vector extension available",
            hint="install pgvector on that server, or drop --agentmem-postgres-url to use the "
                 "embedded PostgreSQL with pgvector")
    return RunningService(name="postgres", url=url, mode="external", version=version,
                          startup_s=time.perf_counter() - started, components={"pgvector": vector},
                          pids=(postmaster,) if postmaster else ())


def attach_redis(url: str, *, timeout: float = EXTERNAL_TIMEOUT_S) -> RunningService:
    """Check that ``url`` answers PING; describe it."""
    __tracebackhide__ = True
    import redis

    started = time.perf_counter()
    limit = min(timeout, EXTERNAL_TIMEOUT_S)
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=limit, socket_timeout=limit)
        try:
            info = client.info("server")
        finally:
            client.close()
    except (OSError, ValueError, redis.exceptions.RedisError) as exc:
        raise ServiceUnavailableError(
            f"cannot connect to Redis at {redact_url(url)}: {redact_text(str(exc)) or type(exc).__name__}",
            hint="check that the server runs and the URL is right (redis://[:password@]host:port/db), "
                 "or drop --agentmem-redis-url to let the plugin start its own server",
        ) from None
    pid = _visible_pid(info.get("process_id"), url)
    return RunningService(name="redis", url=url, mode="external",
                          version=str(info.get("redis_version", "?")),
                          startup_s=time.perf_counter() - started, pids=(pid,) if pid else ())


def _on_this_machine(url: str) -> bool:
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "").lower()
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def _visible_pid(pid: object, url: str) -> int | None:
    """``pid`` when the server runs on this machine and its process is visible to us.

    Then the CPU sampler counts its CPU (``cpu_ms_per_op``) as for a server we started.
    """
    if not isinstance(pid, int) or pid <= 0 or not _on_this_machine(url):
        return None
    import psutil

    try:
        psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return pid


def _parent_of(backend: object, url: str) -> int | None:
    """The postmaster of a visible local backend (its parent process), else None."""
    pid = _visible_pid(backend, url)
    if pid is None:
        return None
    import psutil

    try:
        return _visible_pid(psutil.Process(pid).ppid(), url)
    except psutil.Error:
        return None


def asyncio_timeout_errors() -> type[BaseException]:
    import asyncio

    return asyncio.TimeoutError
