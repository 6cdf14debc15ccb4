"""Caches of the memory path: embeddings (L1 / Redis L2 / on disk) and search results.

Two families, each in its own module, both importable from here:

- :mod:`.vector_cache`: :class:`LRUVectorCache`, :class:`RedisVectorCache`,
  :class:`DiskVectorCache` (embeddings keyed by model id and text digest);
- :mod:`.result_cache`: :class:`ResultCache`, :class:`RedisResultCache`
  (search results, invalidated by writes through per-scope generation counters).
"""

from __future__ import annotations

from .result_cache import (
    GLOBAL_SCOPE,
    RedisResultCache,
    ResultCache,
    SearchResultCache,
    delete_all_scopes,
    result_key,
    scopes_of,
    search_scopes,
    write_scopes,
)
from .vector_cache import DiskVectorCache, LRUVectorCache, RedisVectorCache, text_digest

__all__ = [
    "GLOBAL_SCOPE", "DiskVectorCache", "LRUVectorCache", "RedisResultCache", "RedisVectorCache",
    "ResultCache", "SearchResultCache", "delete_all_scopes", "result_key", "scopes_of", "search_scopes",
    "text_digest", "write_scopes",
]
