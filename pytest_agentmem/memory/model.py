"""The memory model and the repository protocol every store implements.

``Memory`` is what users store and get back; ``MemoryRepository`` is the async
protocol the shipped repositories (Postgres/pgvector, LanceDB) implement and
that users implement to run the shipped scenarios against their own system.
Input checks shared by every implementation live here too, so that all stores
reject the same bad input with the same clear error.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import AgentmemError

#: Longest text a memory may hold, in characters (about 64k tokens). Longer
#: texts are rejected, never truncated silently; the embedder separately
#: truncates what it feeds the model to the model's own token limit.
MAX_CONTENT_CHARS = 256_000


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
    """Async store of memories with vector search (Mem0's vector-store verbs)."""

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


# --------------------------------------------------------------------------- checks


def check_vector(vector: Any, dim: int, *, what: str = "embedding") -> np.ndarray:
    """Return ``vector`` as a float32 array of length ``dim``, or raise clearly."""
    if vector is None:
        raise InvalidMemoryError(f"{what} is missing; embed the text first (expected {dim} dims)")
    try:
        array = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidMemoryError(f"{what} is not numeric: {exc}") from None
    if array.ndim != 1 or array.shape[0] != dim:
        raise InvalidMemoryError(f"{what} has shape {array.shape}, expected ({dim},): "
                                 "was it made by another model?")
    if not np.isfinite(array).all():
        raise InvalidMemoryError(f"{what} holds NaN or infinite values")
    if not float(np.linalg.norm(array)) > 0.0:
        raise InvalidMemoryError(f"{what} is all zeros; cosine distance is undefined for it")
    return array


def check_content(content: Any) -> str:
    """Return ``content`` if it is a non-empty text within :data:`MAX_CONTENT_CHARS`."""
    if not isinstance(content, str):
        raise InvalidMemoryError(f"content must be a str, got {type(content).__name__}")
    if not content.strip():
        raise InvalidMemoryError("content is empty")
    if len(content) > MAX_CONTENT_CHARS:
        raise InvalidMemoryError(f"content has {len(content):,} characters, more than the "
                                 f"limit of {MAX_CONTENT_CHARS:,}; split it into several memories")
    if "\x00" in content:
        raise InvalidMemoryError("content contains a NUL character")
    return content


def check_texts(texts: Any) -> Sequence[str]:
    """Return ``texts`` if it is a list of valid contents; the error names the bad one."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InvalidMemoryError(f"texts must be a list of str, got {type(texts).__name__}")
    for index, text in enumerate(texts):
        try:
            check_content(text)
        except InvalidMemoryError as exc:
            raise InvalidMemoryError(f"text {index}: {exc}") from None
    return texts


def check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
        raise InvalidMemoryError(f"limit must be an int between 1 and 10000, got {limit!r}")
    return limit


def check_metadata(metadata: Any) -> dict[str, Any]:
    """Metadata must be a JSON-able dict with str keys and finite numbers."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidMemoryError(f"metadata must be a dict, got {type(metadata).__name__}")
    _check_json(metadata, "metadata")
    return metadata


def _check_json(value: Any, path: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidMemoryError(f"{path} keys must be str, got {key!r}")
            _check_json(item, f"{path}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidMemoryError(f"{path} is {value}, which JSON cannot hold")
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        raise InvalidMemoryError(f"{path} has a {type(value).__name__}, which JSON cannot hold")
