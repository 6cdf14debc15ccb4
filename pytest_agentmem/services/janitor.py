"""Per-test isolation: a template database built once, cloned for every test.

Cloning a template (``CREATE DATABASE ... TEMPLATE``) copies its files, which is
much faster than building a schema anew; the template has pgvector enabled (and
whatever a user's ``setup_sql`` adds). Names carry a random run id, so parallel
runs and pytest-xdist workers on one server never collide: not the pid, which
repeats across containers that share an external server (often pid 1 or 7).
"""

from __future__ import annotations

import itertools
import re
import secrets
from urllib.parse import urlsplit, urlunsplit

from ._sync import run_sync

_SAFE = re.compile(r"^[a-z_][a-z0-9_]*$")


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
                 tag: str = "", run_id: str | None = None) -> None:
        self.admin_dsn = dsn
        self.setup_sql = setup_sql
        self.run_id = run_id or new_run_id()
        stem = f"agentmem_{self.run_id}{'_' + tag if tag else ''}"
        self.template = f"{stem}_tpl"
        self._stem = stem
        self._counter = itertools.count(1)
        self._server_version = 0
        self._created: set[str] = set()
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
        """Drop every database we made, the template last."""
        for name in [*sorted(self._created), self.template]:
            try:
                self.drop_database(name)
            except Exception:  # noqa: BLE001 - the server may be gone already
                pass
