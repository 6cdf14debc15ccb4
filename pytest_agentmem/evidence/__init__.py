"""Where the time went: database statements, pool, I/O, Redis and a profile beside every verdict.

Every measured round of a ``perf.run`` reads ``pg_stat_statements`` and Redis'
``INFO commandstats`` before and after its measured phase, samples the asyncpg
pool and the I/O counters during it (:mod:`.collector`), and, on demand or when
the gate re-measures a suspect, records a py-spy profile (:mod:`.profiling`).
The figures travel as ``Measurement.evidence`` into the JSON and HTML reports
and the terminal summary. Register a conftest's own pool or Redis client with
:func:`watch_pool` / :func:`watch_redis` (the shipped fixtures do).
"""

from __future__ import annotations

from .sources import watch_pool, watch_redis

__all__ = ["watch_pool", "watch_redis"]
