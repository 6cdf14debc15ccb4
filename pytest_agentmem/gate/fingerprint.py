"""A fingerprint of the machine and software stack a measurement was made on.

``machine`` decides whether a stored baseline is comparable as is (same CPU
model, core count, memory size and the CPU flags vector code depends on:
avx2, fma, avx512f; asimd/neon on ARM); ``stack`` differences (Python,
Postgres and which binaries ran it, pgvector, Redis, embedding model) are
reported but do not trigger normalisation.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from typing import Any

import pytest

from .._cpu import cpu_flags
from ..services.plugin import service_manager
from ..session import get_session

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
    """CPU model, cores, memory (GiB, rounded), OS, architecture and relevant CPU flags of this machine."""
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "os": platform.system(),
        "os_release": platform.release(),
        "arch": platform.machine(),
        "cpu_flags": cpu_flags(),
    }


def stack_fingerprint(config: pytest.Config | None) -> dict[str, Any]:
    """Python and, where the run used them, Postgres/pgvector/Redis and the embedding model."""
    stack: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
    }
    if config is None:
        return stack
    try:
        running = service_manager(config).running
        model = get_session(config).embedding_model
    except RuntimeError:  # pytest-agentmem is not configured in this run
        return stack
    for name, service in sorted(running.items()):
        stack[name] = service.version
        if service.source:
            stack[f"{name}_binaries"] = service.source
        for component, version in sorted(service.components.items()):
            stack[component] = version
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
    found = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in MACHINE_KEYS if old.get(k) != new.get(k)]
    # CPU flags: compared where both runs recorded them (older baselines did not).
    old_flags, new_flags = old.get("cpu_flags") or {}, new.get("cpu_flags") or {}
    for flag in sorted(set(old_flags) & set(new_flags)):
        if bool(old_flags[flag]) != bool(new_flags[flag]):
            yes_no = {True: "yes", False: "no"}
            found.append(f"cpu flag {flag}: {yes_no[bool(old_flags[flag])]} -> {yes_no[bool(new_flags[flag])]}")
    return found


def stack_differences(stored: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """Differences of the software stack, for keys both runs know."""
    old = (stored or {}).get("stack", {}) or {}
    new = current.get("stack", {})
    return [f"{k}: {old[k]} -> {new[k]}" for k in sorted(set(old) & set(new)) if old[k] != new[k]]
