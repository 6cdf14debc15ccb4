"""The CPU features that decide whether compiled vector code runs on this machine."""

from __future__ import annotations

import platform
from functools import lru_cache

#: Flags worth recording: x86-64-v3 (avx2, fma), AVX-512 (avx512f), ARM's SIMD (asimd/neon).
RELEVANT_FLAGS = {"x86": ("avx2", "fma", "avx512f"), "arm": ("asimd", "neon")}


@lru_cache(maxsize=1)
def proc_flags() -> frozenset[str]:
    """Every feature flag the kernel reports for the first CPU (empty off Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def cpu_flags() -> dict[str, bool]:
    """``{"avx2": True, "fma": True, "avx512f": False}`` on x86-64, ``{"asimd": ..., "neon": ...}`` on ARM.

    Empty when the platform does not say (no /proc/cpuinfo).
    """
    flags = proc_flags()
    if not flags:
        return {}
    machine = platform.machine().lower()
    family = "arm" if machine.startswith(("arm", "aarch64")) else "x86"
    return {name: name in flags for name in RELEVANT_FLAGS[family]}


def describe_cpu_flags() -> str:
    """``avx2 yes, fma yes, avx512f no`` (or ``unknown``)."""
    flags = cpu_flags()
    return ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items()) or "unknown"
