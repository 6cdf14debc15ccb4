"""The memory model and the repository protocol every store implements.

``Memory`` is what users store and get back; ``MemoryRepository`` is the async
protocol the shipped repositories (Postgres/pgvector, LanceDB) implement and
that users implement to run the shipped scenarios against their own system.
The input checks every implementation shares are in :mod:`.validation`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import AgentmemError

#: Longest text a memory may hold, in characters (about 64k tokens). Longer
#: texts are rejected, never truncated silently; the embedder separately
#: truncates what it feeds the model to the model's own token limit.
MAX_CONTENT_CHARS = 256_000
#: How a search may rank: the embedding and the text fused, the embedding alone, the text alone.
SEARCH_MODES = ("hybrid", "dense", "lexical")


class InvalidMemoryError(AgentmemError, ValueError):
    """A memory, vector, filter or text is malformed; nothing was stored."""


class MemoryNotFoundError(AgentmemError, KeyError):
    """No memory has this id."""

    def __init__(self, memory_id: str) -> None:
        self.memory_id = memory_id
        super().__init__(f"no memory with id {memory_id!r}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Memory:
    """One memory: a text, who it belongs to, its embedding and bookkeeping."""

    content: str
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    embedding: np.ndarray | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: datetime = field(default_factory=_now)
    updated_at: datetime | None = None
    score: float | None = None


@dataclass(frozen=True)
class HistoryEvent:
    """One change of a memory: ``event`` is ADD, UPDATE or DELETE."""

    memory_id: str
    event: str
    old_content: str | None
    new_content: str | None
    created_at: datetime


@runtime_checkable
class MemoryRepository(Protocol):
    """Async store of memories with vector search (Mem0's vector-store verbs).

    A repository that also ranks by the query's text takes two more keywords in
    ``search``: ``text`` (the query) and ``mode`` (one of :data:`SEARCH_MODES`);
    the memory service passes them only to such a repository.
    """

    dim: int

    async def add(self, memory: Memory) -> str: ...

    async def add_batch(self, memories: list[Memory]) -> list[str]: ...

    async def get(self, memory_id: str) -> Memory: ...

    async def update(self, memory_id: str, *, content: str | None = None,
                     embedding: np.ndarray | None = None,
                     metadata: dict[str, Any] | None = None) -> Memory: ...

    async def delete(self, memory_id: str) -> None: ...

    async def delete_all(self, *, user_id: str | None = None, agent_id: str | None = None,
                         run_id: str | None = None) -> int: ...

    async def search(self, vector: np.ndarray, *, user_id: str | None = None,
                     agent_id: str | None = None, run_id: str | None = None,
                     filters: dict[str, Any] | None = None, limit: int = 10) -> list[Memory]: ...

    async def history(self, memory_id: str) -> list[HistoryEvent]: ...
