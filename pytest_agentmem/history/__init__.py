"""Every run's figures kept in a history store; trends, change points, a gate against the history.

- :mod:`.target` parses ``--agentmem-history TARGET`` (SQLite path or PostgreSQL URL);
- :mod:`.schema` and :mod:`.store`: the versioned schema and transactional appends;
- :mod:`.rows`: the stored rows, built from the report records;
- :mod:`.changepoints`: E-divisive means with a t-test (as Apache Otava does);
- :mod:`.judge`: ``--agentmem-history-baseline N``, a figure against its last N runs;
- :mod:`.trends`: static HTML pages per test;
- ``python -m pytest_agentmem.history``: ``import``, ``changes``, ``trends``.
"""

from __future__ import annotations

from ..history_target import Target, parse_target
from .store import HistoryError, Store, open_store

__all__ = ["HistoryError", "Store", "Target", "open_store", "parse_target"]
