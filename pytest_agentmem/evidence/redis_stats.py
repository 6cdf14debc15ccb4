"""Redis ``INFO commandstats`` read before and after a measured round.

``commandstats`` is server-wide: a server shared by several test processes
(pytest-xdist workers, other runs) counts their commands too; the servers the
plugin starts serve one pytest process. The readings' own ``INFO`` is taken out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


async def read_commandstats(client: Any) -> dict[str, dict[str, float]]:
    """``{command: {"calls", "usec", "failed"}}`` cumulative, from ``INFO commandstats``."""
    info = await client.info("commandstats")
    out: dict[str, dict[str, float]] = {}
    for key, value in dict(info).items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        if not name.startswith("cmdstat_") or not isinstance(value, Mapping):
            continue
        out[name[len("cmdstat_"):]] = {
            "calls": float(value.get("calls", 0)), "usec": float(value.get("usec", 0)),
            "failed": float(value.get("failed_calls", 0)) + float(value.get("rejected_calls", 0))}
    return out


def commandstats_delta(before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]],
                       *, ops: int = 0) -> list[dict[str, Any]]:
    """Per command that ran between the readings: calls, time, failures (by time)."""
    out = []
    for name, now in after.items():
        was = before.get(name, {})
        calls = now["calls"] - was.get("calls", 0.0) - (1 if name == "info" else 0)
        if calls <= 0:
            continue
        usec = now["usec"] - was.get("usec", 0.0)
        row: dict[str, Any] = {"command": name, "calls": calls, "total_ms": usec / 1000.0,
                               "mean_us": usec / calls, "failed": now["failed"] - was.get("failed", 0.0)}
        if ops > 0:
            row["calls_per_op"] = calls / ops
        out.append(row)
    out.sort(key=lambda r: -r["total_ms"])
    return out


def merge_commandstats(rounds: list[list[dict[str, Any]]], *, ops: int = 0) -> list[dict[str, Any]]:
    """The commands of several rounds summed."""
    merged: dict[str, dict[str, Any]] = {}
    for rows in rounds:
        for row in rows:
            entry = merged.setdefault(row["command"], {"command": row["command"], "calls": 0.0,
                                                       "total_ms": 0.0, "failed": 0.0})
            for key in ("calls", "total_ms", "failed"):
                entry[key] += float(row.get(key, 0.0))
    out = list(merged.values())
    for row in out:
        row["mean_us"] = 1000.0 * row["total_ms"] / row["calls"] if row["calls"] else 0.0
        if ops > 0:
            row["calls_per_op"] = row["calls"] / ops
    out.sort(key=lambda r: -r["total_ms"])
    return out
