"""History of a memory: the stored UPDATE/DELETE events and the ADD events derived from them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .model import HistoryEvent


def history_sql(table: str, history_table: str) -> str:
    """One statement (one snapshot) reading a memory's events and its current row (``$1``: the id)."""
    return ("SELECT event, old_content, new_content, created_at, memory_created_at FROM ("
            "SELECT seq, event, old_content, new_content, created_at, memory_created_at "
            f"FROM {history_table} WHERE memory_id = $1 "
            "UNION ALL SELECT NULL, 'CURRENT', NULL, content, NULL, created_at "
            f"FROM {table} WHERE id = $1) e ORDER BY seq NULLS LAST")


def with_add_events(memory_id: str, rows: Sequence[Any]) -> list[HistoryEvent]:
    """The full history from the stored events (in seq order) and, last, the memory's
    row as a ``CURRENT`` pseudo-event (``new_content`` its content,
    ``memory_created_at`` its created_at) if it exists.

    Each DELETE (and the CURRENT row) closes one life of the id; a life's ADD is
    put before its events, with the life's original content: the ``old_content``
    of its first event (an UPDATE, else the DELETE), else the current content.
    A life that starts with an explicit ADD row (a table from before ADD became
    implicit) is returned as stored.
    """
    events: list[HistoryEvent] = []
    life: list[Any] = []

    def close(created_at: Any, current_content: str | None) -> None:
        if created_at is not None and not (life and life[0]["event"] == "ADD"):
            original = life[0]["old_content"] if life else current_content
            events.append(HistoryEvent(memory_id, "ADD", None, original, created_at))
        events.extend(HistoryEvent(memory_id, r["event"], r["old_content"], r["new_content"],
                                   r["created_at"]) for r in life)
        life.clear()

    for row in rows:
        if row["event"] == "CURRENT":
            close(row["memory_created_at"], row["new_content"])
            continue
        life.append(row)
        if row["event"] == "DELETE":
            close(row["memory_created_at"], None)
    close(None, None)  # events of no row and no DELETE: none in one snapshot; kept as stored
    return events
