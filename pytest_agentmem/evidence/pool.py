"""The asyncpg pool's connections, sampled over a run: in use, idle, open, waiting.

``in_use`` connections are acquired by an operation, ``idle`` ones are open and
free, ``open`` is the pool's current size, ``waiting`` counts the acquirers
queued for a free connection (read from asyncpg's queue: ``None`` where a
future asyncpg version hides it).
"""

from __future__ import annotations

from typing import Any


def pool_state(pool: Any) -> dict[str, int | None]:
    """The pool's connections now (``{}`` if ``pool`` is not an asyncpg pool)."""
    try:
        open_ = int(pool.get_size())
        idle = int(pool.get_idle_size())
        size = int(pool.get_max_size())
    except (AttributeError, TypeError):
        return {}
    queue = getattr(pool, "_queue", None)
    waiting: int | None = None
    in_use = max(0, open_ - idle)
    if queue is not None:
        try:
            in_use = max(0, size - int(queue.qsize()))
            waiting = sum(1 for f in getattr(queue, "_getters", ()) if not f.done())
        except (AttributeError, TypeError):
            waiting = None
    return {"in_use": in_use, "idle": idle, "open": open_, "waiting": waiting, "max": size}


def summarise_pool(samples: list[list[float]]) -> dict[str, float]:
    """Mean and peak of ``[t, in_use, idle, open, waiting]`` samples."""
    if not samples:
        return {}
    out: dict[str, float] = {"samples": float(len(samples))}
    for index, name in ((1, "in_use"), (2, "idle"), (3, "open"), (4, "waiting")):
        values = [s[index] for s in samples if s[index] is not None]
        if values:
            out[f"{name}_mean"] = round(sum(values) / len(values), 2)
            out[f"{name}_max"] = float(max(values))
    return out
