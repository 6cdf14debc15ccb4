"""``pg_stat_statements`` read before and after a measured round, per normalised statement.

The extension keeps cumulative figures per (user, database, query id); a round's
figures are the difference of two readings. Only the statements of the database
the test's pool is connected to are read (each test has its own database, so a
neighbour test's statements never mix in), and the readings' own query is left
out. What a server cannot give is said in :attr:`StatementReader.status`:

- ``ok``: read.
- ``not loaded``: the server does not preload the library (an external server
  without ``shared_preload_libraries = 'pg_stat_statements'``).
- ``not installed``: the extension's files are not on the server.
- ``no privilege``: the role may not create the extension in the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: A reading: query id -> cumulative figures of that statement.
Reading = dict[str, dict[str, Any]]

_FIGURES = ("calls", "total_ms", "rows", "shared_blks_hit", "shared_blks_read")
_MARK = "/* agentmem:evidence */"

#: Hints for a server where the statements cannot be read.
HINTS = {
    "not loaded": "the server does not preload pg_stat_statements: set shared_preload_libraries = "
                  "'pg_stat_statements' in its postgresql.conf and restart it",
    "not installed": "the pg_stat_statements extension is not installed on the server "
                     "(Debian: postgresql-contrib; it ships with PostgreSQL's contrib modules)",
    "no privilege": "the role may not CREATE EXTENSION pg_stat_statements in the test database: "
                    "create it in the template (template1) or grant the right",
}


@dataclass
class StatementReader:
    """Reads ``pg_stat_statements`` through one asyncpg pool (its database's statements only)."""

    pool: Any
    status: str = "unknown"
    detail: str = ""
    _time_column: str = "total_exec_time"

    async def prepare(self) -> bool:
        """Make the view readable in the pool's database; False (and :attr:`status`) if not."""
        if self.status == "ok":
            return True
        if self.status != "unknown":
            return False
        import asyncpg

        try:
            async with self.pool.acquire() as conn:
                loaded = await conn.fetchval(
                    "SELECT 'pg_stat_statements' = ANY(string_to_array("
                    "replace(current_setting('shared_preload_libraries'), ' ', ''), ','))")
                available = await conn.fetchval(
                    "SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_stat_statements'")
                if not available:
                    return self._fail("not installed")
                if not loaded:
                    return self._fail("not loaded")
                try:
                    await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                except asyncpg.InsufficientPrivilegeError as exc:
                    exists = await conn.fetchval(
                        "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'")
                    if not exists:
                        return self._fail("no privilege", str(exc))
                columns = {r["attname"] for r in await conn.fetch(
                    "SELECT attname FROM pg_attribute WHERE attrelid = 'pg_stat_statements'::regclass")}
                self._time_column = "total_exec_time" if "total_exec_time" in columns else "total_time"
        except (asyncpg.PostgresError, OSError) as exc:
            return self._fail("error", f"{type(exc).__name__}: {exc}")
        self.status = "ok"
        return True

    def _fail(self, status: str, detail: str = "") -> bool:
        self.status = status
        self.detail = detail or HINTS.get(status, "")
        return False

    async def read(self) -> Reading:
        """The cumulative figures of every statement of this database now (empty if unreadable)."""
        if not await self.prepare():
            return {}
        sql = (f"{_MARK} SELECT queryid::text AS id, query, calls, {self._time_column} AS total_ms, rows, "
               "shared_blks_hit, shared_blks_read FROM pg_stat_statements "
               "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
               "AND queryid IS NOT NULL")
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(sql)
        out: Reading = {}
        for row in rows:
            query = row["query"] or ""
            if _MARK in query or "pg_stat_statements" in query:
                continue
            entry = out.setdefault(row["id"], {"query": query, **{k: 0.0 for k in _FIGURES}})
            for key in _FIGURES:  # one query id may appear once per user / top level: sum them
                entry[key] += float(row[key] or 0)
        return out


def statement_delta(before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]],
                    *, ops: int = 0) -> list[dict[str, Any]]:
    """Per statement that ran between the readings: its figures' differences, by total time.

    ``ops``: the operations of the round, for ``calls_per_op`` and ``ms_per_op``.
    """
    out: list[dict[str, Any]] = []
    for key, now in after.items():
        was = before.get(key, {})
        row = {k: float(now.get(k, 0.0)) - float(was.get(k, 0.0)) for k in _FIGURES}
        if row["calls"] <= 0:
            continue
        row["mean_ms"] = row["total_ms"] / row["calls"]
        if ops > 0:
            row["calls_per_op"] = row["calls"] / ops
            row["ms_per_op"] = row["total_ms"] / ops
        out.append({"id": key, "query": str(now.get("query", "")), **row})
    out.sort(key=lambda r: -r["total_ms"])
    return out


#: What asyncpg runs when a connection goes back to its pool (each statement on its own).
POOL_RESET = ("SELECT pg_advisory_unlock_all()", "CLOSE ALL", "UNLISTEN *", "RESET ALL")


def without_own_reset(rows: list[dict[str, Any]], *, readings: int = 1, ops: int = 0) -> list[dict[str, Any]]:
    """``rows`` less the pool reset that the first reading's connection ran when it went back.

    A reading borrows a connection from the test's pool; its release (after the
    reading, so inside the round) runs asyncpg's reset statements once. Those
    ``readings`` calls (and their share of the time) are taken out.
    """
    out = []
    for row in rows:
        if " ".join(row["query"].split()) in POOL_RESET and row["calls"] > 0:
            mine = min(float(readings), row["calls"])
            keep = 1.0 - mine / row["calls"]
            row = {**row, "calls": row["calls"] - mine, "total_ms": row["total_ms"] * keep,
                   "rows": row["rows"] * keep}
            if row["calls"] <= 0:
                continue
            row["mean_ms"] = row["total_ms"] / row["calls"]
            if ops > 0:
                row["calls_per_op"] = row["calls"] / ops
                row["ms_per_op"] = row["total_ms"] / ops
        out.append(row)
    return out


def merge_statements(rounds: list[list[dict[str, Any]]], *, ops: int = 0) -> list[dict[str, Any]]:
    """The statements of several rounds summed (``ops``: the operations of all of them)."""
    merged: dict[str, dict[str, Any]] = {}
    for statements in rounds:
        for row in statements:
            entry = merged.setdefault(row["id"], {"id": row["id"], "query": row["query"],
                                                  **{k: 0.0 for k in _FIGURES}})
            for key in _FIGURES:
                entry[key] += float(row.get(key, 0.0))
    out = list(merged.values())
    for row in out:
        row["mean_ms"] = row["total_ms"] / row["calls"] if row["calls"] else 0.0
        if ops > 0:
            row["calls_per_op"] = row["calls"] / ops
            row["ms_per_op"] = row["total_ms"] / ops
    out.sort(key=lambda r: -r["total_ms"])
    return out


def statements_grown(now: list[dict[str, Any]], reference: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Statements by how much their database time per operation grew against ``reference``.

    Matched by normalised text (query ids differ between servers and versions); a
    statement the reference did not run has grown by all of its time. Each row
    gains ``ref_ms_per_op`` and ``grew_ms_per_op``.
    """
    ref = {r["query"]: r for r in reference}
    out = []
    for row in now:
        was = ref.get(row["query"])
        before = float(was.get("ms_per_op", 0.0)) if was else 0.0
        after = float(row.get("ms_per_op", 0.0))
        out.append({**row, "ref_ms_per_op": before if was else None, "grew_ms_per_op": after - before})
    out.sort(key=lambda r: -r["grew_ms_per_op"])
    return out
