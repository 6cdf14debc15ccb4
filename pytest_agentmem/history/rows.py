"""What one run appends: a :class:`RunRow` and its :class:`FigureRow` values, built from
the same report records the JSON report is made of (:mod:`pytest_agentmem.report.records`).

A figure is one metric of one measurement of one test: its headline value, the
summary of its per-round samples, the workload it measured and the gate's verdict
on it. Workload, verdict and reason are read from the record where it has them and
are ``None`` otherwise (a record of an older report, a figure no check judged).
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..presentation import verdict_rank

#: Machine fingerprint keys that make two runs' figures comparable (as the gate's
#: ``machine_differences``), plus the CPU flags vector code depends on.
MACHINE_ID_KEYS = ("cpu_model", "cpu_count", "memory_gb", "os", "arch", "cpu_flags")


@dataclass(frozen=True)
class FigureRow:
    """One stored figure (see :mod:`.schema` for the columns)."""

    test: str
    measurement: str
    metric: str
    value: float | None
    samples: tuple[float, ...] = ()
    workload: dict[str, Any] | None = None
    verdict: str | None = None
    reason: str | None = None
    outcome: str | None = None

    @property
    def workload_id(self) -> str | None:
        return workload_id(self.workload)

    def summary(self) -> dict[str, float | int | None]:
        """``n``, ``median``, ``mean``, ``stdev`` (None below 2 samples), ``min``, ``max``."""
        return summarise(self.samples)


@dataclass(frozen=True)
class RunRow:
    """One stored run (see :mod:`.schema` for the columns)."""

    started_at: str  # ISO-8601 UTC
    machine: dict[str, Any]
    stack: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    commit_sha: str | None = None
    branch: str | None = None
    commit_time: str | None = None
    finished_at: str | None = None
    plugin_version: str | None = None
    source: str = "plugin"
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def machine_id(self) -> str:
        return machine_id(self.machine)


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def machine_id(machine: dict[str, Any]) -> str:
    """A short stable id of a machine fingerprint (its comparable keys only)."""
    return _digest({k: machine.get(k) for k in MACHINE_ID_KEYS})


def workload_id(workload: dict[str, Any] | None) -> str | None:
    """A short stable id of a workload, ``None`` when the figure names none."""
    return None if workload is None else _digest(workload)


def machine_label(machine: dict[str, Any]) -> str:
    """``AMD EPYC, 2 CPUs, 24 GB`` for tables and legends."""
    parts = [str(machine.get("cpu_model") or "unknown CPU")]
    if machine.get("cpu_count"):
        parts.append(f"{machine['cpu_count']} CPUs")
    if machine.get("memory_gb"):
        parts.append(f"{machine['memory_gb']:g} GB")
    return ", ".join(parts)


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def summarise(samples: Sequence[float]) -> dict[str, float | int | None]:
    values = [v for v in samples if math.isfinite(v)]
    if not values:
        return {"n": 0, "median": None, "mean": None, "stdev": None, "min": None, "max": None}
    return {"n": len(values), "median": float(statistics.median(values)),
            "mean": float(statistics.fmean(values)),
            "stdev": float(statistics.stdev(values)) if len(values) > 1 else None,
            "min": min(values), "max": max(values)}


def _figure_verdict(checks: Iterable[dict[str, Any]], measurement: str,
                    metric: str) -> tuple[str | None, str | None]:
    """The worst verdict of the checks of one figure, with its reason (or its message)."""
    mine = [c for c in checks if c.get("measurement") == measurement and c.get("metric") == metric
            and c.get("verdict") is not None]
    if not mine:
        return None, None
    worst = min(mine, key=lambda c: verdict_rank(c.get("verdict")))
    reason = worst.get("reason")
    return str(worst["verdict"]), (str(reason) if reason else None)


def figures_of(record: dict[str, Any]) -> list[FigureRow]:
    """Every figure of one test record (none for a skipped test)."""
    if record.get("outcome") == "skipped" or record.get("pytest_outcome") == "skipped":
        return []
    test = str(record.get("nodeid", ""))
    checks = list(record.get("checks") or [])
    rows: list[FigureRow] = []
    for m in record.get("measurements") or []:
        name = str(m.get("name", ""))
        rounds = m.get("rounds") or []
        workload = m.get("workload")
        for metric, raw in sorted((m.get("metrics") or {}).items()):
            samples = tuple(v for v in (finite(r.get(metric)) for r in rounds if isinstance(r, dict))
                            if v is not None)
            value = finite(raw)
            if value is None and not samples:
                continue
            verdict, reason = _figure_verdict(checks, name, metric)
            rows.append(FigureRow(
                test=test, measurement=name, metric=str(metric), value=value,
                samples=samples or ((value,) if value is not None else ()),
                workload=dict(workload) if isinstance(workload, dict) and workload else None,
                verdict=verdict, reason=reason, outcome=record.get("outcome")))
    return rows


def figures_of_records(records: Iterable[dict[str, Any]]) -> list[FigureRow]:
    """Every figure of a run's records, in a stable order."""
    return [row for record in sorted(records, key=lambda r: str(r.get("nodeid", "")))
            for row in figures_of(record)]
