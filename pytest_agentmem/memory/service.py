"""``MemoryService``: the Mem0-style path on text (``add(infer=False)`` / ``search``).

add: check -> embed (cached) -> repository (which records history) -> invalidate
the result cache. search: embed the query (cached) -> result cache -> repository.
The service works with any :class:`~pytest_agentmem.memory.model.MemoryRepository`
and any :class:`~pytest_agentmem.memory.embedder.Embedder`-like object
(``embed``, ``embed_one``, ``dim``, ``model_id`` or ``model_name``).

Result-cache invalidation covers writes made through this service (and through
other services sharing a :class:`~pytest_agentmem.memory.cache.RedisResultCache`);
writes made straight to the repository bypass it, as in any cache-aside design.
A ``delete_all`` invalidates every cached search it can affect, whichever
scopes that search names (:func:`~.result_cache.search_scopes`).

Cached results are filed under the repository's ``cache_namespace()`` (an
optional async method naming the store's data: the shipped repositories name
their server, database and table, or directory, and when it was made), so
services on different stores, or on a store made anew in another run, never
read each other's results from a shared cache; two handles on the same data
share them. A repository without it gets a namespace private to the service.

Search ranks by :attr:`MemoryService.search_mode`: ``"hybrid"`` (default; the
query's embedding and its text, fused by the repository), ``"dense"`` or
``"lexical"`` (the text alone: nothing is embedded). The service passes the text
(``text=``, ``mode=``) only to a repository whose ``search()`` takes a ``text``
parameter; any other repository is searched by the embedding alone, as before.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import ConfigurationError
from .model import SEARCH_MODES, HistoryEvent, InvalidMemoryError, Memory, MemoryRepository
from .result_cache import SearchResultCache, delete_all_scopes, result_key, search_scopes, write_scopes
from .validation import check_content, check_limit, check_metadata, check_selection, check_texts


class MemoryService:
    """Embedder + repository + optional result cache: the full add/search path."""

    def __init__(self, repository: MemoryRepository, embedder: Any, *,
                 result_cache: SearchResultCache | None = None, search_mode: str = "hybrid") -> None:
        repo_dim = getattr(repository, "dim", None)
        if repo_dim is not None and repo_dim != embedder.dim:
            raise ConfigurationError(f"the repository holds {repo_dim}-dim vectors but the embedder "
                                     f"{getattr(embedder, 'model_name', embedder)!r} makes {embedder.dim}-dim ones")
        self.repository = repository
        self.embedder = embedder
        self.result_cache = result_cache
        self._model = str(getattr(embedder, "model_id", None) or getattr(embedder, "model_name", "model"))
        self._namespace: str | None = None
        #: Whether the repository's search() takes the query text (hybrid/lexical search).
        self.text_search = _takes_text(repository)
        self.search_mode = search_mode

    @property
    def search_mode(self) -> str:
        """``"hybrid"``, ``"dense"`` or ``"lexical"``; ``"dense"`` is what a repository
        without text search gets, whatever was asked."""
        return self._search_mode if self.text_search else "dense"

    @search_mode.setter
    def search_mode(self, mode: str) -> None:
        if mode not in SEARCH_MODES:
            raise ConfigurationError(f"search_mode must be one of {', '.join(SEARCH_MODES)}; got {mode!r}")
        if mode == "lexical" and not self.text_search:
            raise ConfigurationError(f"search_mode='lexical' needs a repository whose search() takes the "
                                     f"query text; {type(self.repository).__qualname__}.search does not")
        self._search_mode = mode

    # -- writes

    async def add(self, text: str, *, user_id: str | None = None, agent_id: str | None = None,
                  run_id: str | None = None, metadata: dict[str, Any] | None = None) -> Memory:
        """Store ``text`` as one memory (no LLM extraction: Mem0's ``infer=False``)."""
        return (await self.add_batch([text], user_id=user_id, agent_id=agent_id, run_id=run_id,
                                     metadata=[metadata] if metadata is not None else None))[0]

    async def add_batch(self, texts: Sequence[str], *, user_id: str | None = None,
                        agent_id: str | None = None, run_id: str | None = None,
                        metadata: dict[str, Any] | Sequence[dict[str, Any] | None] | None = None) -> list[Memory]:
        """Store several texts of one scope; ``metadata`` is one dict for all or one per text."""
        check_texts(texts)
        metas = self._metadata_list(metadata, len(texts))
        if not texts:
            return []
        vectors = await self.embedder.embed(list(texts))
        memories = [Memory(content=text, user_id=user_id, agent_id=agent_id, run_id=run_id,
                           metadata=meta, embedding=vector)
                    for text, meta, vector in zip(texts, metas, vectors)]
        try:
            await self.repository.add_batch(memories)
        finally:
            await self._invalidate(memories)
        return memories

    @staticmethod
    def _metadata_list(metadata: Any, n: int) -> list[dict[str, Any]]:
        if metadata is None or isinstance(metadata, dict):
            return [dict(check_metadata(metadata)) for _ in range(n)]
        if not isinstance(metadata, Sequence) or len(metadata) != n:
            raise InvalidMemoryError("metadata must be one dict, or a list with one dict (or None) per text")
        return [dict(check_metadata(m)) for m in metadata]

    async def update(self, memory_id: str, text: str) -> Memory:
        """Replace a memory's text (re-embedded); history records the old and new text."""
        check_content(text)
        old = await self.repository.get(memory_id)
        vector = await self.embedder.embed_one(text)
        try:
            return await self.repository.update(memory_id, content=text, embedding=vector)
        finally:
            await self._invalidate([old])

    async def delete(self, memory_id: str) -> None:
        old = await self.repository.get(memory_id)
        try:
            await self.repository.delete(memory_id)
        finally:
            await self._invalidate([old])

    async def delete_all(self, *, user_id: str | None = None, agent_id: str | None = None,
                         run_id: str | None = None) -> int:
        try:
            return await self.repository.delete_all(user_id=user_id, agent_id=agent_id, run_id=run_id)
        finally:
            await self._invalidate_scopes(delete_all_scopes(user_id=user_id, agent_id=agent_id, run_id=run_id))

    async def _invalidate(self, memories: list[Memory]) -> None:
        await self._invalidate_scopes(write_scopes(memories))

    async def _invalidate_scopes(self, scopes: Iterable[str]) -> None:
        if self.result_cache is not None:
            await self.result_cache.invalidate(_namespaced(await self.cache_namespace(), tuple(scopes)))

    def cache_stats(self) -> dict[str, float]:
        """Cumulative cache counters (see :data:`pytest_agentmem.counters.COUNTERS`).

        ``result_cache_*`` count the searches that asked the result cache and those
        it answered; ``embedding_*`` the texts the embedder was asked for and those
        its caches answered (when the embedder keeps ``stats``). The ``perf``
        fixture records their change over every load run beside its QPS.
        """
        counts: dict[str, float] = {}
        cache = self.result_cache
        hits, misses = getattr(cache, "hits", None), getattr(cache, "misses", None)
        if isinstance(hits, int) and isinstance(misses, int):
            counts["result_cache_hits"] = hits
            counts["result_cache_lookups"] = hits + misses
        stats = getattr(self.embedder, "stats", None)
        texts, cached = getattr(stats, "texts", None), getattr(stats, "hits", None)
        if isinstance(texts, int) and isinstance(cached, int):
            counts["embedding_cache_hits"] = cached
            counts["embedding_lookups"] = texts
        return counts

    async def cache_namespace(self) -> str:
        """The digest of the repository's ``cache_namespace()`` (read once) that this
        service's result-cache keys and counters are filed under."""
        if self._namespace is None:
            name = getattr(self.repository, "cache_namespace", None)
            text = (str(await name()) if callable(name)
                    else f"{type(self.repository).__qualname__}@{uuid.uuid4().hex}")
            self._namespace = hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()
        return self._namespace

    # -- reads

    async def get(self, memory_id: str) -> Memory:
        return await self.repository.get(memory_id)

    async def history(self, memory_id: str) -> list[HistoryEvent]:
        return await self.repository.history(memory_id)

    async def search(self, query: str, *, user_id: str | None = None, agent_id: str | None = None,
                     run_id: str | None = None, filters: dict[str, Any] | None = None,
                     limit: int = 10) -> list[Memory]:
        """The ``limit`` memories most similar to ``query`` in these scopes, best first.

        A result-cache hit answers before the query is embedded: only a miss pays the model
        (or the embedding cache).
        """
        mode = self._checked_query(query, limit, user_id=user_id, agent_id=agent_id, run_id=run_id,
                                   filters=filters)
        if self.result_cache is None:
            return await self._search(query, mode, user_id, agent_id, run_id, filters, limit)
        namespace = await self.cache_namespace()
        scopes = _namespaced(namespace, search_scopes(user_id=user_id, agent_id=agent_id, run_id=run_id))
        key = result_key(self._model, query, user_id=user_id, agent_id=agent_id, run_id=run_id,
                         filters=filters, limit=limit,
                         namespace=namespace if mode == "dense" else f"{namespace}/{mode}")
        cached, token = await self.result_cache.lookup(key, scopes)
        if cached is not None:
            return cached
        results = await self._search(query, mode, user_id, agent_id, run_id, filters, limit)
        await self.result_cache.store(key, scopes, token, results)
        return results

    async def search_uncached(self, query: str, *, user_id: str | None = None, agent_id: str | None = None,
                              run_id: str | None = None, filters: dict[str, Any] | None = None,
                              limit: int = 10) -> list[Memory]:
        """The store's own answer to :meth:`search` (same mode), past the result cache: the truth
        a cached answer is checked against."""
        mode = self._checked_query(query, limit, user_id=user_id, agent_id=agent_id, run_id=run_id,
                                   filters=filters)
        return await self._search(query, mode, user_id, agent_id, run_id, filters, limit)

    def _checked_query(self, query: str, limit: int, **selection: Any) -> str:
        """Check a search's arguments (before any cache is asked); the search mode."""
        check_content(query)
        check_limit(limit)
        check_selection(**selection)
        return self.search_mode

    async def _search(self, query: str, mode: str, user_id: str | None, agent_id: str | None,
                      run_id: str | None, filters: dict[str, Any] | None, limit: int) -> list[Memory]:
        """The store's answer: the query embedded (unless the search is lexical), then searched."""
        vector = None if mode == "lexical" else await self.embedder.embed_one(query)
        if not self.text_search:
            return await self.repository.search(vector, user_id=user_id, agent_id=agent_id,  # type: ignore[arg-type]
                                                run_id=run_id, filters=filters, limit=limit)
        return await self.repository.search(vector, user_id=user_id, agent_id=agent_id,  # type: ignore[call-arg]
                                            run_id=run_id, filters=filters, limit=limit, text=query, mode=mode)


def _takes_text(repository: Any) -> bool:
    """Whether ``repository.search`` has a ``text`` parameter (hybrid/lexical search)."""
    try:
        parameters = inspect.signature(repository.search).parameters
    except (AttributeError, TypeError, ValueError):
        return False
    return "text" in parameters and "mode" in parameters


@functools.lru_cache(maxsize=8192)
def _namespaced(namespace: str, scopes: tuple[str, ...]) -> tuple[str, ...]:
    """``scopes`` filed under a store's namespace (memoised: searches repeat their scopes)."""
    return tuple(f"{namespace}/{scope}" for scope in scopes)
