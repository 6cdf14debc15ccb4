"""The history store: one schema in SQLite or PostgreSQL, appends in transactions.

:func:`open_store` returns a :class:`Store` for a :class:`~.target.Target`.
Every append is one transaction (the run and all its figures, or nothing), so
two CI jobs appending at once each land whole: SQLite serialises writers with
``BEGIN IMMEDIATE`` and a busy timeout, Postgres runs them side by side. The
schema is created, and migrated to :data:`~.schema.LATEST`, under a lock
(``BEGIN IMMEDIATE`` / ``pg_advisory_xact_lock``) by whichever job comes first.

Postgres is reached with asyncpg (already a dependency), driven from a thread of
its own so the store is usable from synchronous code and from inside a running
event loop alike. Every failure is a :class:`HistoryError` naming the store (its
password masked) and what to do.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ..errors import AgentmemError
from ..history_target import Target
from ..redact import redact_text
from .rows import FigureRow, RunRow
from .schema import CREATE_VERSION_TABLE, LATEST, migrations

#: Seconds a SQLite writer waits for another job's transaction to end.
SQLITE_BUSY_S = 120.0
#: Seconds to wait for a Postgres connection.
CONNECT_TIMEOUT_S = 15.0
#: Key of the advisory lock that serialises schema migrations in Postgres.
_MIGRATION_LOCK = 0x61676D68  # "agmh"

T = TypeVar("T")

_FIGURE_COLUMNS = ("run_id, test, measurement, metric, value, samples_n, samples_median, samples_mean, "
                   "samples_stdev, samples_min, samples_max, samples, workload, workload_id, verdict, "
                   "reason, outcome")
_RUN_COLUMNS = ("uid, commit_sha, branch, commit_time, started_at, finished_at, machine_id, machine, "
                "stack, settings, plugin_version, source")

#: The columns of a series row (:meth:`Store.series_rows`).
SERIES_COLUMNS = ("run_id", "uid", "commit_sha", "branch", "commit_time", "started_at", "machine_id",
                  "machine", "test", "measurement", "metric", "value", "samples_n", "samples_median",
                  "samples_stdev", "samples_min", "samples_max", "workload", "workload_id", "verdict", "reason", "outcome")

_SERIES_SELECT = (
    "SELECT r.id, r.uid, r.commit_sha, r.branch, r.commit_time, r.started_at, r.machine_id, r.machine, "
    "f.test, f.measurement, f.metric, f.value, f.samples_n, f.samples_median, f.samples_stdev, "
    "f.samples_min, f.samples_max, f.workload, f.workload_id, f.verdict, f.reason, f.outcome "
    "FROM agentmem_figures f JOIN agentmem_runs r ON r.id = f.run_id")


class HistoryError(AgentmemError):
    """The history store cannot be opened, read or written (the message says which and why)."""


class Store(Protocol):
    """What the plugin and the command line need of a history store."""

    target: Target

    def append(self, run: RunRow, figures: Sequence[FigureRow]) -> bool:
        """Store ``run`` and its figures in one transaction; False if its ``uid`` is stored already."""

    def series_rows(self, where: str = "", params: Sequence[Any] = (), limit: int | None = None,
                    newest_first: bool = False) -> list[dict[str, Any]]:
        """Figures joined with their run (``SERIES_COLUMNS``), oldest first unless ``newest_first``."""

    def count_runs(self) -> int:
        """How many runs the store holds."""

    def schema_version(self) -> int:
        """The schema version of the store (0: no history written yet)."""


# --------------------------------------------------------------------------- helpers


def _figure_values(run_id: int, f: FigureRow) -> tuple[Any, ...]:
    s = f.summary()
    return (run_id, f.test, f.measurement, f.metric, f.value, s["n"], s["median"], s["mean"], s["stdev"],
            s["min"], s["max"], json.dumps(list(f.samples)),
            json.dumps(f.workload, sort_keys=True) if f.workload is not None else None, f.workload_id,
            f.verdict, f.reason, f.outcome)


def _run_values(run: RunRow, time: Callable[[str | None], Any]) -> tuple[Any, ...]:
    return (run.uid, run.commit_sha, run.branch, time(run.commit_time), time(run.started_at),
            time(run.finished_at), run.machine_id, json.dumps(run.machine, sort_keys=True),
            json.dumps(run.stack, sort_keys=True), json.dumps(run.settings, sort_keys=True),
            run.plugin_version, run.source)


def _row(values: Sequence[Any]) -> dict[str, Any]:
    row = dict(zip(SERIES_COLUMNS, values))
    for key in ("machine", "workload"):
        if isinstance(row[key], str):
            row[key] = json.loads(row[key])
    for key in ("commit_time", "started_at"):
        if isinstance(row[key], datetime):
            row[key] = row[key].astimezone(timezone.utc).isoformat(timespec="seconds")
    return row


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _iso_utc(text: str | None) -> str | None:
    when = _parse_time(text)
    return when.astimezone(timezone.utc).isoformat(timespec="seconds") if when else None


def _too_new(version: int, target: Target) -> HistoryError:
    return HistoryError(f"history store {target} has schema version {version}, newer than this "
                        f"pytest-agentmem knows ({LATEST}); upgrade pytest-agentmem to read or append to it")


# --------------------------------------------------------------------------- SQLite


class SQLiteStore:
    """A history in one SQLite file (created with its folder on the first append)."""

    def __init__(self, target: Target, *, create: bool = True) -> None:
        assert target.path is not None
        self.target = target
        self.path = Path(target.path)
        self.create = create

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            if not self.create:
                raise HistoryError(f"no history store at {self.path}: append to it first "
                                   "(pytest --agentmem-perf --agentmem-history PATH) or import JSON reports")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise HistoryError(f"history store {self.path}: cannot create its folder: {exc}") from None
        try:
            conn = sqlite3.connect(str(self.path), timeout=SQLITE_BUSY_S, isolation_level=None)
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise HistoryError(f"history store {self.path}: cannot open it: {exc}") from None
        return conn

    def _guard(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connect()
        try:
            return fn(conn)
        except sqlite3.Error as exc:
            hint = ""
            text = str(exc)
            if "readonly" in text or "read-only" in text:
                hint = "; make the file and its folder writable, or point --agentmem-history elsewhere"
            elif "not a database" in text:
                hint = "; the file is not a SQLite history store: choose another path"
            raise HistoryError(f"history store {self.path}: {what} failed: {text}{hint}") from None
        finally:
            conn.close()

    def _version(self, conn: sqlite3.Connection) -> int:
        found = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='agentmem_schema'"
                             ).fetchone()
        if not found:
            return 0
        return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM agentmem_schema").fetchone()[0])

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring the schema to LATEST inside the caller's write transaction."""
        version = self._version(conn)
        if version > LATEST:
            raise _too_new(version, self.target)
        if version == LATEST:
            return
        conn.execute(CREATE_VERSION_TABLE)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for number, statements in sorted(migrations("sqlite").items()):
            if number > version:
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO agentmem_schema (version, applied_at) VALUES (?, ?)", (number, now))

    def append(self, run: RunRow, figures: Sequence[FigureRow]) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._migrate(conn)
                if conn.execute("SELECT 1 FROM agentmem_runs WHERE uid = ?", (run.uid,)).fetchone():
                    conn.execute("ROLLBACK")
                    return False
                cursor = conn.execute(
                    f"INSERT INTO agentmem_runs ({_RUN_COLUMNS}) VALUES ({', '.join('?' * 12)})",
                    _run_values(run, _iso_utc))
                run_id = int(cursor.lastrowid or 0)
                conn.executemany(f"INSERT INTO agentmem_figures ({_FIGURE_COLUMNS}) "
                                 f"VALUES ({', '.join('?' * 17)})", [_figure_values(run_id, f) for f in figures])
                conn.execute("COMMIT")
                return True
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        return self._guard("append", write)

    def _read(self, conn: sqlite3.Connection) -> bool:
        version = self._version(conn)
        if version > LATEST:
            raise _too_new(version, self.target)
        return version > 0

    def series_rows(self, where: str = "", params: Sequence[Any] = (), limit: int | None = None,
                    newest_first: bool = False) -> list[dict[str, Any]]:
        order = "DESC" if newest_first else "ASC"
        sql = (f"{_SERIES_SELECT} {'WHERE ' + where if where else ''} "
               f"ORDER BY r.started_at {order}, r.id {order}, f.id" + (f" LIMIT {int(limit)}" if limit else ""))

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            if not self._read(conn):
                return []
            return [_row(values) for values in conn.execute(sql, tuple(params)).fetchall()]

        return self._guard("read", read)

    def count_runs(self) -> int:
        return self._guard("read", lambda c: int(c.execute("SELECT COUNT(*) FROM agentmem_runs").fetchone()[0])
                           if self._read(c) else 0)

    def schema_version(self) -> int:
        return self._guard("read", self._version)


# --------------------------------------------------------------------------- Postgres


def _dollar(sql: str) -> str:
    """``?`` placeholders as asyncpg's ``$1, $2 ...`` (the SQL here holds no literal ``?``)."""
    parts = sql.split("?")
    return "".join(p + (f"${i + 1}" if i < len(parts) - 1 else "") for i, p in enumerate(parts))


class PostgresStore:
    """A history in a PostgreSQL database (the tables are created on the first append)."""

    def __init__(self, target: Target, *, create: bool = True) -> None:
        assert target.url is not None
        self.target = target
        self.url = target.url
        self.create = create

    def _call(self, what: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``fn(connection)`` on a fresh connection in a thread with its own event loop."""
        outcome: dict[str, Any] = {}

        async def main() -> T:
            import asyncpg

            try:
                conn = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - every connection failure is the same answer
                raise HistoryError(
                    f"history store {self.target}: cannot connect: {type(exc).__name__}: "
                    f"{redact_text(str(exc))}; check the URL, that the server runs and that it "
                    "accepts this user") from None
            try:
                return await fn(conn)
            finally:
                await conn.close()

        def thread() -> None:
            try:
                outcome["value"] = asyncio.run(main())
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                outcome["error"] = exc

        worker = threading.Thread(target=thread, name="agentmem-history", daemon=True)
        worker.start()
        worker.join()
        error = outcome.get("error")
        if isinstance(error, HistoryError):
            raise error
        if error is not None:
            hint = ""
            if "read-only" in str(error) or "permission denied" in str(error):
                hint = "; grant this user INSERT (and CREATE on first use), or point --agentmem-history elsewhere"
            raise HistoryError(f"history store {self.target}: {what} failed: {type(error).__name__}: "
                               f"{redact_text(str(error))}{hint}") from None
        return outcome["value"]  # type: ignore[no-any-return]

    @staticmethod
    async def _version(conn: Any) -> int:
        # a scan of the catalog, not to_regclass: after waiting for the migration lock this backend's
        # name cache may still say "no such table" while another job has just created it
        exists = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables "
                                     "WHERE schemaname = current_schema() AND tablename = 'agentmem_schema')")
        if not exists:
            return 0
        return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM agentmem_schema"))

    async def _migrate(self, conn: Any) -> None:
        version = await self._version(conn)
        if version == LATEST:
            return
        if version > LATEST:
            raise _too_new(version, self.target)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            version = await self._version(conn)  # another job may have migrated meanwhile
            if version > LATEST:
                raise _too_new(version, self.target)
            await conn.execute(CREATE_VERSION_TABLE)
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            for number, statements in sorted(migrations("postgres").items()):
                if number > version:
                    for statement in statements:
                        await conn.execute(statement)
                    await conn.execute("INSERT INTO agentmem_schema (version, applied_at) VALUES ($1, $2)",
                                       number, now)

    def append(self, run: RunRow, figures: Sequence[FigureRow]) -> bool:
        async def write(conn: Any) -> bool:
            await self._migrate(conn)
            async with conn.transaction():
                run_id = await conn.fetchval(
                    _dollar(f"INSERT INTO agentmem_runs ({_RUN_COLUMNS}) VALUES ({', '.join('?' * 12)}) "
                            "ON CONFLICT (uid) DO NOTHING RETURNING id"), *_run_values(run, _parse_time))
                if run_id is None:
                    return False
                await conn.executemany(
                    _dollar(f"INSERT INTO agentmem_figures ({_FIGURE_COLUMNS}) VALUES ({', '.join('?' * 17)})"),
                    [_figure_values(run_id, f) for f in figures])
            return True

        return self._call("append", write)

    def series_rows(self, where: str = "", params: Sequence[Any] = (), limit: int | None = None,
                    newest_first: bool = False) -> list[dict[str, Any]]:
        order = "DESC" if newest_first else "ASC"
        sql = _dollar(f"{_SERIES_SELECT} {'WHERE ' + where if where else ''} "
                      f"ORDER BY r.started_at {order}, r.id {order}, f.id" + (f" LIMIT {int(limit)}" if limit else ""))

        async def read(conn: Any) -> list[dict[str, Any]]:
            version = await self._version(conn)
            if version > LATEST:
                raise _too_new(version, self.target)
            if version == 0:
                return []
            return [_row(tuple(record)) for record in await conn.fetch(sql, *params)]

        return self._call("read", read)

    def count_runs(self) -> int:
        async def count(conn: Any) -> int:
            if await self._version(conn) == 0:
                return 0
            return int(await conn.fetchval("SELECT COUNT(*) FROM agentmem_runs"))

        return self._call("read", count)

    def schema_version(self) -> int:
        return self._call("read", self._version)


def open_store(target: Target, *, create: bool = True) -> Store:
    """The store of ``target``; ``create=False`` refuses to create a missing SQLite file."""
    if target.kind == "postgres":
        return PostgresStore(target, create=create)
    return SQLiteStore(target, create=create)
