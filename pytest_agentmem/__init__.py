"""pytest-agentmem: performance regression gating for agent-memory systems on real components.

The public API. Light names are imported here; the components that pull in
heavier libraries (asyncpg, LanceDB, fastembed, hdrhistogram) load on first use.

PYTEST_DONT_REWRITE: the plugin's code needs no assertion rewriting. pytest >= 9.2
marks an editable install's plugin package for rewriting although its finder hides
the files from the rewrite hook; an in-process (pytester) run inside such a session
then found this package imported unrewritten and warned "Module already imported so
cannot be rewritten", an error under ``-W error``. This marker ends the warning there.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    AgentmemError,
    BaselineError,
    ConfigurationError,
    PerformanceRegression,
    ServiceStartError,
    ServiceUnavailableError,
)
from .measurement import Measurement
from .memory.model import (
    HistoryEvent,
    InvalidMemoryError,
    Memory,
    MemoryNotFoundError,
    MemoryRepository,
)

if TYPE_CHECKING:
    from .load.result import LoadResult
    from .load.worker_op import WorkerInfo, WorkerOp
    from .memory.embedder import Embedder
    from .memory.graph import GraphStore, Relation
    from .memory.lance import LanceDBMemoryStore
    from .memory.postgres import PostgresMemoryRepository
    from .memory.service import MemoryService

__version__ = "0.1.0"

_LAZY = {
    "LoadResult": "pytest_agentmem.load.result",
    "Embedder": "pytest_agentmem.memory.embedder",
    "GraphStore": "pytest_agentmem.memory.graph",
    "Relation": "pytest_agentmem.memory.graph",
    "LanceDBMemoryStore": "pytest_agentmem.memory.lance",
    "PostgresMemoryRepository": "pytest_agentmem.memory.postgres",
    "MemoryService": "pytest_agentmem.memory.service",
    "WorkerOp": "pytest_agentmem.load.worker_op",
    "WorkerInfo": "pytest_agentmem.load.worker_op",
}

__all__ = [
    "AgentmemError", "BaselineError", "ConfigurationError", "PerformanceRegression",
    "ServiceStartError", "ServiceUnavailableError", "Measurement", "HistoryEvent",
    "InvalidMemoryError", "Memory", "MemoryNotFoundError", "MemoryRepository",
    "LoadResult", "Embedder", "GraphStore", "Relation", "LanceDBMemoryStore",
    "PostgresMemoryRepository", "MemoryService", "WorkerOp", "WorkerInfo",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pytest_agentmem' has no attribute {name!r}")
