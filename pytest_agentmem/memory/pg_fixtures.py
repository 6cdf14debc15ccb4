"""Fixtures for the Postgres memory repository and the graph store (issue 4).

Built by factories, as the service fixtures are, so a conftest can make
variants::

    from pytest_agentmem.memory.pg_fixtures import memory_repo_fixture

    small_repo = memory_repo_fixture(dim=64, exact_threshold=0)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_asyncio

from .graph import GraphStore
from .postgres import PostgresMemoryRepository

#: The embedder's dimension (all-MiniLM-L6-v2).
DEFAULT_DIM = 384


def memory_repo_fixture(*, dim: int = DEFAULT_DIM, vector_index: bool = True,
                        **options: Any) -> Callable[..., Any]:
    """Make an async fixture giving a set-up :class:`PostgresMemoryRepository`.

    It runs on ``pg_pool`` (an isolated database per test); ``options`` go to
    the repository (``table``, ``ef_search``, ``exact_threshold``...).
    """

    @pytest_asyncio.fixture
    async def repo(pg_pool: Any) -> AsyncIterator[PostgresMemoryRepository]:
        created = PostgresMemoryRepository(pg_pool, dim=dim, **options)
        await created.setup(vector_index=vector_index)
        yield created

    return repo


def graph_store_fixture(**options: Any) -> Callable[..., Any]:
    """Make an async fixture giving a set-up :class:`GraphStore` on ``pg_pool``."""

    @pytest_asyncio.fixture
    async def store(pg_pool: Any) -> AsyncIterator[GraphStore]:
        created = GraphStore(pg_pool, **options)
        await created.setup()
        yield created

    return store


memory_repo = memory_repo_fixture()
graph_store = graph_store_fixture()
