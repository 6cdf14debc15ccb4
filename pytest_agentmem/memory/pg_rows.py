"""Rows of the memories table: the columns read and written, and a row as a :class:`Memory`."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .model import Memory

COLUMNS = "id, content, user_id, agent_id, run_id, metadata, created_at, updated_at"
T_COLUMNS = ", ".join(f"t.{c}" for c in COLUMNS.split(", "))
#: The columns ``add_batch`` copies, in the order of :func:`.pg_batch.iter_records`.
COPY_COLUMNS = ("id", "content", "user_id", "agent_id", "run_id", "metadata", "embedding", "created_at")


def memory_from_row(row: Any, score: float | None = None) -> Memory:
    """The :class:`Memory` of a row (with its embedding if the row has one)."""
    embedding = row.get("embedding") if hasattr(row, "get") else None
    if embedding is not None and not isinstance(embedding, np.ndarray):
        embedding = embedding.to_numpy()
    return Memory(content=row["content"], user_id=row["user_id"], agent_id=row["agent_id"],
                  run_id=row["run_id"], metadata=json.loads(row["metadata"]), embedding=embedding,
                  id=row["id"], created_at=row["created_at"], updated_at=row["updated_at"],
                  score=score)
