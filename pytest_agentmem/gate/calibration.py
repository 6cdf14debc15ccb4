"""A CPU calibration probe, to compare runs made on different machines.

The probe is real CPU work of the kind the plugin's workloads do in Python
(JSON encoding and SHA-256 of text, sorting): ``ops_per_s`` is how many probe
operations a single core does per second. It is measured once per process,
only when needed (writing a baseline, or comparing against one recorded on
another machine), as the median of several short repetitions so one
interrupted repetition does not move it. ``spread`` (max/min - 1 of the
repetitions without the fastest and slowest) says how far to trust it. A probe adds its own noise, so the
gate never normalises a same-machine comparison.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..load.probe import (  # the probe itself runs in the load engine, after each round
    PROBE_CPU,
    PROBE_MAX_S,
    PROBE_MIN_S,
    PROBE_NAME,
    PROBE_ROUND_SHARE,
    PROBE_WALL,
    probe_after_round,
    probe_budget,
    probe_op,
    round_probe,
)

__all__ = ["PROBE_CPU", "PROBE_MAX_S", "PROBE_MIN_S", "PROBE_NAME", "PROBE_ROUND_SHARE", "PROBE_WALL",
           "measure_component", "measure_probe", "probe_after_round", "probe_budget", "probe_slowdowns",
           "round_probe", "slowdown", "speed_ratio", "speed_ratios", "summarise_probes"]


def measure_probe(repetitions: int = 7, seconds: float = 0.06) -> dict[str, Any]:
    """Run the probe ``repetitions`` times for about ``seconds`` each; median ops/s."""
    rates: list[float] = []
    i = 0
    for _ in range(repetitions):
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            for _ in range(20):
                probe_op(i)
                i += 1
            count += 20
            now = time.perf_counter()
            if now >= deadline:
                break
        rates.append(count / (now - start))
    trimmed = sorted(rates)[1:-1] if len(rates) > 3 else rates
    return {"probe": PROBE_NAME, "ops_per_s": statistics.median(rates),
            "spread": max(trimmed) / min(trimmed) - 1, "samples": rates}


def _rate_ratio(old: Any, new: Any) -> float | None:
    if (not isinstance(old, (int, float)) or not isinstance(new, (int, float))
            or isinstance(old, bool) or isinstance(new, bool) or old <= 0 or new <= 0):
        return None
    return float(new) / float(old)


def speed_ratio(stored: dict[str, Any] | None, current: dict[str, Any] | None) -> float | None:
    """This machine's speed relative to the baseline's (< 1: this one is slower)."""
    if not stored or not current or stored.get("probe") != current.get("probe"):
        return None
    return _rate_ratio(stored.get("ops_per_s"), current.get("ops_per_s"))


# Components probes. The probe above is Python; a component's own code can stand
# differently between two machines: the embedding model's matrix products run on the
# vector units (AVX2 on one CPU, AVX-512 on another, NEON on ARM), which Python code
# barely uses. A fixture that loads such a component registers a probe of it
# (``AgentmemSession.speed_probes``: a name and a function that runs a fixed piece
# of its work once and returns operations per second), and the calibration measures
# it beside the Python probe, under ``"components"``.

#: Runs of a component's probe whose median is its rate (after one run unmeasured).
COMPONENT_REPETITIONS = 5


def measure_component(probe: Callable[[], float], repetitions: int = COMPONENT_REPETITIONS) -> float | None:
    """The median rate of ``repetitions`` calls of ``probe`` (after one warm-up call).

    None if the probe fails or returns no positive rate: a component that cannot be
    probed is left out of the comparison, never guessed.
    """
    try:
        probe()
        rates = [float(probe()) for _ in range(repetitions)]
    except Exception:  # noqa: BLE001 - a probe is optional; the gate goes on without it
        return None
    rate = statistics.median(rates)
    return rate if rate > 0 else None


def speed_ratios(stored: dict[str, Any] | None, current: dict[str, Any] | None) -> dict[str, float]:
    """This machine's speed relative to the baseline's, per probe both measured.

    The Python probe under its name (``PROBE_NAME``), each component under its own.
    """
    out: dict[str, float] = {}
    main = speed_ratio(stored, current)
    if main is not None:
        out[PROBE_NAME] = main
    old: Mapping[str, Any] = (stored or {}).get("components") or {}
    new: Mapping[str, Any] = (current or {}).get("components") or {}
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for name in sorted(set(old) & set(new)):
            ratio = _rate_ratio(old[name], new[name])
            if ratio is not None:
                out[name] = ratio
    return out


# The interleaved probe (run by the load engine after each round, see
# pytest_agentmem.load.probe) sees the machine each round saw; the functions
# below turn its readings into the slowdown the gate may excuse.
#
# Measured on the project's 2-core machine (tests/quality/test_gate_quality_stored.py
# and the report of the "cpu" helper): with two spinning neighbours a CPU-bound
# round ran at 0.17-0.59x its quiet speed; a 0.2 s wall-time probe after each
# round moved with it (normalised ratio 0.92-1.16), a 10 ms probe did not
# (0.68-0.81: one scheduler slice decides it). The CPU-time rate of the probe
# hardly moves under a neighbour (0.92-1.04x), like the workload's CPU per op:
# it normalises ``cpu_ms_per_op`` (a host with slower cores), while the
# wall-time rate normalises latency and throughput.



def summarise_probes(readings: list[dict[str, float]]) -> dict[str, Any] | None:
    """The median wall and CPU rates of ``readings`` (None if there are none)."""
    usable = [r for r in readings if r.get(PROBE_WALL, 0) > 0 and r.get(PROBE_CPU, 0) > 0]
    if not usable:
        return None
    return {"probe": PROBE_NAME, "rounds": len(usable),
            PROBE_WALL: statistics.median(r[PROBE_WALL] for r in usable),
            PROBE_CPU: statistics.median(r[PROBE_CPU] for r in usable)}


def slowdown(stored: dict[str, Any] | None, current: dict[str, Any] | None) -> dict[str, float] | None:
    """How many times slower this run's probe ran than the baseline's: {"wall": x, "cpu": y}.

    > 1: this machine (now) is slower. None when either side has no usable probe.
    """
    if not stored or not current or stored.get("probe") != current.get("probe"):
        return None
    out: dict[str, float] = {}
    for key, name in ((PROBE_WALL, "wall"), (PROBE_CPU, "cpu")):
        old, new = stored.get(key), current.get(key)
        if (isinstance(old, (int, float)) and isinstance(new, (int, float))
                and not isinstance(old, bool) and old > 0 and new > 0):
            out[name] = float(old) / float(new)
    return out or None


def probe_slowdowns(baseline: Any, measurements: list[Any],
                    initial_rounds: dict[str, int]) -> dict[str, dict[str, float]]:
    """Per measurement name, :func:`slowdown` of the decision's rounds against the baseline.

    The decision's rounds are the confirmation rounds when the measurement was
    re-measured (``initial_rounds`` says how many came before), else all.
    """
    out: dict[str, dict[str, float]] = {}
    if baseline is None:
        return out
    for m in measurements:
        stored = baseline.measurements.get(m.name)
        readings = list(getattr(m.load, "calibration", None) or [])
        if stored is None or not readings:
            continue
        initial = initial_rounds.get(m.name)
        if initial is not None and 0 < initial < len(readings):
            readings = readings[initial:]
        found = slowdown(stored.calibration, summarise_probes(readings))
        if found:
            out[m.name] = found
    return out
