"""Per-test isolation: a template database built once, cloned for every test.

Cloning a template (``CREATE DATABASE ... TEMPLATE``) copies its files, which is
much faster than building a schema anew; the template has pgvector enabled (and
whatever a user's ``setup_sql`` adds). Names carry a random run id, so parallel
runs and pytest-xdist workers on one server never collide: not the pid, which
repeats across containers that share an external server (often pid 1 or 7).

On a server the run does not own (external mode) a run killed outright cannot
drop its databases. So the run holds a lease there: one idle connection named
``agentmem-run-<run id>`` (the same signal the Redis lease uses), and the
template database's comment says the run has one. A later run sweeps the
databases of every leased run whose connection is gone; a run in another
container, pid namespace or machine keeps its lease as long as it lives.
Databases of runs without a lease (older versions) are left alone.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import secrets
import threading
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ._sync import run_sync

_SAFE = re.compile(r"^[a-z_][a-z0-9_]*$")
#: Names of our databases: agentmem_<run id>_..., the run id 8 hex digits.
_OURS = re.compile(r"^agentmem_([0-9a-f]{8})_[a-z0-9_]+$")
LEASE_PREFIX = "agentmem-run-"
LEASE_COMMENT = "pytest-agentmem: leased by the connection named "


def new_run_id() -> str:
    """A random id for this run's names on a shared server (8 hex digits)."""
    return secrets.token_hex(4)


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at ``database`` instead."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def quote_ident(name: str) -> str:
    if not _SAFE.match(name):
        raise ValueError(f"refusing unusual database name {name!r}")
    return f'"{name}"'


class PostgresJanitor:
    """Creates the template once and hands out fresh databases cloned from it."""

    def __init__(self, dsn: str, *, setup_sql: tuple[str, ...] = ("CREATE EXTENSION IF NOT EXISTS vector",),
                 tag: str = "", run_id: str | None = None, lease: bool = False) -> None:
        """``lease``: the server is shared (external): hold a lease, sweep killed runs' databases."""
        self.admin_dsn = dsn
        self.setup_sql = setup_sql
        self.run_id = run_id or new_run_id()
        stem = f"agentmem_{self.run_id}{'_' + tag if tag else ''}"
        self.template = f"{stem}_tpl"
        self._stem = stem
        self._counter = itertools.count(1)
        self._server_version = 0
        self._created: set[str] = set()
        self._lease: RunLease | None = None
        self.swept: list[str] = []
        if lease:
            self._lease = RunLease(dsn, self.run_id)
            self.swept = sweep_killed_runs(dsn)
        run_sync(self._create_template())

    async def _admin(self):  # type: ignore[no-untyped-def]
        import asyncpg

        return await asyncpg.connect(self.admin_dsn, timeout=30)

    async def _create_template(self) -> None:
        conn = await self._admin()
        try:
            self._server_version = conn.get_server_version().major
            await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(self.template)}")
            await conn.execute(f"CREATE DATABASE {quote_ident(self.template)}")
            if self._lease is not None:
                comment = f"{LEASE_COMMENT}{self._lease.name}".replace("'", "")
                await conn.execute(f"COMMENT ON DATABASE {quote_ident(self.template)} IS '{comment}'")
        finally:
            await conn.close()
        import asyncpg

        conn = await asyncpg.connect(with_database(self.admin_dsn, self.template), timeout=30)
        try:
            for statement in self.setup_sql:
                await conn.execute(statement)
        finally:
            await conn.close()

    def create_database(self) -> str:
        """A new database cloned from the template; returns its name."""
        name = f"{self._stem}_t{next(self._counter)}"
        strategy = " STRATEGY = FILE_COPY" if self._server_version >= 15 else ""

        async def create() -> None:
            conn = await self._admin()
            try:
                await conn.execute(f"CREATE DATABASE {quote_ident(name)} "
                                   f"TEMPLATE {quote_ident(self.template)}{strategy}")
            finally:
                await conn.close()

        run_sync(create())
        self._created.add(name)
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing any connection still open on it."""
        force = " WITH (FORCE)" if self._server_version >= 13 else ""

        async def drop() -> None:
            conn = await self._admin()
            try:
                await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}{force}")
            finally:
                await conn.close()

        run_sync(drop())
        self._created.discard(name)

    def close(self) -> None:
        """Drop every database we made, the template last; then end the lease."""
        for name in [*sorted(self._created), self.template]:
            try:
                self.drop_database(name)
            except Exception:  # noqa: BLE001 - the server may be gone already
                pass
        if self._lease is not None:
            self._lease.release()
            self._lease = None


class RunLease:
    """One idle connection named ``agentmem-run-<run id>``, open while the run lives.

    It lives on a loop of its own in a daemon thread (an asyncpg connection belongs
    to the loop that opened it). A process killed outright closes its socket with
    it, and the server ends the session: the lease is gone.
    """

    def __init__(self, dsn: str, run_id: str) -> None:
        import asyncpg

        self.name = f"{LEASE_PREFIX}{run_id}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=self.name, daemon=True)
        self._thread.start()
        connect = asyncpg.connect(dsn, timeout=30, server_settings={"application_name": self.name})
        try:
            self._conn: Any = asyncio.run_coroutine_threadsafe(connect, self._loop).result(60)
        except BaseException:
            self._stop_loop()
            raise

    def release(self) -> None:
        """Close the lease's connection (idempotent)."""
        if self._conn is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._conn.close(timeout=10), self._loop).result(15)
            except Exception:  # noqa: BLE001 - the server may be gone already
                pass
            self._conn = None
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def sweep_killed_runs(dsn: str) -> list[str]:
    """Drop the databases of leased runs whose lease connection is gone; return their names.

    A database we may not drop (another role's) is left as it is.
    """

    async def sweep() -> list[str]:
        import asyncpg

        conn = await asyncpg.connect(dsn, timeout=30)
        try:
            rows = await conn.fetch(
                "SELECT datname, shobj_description(oid, 'pg_database') AS note FROM pg_database "
                "WHERE datname LIKE 'agentmem\\_%'")
            live = {r["application_name"] for r in await conn.fetch(
                "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE $1",
                LEASE_PREFIX + "%")}
            version = conn.get_server_version().major
            leased: dict[str, list[str]] = {}
            for row in rows:
                match = _OURS.match(row["datname"])
                if match:
                    leased.setdefault(match[1], []).append(row["datname"])
            dead = {run for run, names in leased.items()
                    if f"{LEASE_PREFIX}{run}" not in live
                    and any(r["note"] == f"{LEASE_COMMENT}{LEASE_PREFIX}{run}"
                            for r in rows if r["datname"] in names)}
            # Read the lease list once more, after the databases: a run that started
            # between the two reads holds its lease by now (it leases before creating).
            live = {r["application_name"] for r in await conn.fetch(
                "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE $1",
                LEASE_PREFIX + "%")}
            dropped: list[str] = []
            force = " WITH (FORCE)" if version >= 13 else ""
            for run in sorted(dead):
                if f"{LEASE_PREFIX}{run}" in live:
                    continue
                # clones first: a template with clones left is still a template of nothing
                for name in sorted(leased[run], key=lambda n: n.endswith("_tpl")):
                    try:
                        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}{force}")
                        dropped.append(name)
                    except asyncpg.PostgresError:
                        continue
            return dropped
        finally:
            await conn.close()

    try:
        return run_sync(sweep())
    except Exception:  # noqa: BLE001 - a sweep is housekeeping; the run goes on without it
        return []
