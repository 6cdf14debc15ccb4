"""A ``memory_service`` backed by Mem0 OSS, so every shipped scenario runs against Mem0.

Install the extra (``pip install 'pytest-agentmem[mem0]'``) and override the
fixture in a conftest::

    # conftest.py
    from pytest_agentmem.adapters.mem0 import mem0_memory_service

    memory_service = mem0_memory_service

Mem0 (``mem0ai`` 2.2.1 or newer) then stores and searches on the run's own
Postgres/pgvector (a fresh database per test, as ``memory_repo`` gets) with the
run's embedding model (the same offline files; Mem0's own fastembed embedder
code), through ``mem0.AsyncMemory`` with ``infer=False``: no LLM is configured
that could answer, none is called (:attr:`Mem0MemoryService.llm_calls`), and
telemetry is off (see :mod:`.mem0_backend`).

``AsyncMemory`` is Mem0's asyncio API: it runs each blocking step (embedding,
each SQL query, the SQLite history) with ``asyncio.to_thread``, i.e. on the
event loop's default thread pool, so the adapter awaits it directly and adds
no thread pool of its own.

The verbs map onto Mem0's:

=================  ==============================================================
ours               Mem0
=================  ==============================================================
``add``            ``add(text, user_id=, agent_id=, run_id=, metadata=, infer=False)``
``add_batch``      one ``add`` per text (Mem0 has no batch with per-text metadata),
                   ``add_concurrency`` of them at a time, results in input order
``search``         ``search(query, top_k=limit, filters={scopes..., conditions...})``
``update``         ``update(memory_id, text=...)`` then ``get``
``delete``         ``delete(memory_id)``
``get``            ``get(memory_id)``
``history``        ``history(memory_id)`` (ADD / UPDATE / DELETE events)
``delete_all``     ``get_all`` (to count) then ``delete_all(user_id=, ...)``
=================  ==============================================================

What Mem0 cannot do raises :class:`Mem0UnsupportedError` naming the case:
a search or a write with no ``user_id``/``agent_id``/``run_id`` (Mem0 requires a
scope), and the filter operators whose meaning Mem0's pgvector store does not
share (``ne`` and ``nin``, which in Mem0 exclude memories without the key;
``exists: False``; ``eq`` with a list or dict).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from ..errors import AgentmemError
from ..memory.model import HistoryEvent, InvalidMemoryError, Memory, MemoryNotFoundError
from ..memory.validation import (
    Condition,
    check_content,
    check_limit,
    check_metadata,
    check_selection,
    check_texts,
    is_scalar,
)
from .mem0_backend import (
    ForbiddenLLM,
    Mem0LLMCalled,
    Mem0MissingError,
    build_async_memory,
    close_async_memory,
    shared_model,
)

__all__ = ["Mem0LLMCalled", "Mem0MemoryService", "Mem0MissingError", "Mem0UnsupportedError",
           "mem0_memory_service", "mem0_service_fixture"]

_CORE_KEYS = ("id", "memory", "hash", "created_at", "updated_at", "score", "metadata",
              "user_id", "agent_id", "run_id", "actor_id", "role", "attributed_to", "expiration_date")


class Mem0UnsupportedError(AgentmemError, NotImplementedError):
    """Mem0 cannot do what was asked (the message names what, and what it can do instead)."""


class Mem0MemoryService:
    """Our ``memory_service`` verbs on a Mem0 ``AsyncMemory`` (see the module doc).

    ``memory``: an ``AsyncMemory`` (:func:`~.mem0_backend.build_async_memory`
    makes an offline one); ``threshold``: Mem0's minimum search score (``None``:
    Mem0's default, 0.1); ``add_concurrency``: Mem0 adds an ``add_batch`` runs at once.
    """

    result_cache = None  # Mem0 has no search-result cache

    def __init__(self, memory: Any, *, threshold: float | None = None, add_concurrency: int = 8) -> None:
        if add_concurrency < 1:
            raise ValueError(f"add_concurrency must be at least 1, got {add_concurrency}")
        self.memory = memory
        self.threshold = threshold
        self.add_concurrency = add_concurrency

    @property
    def llm_calls(self) -> int:
        """Calls Mem0 made to its LLM (0 unless Mem0 took an inference path)."""
        llm = getattr(self.memory, "llm", None)
        return llm.calls if isinstance(llm, ForbiddenLLM) else 0

    # -- writes

    async def add(self, text: str, *, user_id: str | None = None, agent_id: str | None = None,
                  run_id: str | None = None, metadata: dict[str, Any] | None = None) -> Memory:
        """Store ``text`` as one memory (``infer=False``: no LLM extraction)."""
        check_content(text)
        meta = dict(check_metadata(metadata))
        scopes = _scopes("add", user_id=user_id, agent_id=agent_id, run_id=run_id)
        reply = await self.memory.add(text, **scopes, metadata=meta or None, infer=False)
        results = reply.get("results") or []
        if len(results) != 1:
            raise AgentmemError(f"Mem0 stored {len(results)} memories for one text (expected 1): {reply!r:.300}")
        return Memory(content=text, metadata=meta, id=str(results[0]["id"]), **scopes)

    async def add_batch(self, texts: Sequence[str], *, user_id: str | None = None,
                        agent_id: str | None = None, run_id: str | None = None,
                        metadata: dict[str, Any] | Sequence[dict[str, Any] | None] | None = None) -> list[Memory]:
        """Store several texts of one scope (one Mem0 ``add`` each, a few at a time)."""
        check_texts(texts)
        if metadata is None or isinstance(metadata, dict):
            metas: list[dict[str, Any] | None] = [metadata] * len(texts)
        elif isinstance(metadata, Sequence) and len(metadata) == len(texts):
            metas = list(metadata)
        else:
            raise InvalidMemoryError("metadata must be one dict, or a list with one dict (or None) per text")
        _scopes("add_batch", user_id=user_id, agent_id=agent_id, run_id=run_id)
        gate = asyncio.Semaphore(self.add_concurrency)

        async def one(text: str, meta: dict[str, Any] | None) -> Memory:
            async with gate:
                return await self.add(text, user_id=user_id, agent_id=agent_id, run_id=run_id, metadata=meta)

        return list(await asyncio.gather(*(one(t, m) for t, m in zip(texts, metas))))

    async def update(self, memory_id: str, text: str) -> Memory:
        """Replace a memory's text (Mem0 re-embeds it and records the change in its history)."""
        check_content(text)
        try:
            await self.memory.update(memory_id, text=text)
        except ValueError as exc:
            raise _not_found(memory_id, exc) from None
        return await self.get(memory_id)

    async def delete(self, memory_id: str) -> None:
        try:
            await self.memory.delete(memory_id)
        except ValueError as exc:
            raise _not_found(memory_id, exc) from None

    async def delete_all(self, *, user_id: str | None = None, agent_id: str | None = None,
                         run_id: str | None = None) -> int:
        """Delete every memory of these scopes; the count is what Mem0 listed just before."""
        scopes = _scopes("delete_all", user_id=user_id, agent_id=agent_id, run_id=run_id)
        listed = await self.memory.get_all(filters=dict(scopes), top_k=1_000_000)
        await self.memory.delete_all(**scopes)
        return len(listed.get("results") or [])

    # -- reads

    async def get(self, memory_id: str) -> Memory:
        found = await self.memory.get(memory_id)
        if not found:
            raise MemoryNotFoundError(memory_id)
        return _memory(found)

    async def history(self, memory_id: str) -> list[HistoryEvent]:
        rows = await self.memory.history(memory_id)
        return [HistoryEvent(memory_id=str(row["memory_id"]), event=str(row["event"]),
                             old_content=row.get("old_memory"), new_content=row.get("new_memory"),
                             created_at=_time(row.get("created_at")) or datetime.min)
                for row in rows]

    async def search(self, query: str, *, user_id: str | None = None, agent_id: str | None = None,
                     run_id: str | None = None, filters: dict[str, Any] | None = None,
                     limit: int = 10) -> list[Memory]:
        """Mem0's ``search`` (its semantic + keyword scoring), best first, at most ``limit``."""
        check_content(query)
        check_limit(limit)
        selection = check_selection(user_id=user_id, agent_id=agent_id, run_id=run_id, filters=filters)
        if not selection.scopes:
            raise Mem0UnsupportedError("Mem0 searches only within a user_id, agent_id or run_id: pass one")
        mem0_filters: dict[str, Any] = dict(selection.scopes)
        for condition in selection.conditions:
            _add_condition(mem0_filters, condition)
        kwargs: dict[str, Any] = {} if self.threshold is None else {"threshold": self.threshold}
        reply = await self.memory.search(query, top_k=limit, filters=mem0_filters, **kwargs)
        return [_memory(item) for item in (reply.get("results") or [])[:limit]]


def _scopes(verb: str, **scopes: str | None) -> dict[str, str]:
    named = {k: v for k, v in scopes.items() if v is not None}
    if not named:
        raise Mem0UnsupportedError(f"Mem0's {verb} needs a user_id, agent_id or run_id: pass one")
    return named


def _not_found(memory_id: str, exc: ValueError) -> Exception:
    if "not found" in str(exc):
        return MemoryNotFoundError(memory_id)
    return InvalidMemoryError(f"Mem0 refused memory {memory_id!r}: {exc}")


_OPERATORS = {"gt": "gt", "gte": "gte", "lt": "lt", "lte": "lte"}


def _add_condition(filters: dict[str, Any], condition: Condition) -> None:
    """Put one checked condition into Mem0's filter dict, or say why Mem0 cannot do it."""
    key, op, value = condition
    if key in _CORE_KEYS or key in ("data", "text_lemmatized"):
        raise Mem0UnsupportedError(f"Mem0 keeps its own {key!r} field in a memory's payload: "
                                   "filter on another metadata key")
    spec = filters.setdefault(key, {})
    if not isinstance(spec, dict):  # only our own earlier conditions put values here
        spec = filters[key] = {"eq": spec}
    if op == "eq" and is_scalar(value) and value is not None:
        spec["eq"] = value
    elif op in _OPERATORS:
        spec[_OPERATORS[op]] = value
    elif op == "in" and all(is_scalar(v) and v is not None for v in value):
        spec["in"] = list(value)
    elif op == "exists" and value is True:
        filters[key] = "*"
    else:
        raise Mem0UnsupportedError(
            f"Mem0's pgvector store cannot filter {key!r} with {op} {value!r:.60}: it supports eq with "
            "a scalar, gt/gte/lt/lte, in with scalars and exists: True (its ne and nin exclude "
            "memories without the key, which ours include)")


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _memory(item: dict[str, Any]) -> Memory:
    """Our :class:`Memory` from one of Mem0's result dicts."""
    score = item.get("score")
    return Memory(content=str(item.get("memory", "")), user_id=item.get("user_id"),
                  agent_id=item.get("agent_id"), run_id=item.get("run_id"),
                  metadata=dict(item.get("metadata") or {}), id=str(item["id"]),
                  created_at=_time(item.get("created_at")) or datetime.min,
                  updated_at=_time(item.get("updated_at")),
                  score=None if score is None else float(score))


def mem0_service_fixture(*, database: str = "pg_database", embedder: str = "embedder",
                         threshold: float | None = None, hnsw: bool = True, maxconn: int = 16,
                         add_concurrency: int = 8) -> Callable[..., Any]:
    """Make a fixture giving a :class:`Mem0MemoryService` on a fresh database of the run's Postgres.

    ``database``/``embedder`` name the fixtures giving the database DSN and the
    embedder whose model Mem0 uses; ``hnsw`` and ``maxconn`` go to Mem0's pgvector
    store (its defaults: an HNSW index, and the pool size of our ``pg_pool``);
    ``threshold`` is Mem0's search threshold (``None``: its default). Skips with
    the install command when ``mem0ai`` is missing, and fails the test if Mem0
    called an LLM.
    """

    async def service(tmp_path: Path, **fixtures: Any) -> AsyncIterator[Mem0MemoryService]:
        model = fixtures[embedder]
        try:
            memory = await asyncio.to_thread(
                build_async_memory, dsn=fixtures[database], loaded=shared_model(model.model_name),
                history_db=tmp_path / "mem0-history.db", hnsw=hnsw, maxconn=maxconn)
        except Mem0MissingError as exc:
            pytest.skip(f"{exc}")
        if memory.embedding_model.config.embedding_dims != model.dim:
            raise AgentmemError(f"Mem0's model makes {memory.embedding_model.config.embedding_dims}-dim "
                                f"vectors, the run's embedder {model.dim}-dim ones")
        adapter = Mem0MemoryService(memory, threshold=threshold, add_concurrency=add_concurrency)
        try:
            yield adapter
        finally:
            await asyncio.to_thread(close_async_memory, memory)
        if adapter.llm_calls:
            pytest.fail(f"Mem0 called its LLM {adapter.llm_calls} times (expected none with infer=False)")

    service.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("tmp_path", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY) for name in dict.fromkeys((database, embedder))])
    return pytest_asyncio.fixture(service)


#: The default fixture: ``memory_service = mem0_memory_service`` in a conftest runs the
#: shipped scenarios against Mem0.
mem0_memory_service = mem0_service_fixture()
