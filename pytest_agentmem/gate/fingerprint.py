"""A fingerprint of the machine and software stack a measurement was made on.

``machine`` decides whether a stored baseline is comparable as is (same CPU
model, core count and memory size); ``stack`` differences (Python, Postgres,
pgvector, Redis, embedding model) are reported but do not trigger
normalisation.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from typing import Any

import pytest

MACHINE_KEYS = ("cpu_model", "cpu_count", "memory_gb", "os", "arch")


@lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _memory_gb() -> float | None:
    try:
        import psutil
    except ImportError:
        return None
    return round(psutil.virtual_memory().total / 2**30)


def machine_fingerprint() -> dict[str, Any]:
    """CPU model, cores, memory (GiB, rounded), OS and architecture of this machine."""
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "os": platform.system(),
        "os_release": platform.release(),
        "arch": platform.machine(),
    }


def stack_fingerprint(config: pytest.Config | None) -> dict[str, Any]:
    """Python and, where the run used them, Postgres/pgvector/Redis and the embedding model."""
    stack: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
    }
    if config is None:
        return stack
    from ..session import get_session

    try:
        session = get_session(config)
    except RuntimeError:
        return stack
    for name, service in sorted(session.services.running.items()):
        stack[name] = service.version
        for component, version in sorted(service.components.items()):
            stack[component] = version
    model = session.extras.get("embedding_model")
    if model:
        stack["embedding_model"] = str(model)
    return stack


def fingerprint(config: pytest.Config | None) -> dict[str, Any]:
    """``{"machine": {...}, "stack": {...}}`` of this run."""
    return {"machine": machine_fingerprint(), "stack": stack_fingerprint(config)}


def machine_differences(stored: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """``"cpu_model: A -> B"`` for each machine key that differs (empty: same machine)."""
    old = (stored or {}).get("machine", {}) or {}
    new = current.get("machine", {})
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in MACHINE_KEYS if old.get(k) != new.get(k)]


def stack_differences(stored: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """Differences of the software stack, for keys both runs know."""
    old = (stored or {}).get("stack", {}) or {}
    new = current.get("stack", {})
    return [f"{k}: {old[k]} -> {new[k]}" for k in sorted(set(old) & set(new)) if old[k] != new[k]]
