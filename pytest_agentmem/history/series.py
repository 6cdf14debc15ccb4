"""Series of the history: one per test, measurement, metric, machine and workload, in run order.

:func:`load_series` reads the store's figures (optionally of one branch, of tests
whose node id contains a text, of one metric) and groups them;
:func:`find_changes` runs the change-point detection on every series and returns
:class:`Change` values ready for a table, JSON or a chart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..gate.directions import direction_of
from .changepoints import MAX_PVALUE, ChangePoint, Test, detect
from .rows import machine_label
from .store import Store


@dataclass(frozen=True)
class SeriesKey:
    """What one series measures: test, measurement, metric, on one machine, of one workload."""

    test: str
    measurement: str
    metric: str
    machine_id: str
    workload_id: str | None

    def label(self) -> str:
        workload = f", workload {self.workload_id[:8]}" if self.workload_id else ""
        return f"{self.test} {self.measurement}.{self.metric} [machine {self.machine_id[:8]}{workload}]"


@dataclass(frozen=True)
class Point:
    """One run's value in a series."""

    run_id: int
    commit: str | None
    branch: str | None
    started_at: str
    value: float
    verdict: str | None = None


@dataclass
class Series:
    """A series and what is known of its machine and workload."""

    key: SeriesKey
    points: list[Point] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    workload: dict[str, Any] | None = None

    @property
    def values(self) -> list[float]:
        return [p.value for p in self.points]

    @property
    def machine_label(self) -> str:
        return f"{machine_label(self.machine)} ({self.key.machine_id[:8]})"


@dataclass(frozen=True)
class Change:
    """A change point of one series, with the commits around it."""

    series: Series
    point: ChangePoint
    commit_before: str | None
    commit: str | None
    started_at: str

    @property
    def regression(self) -> bool | None:
        """True when the change made the metric worse (None: the metric has no direction)."""
        direction = direction_of(self.series.key.metric)
        if direction == "none":
            return None
        return (self.point.change > 0) == (direction == "lower")

    def to_dict(self) -> dict[str, Any]:
        key = self.series.key
        return {
            "test": key.test, "measurement": key.measurement, "metric": key.metric,
            "machine_id": key.machine_id, "machine": self.series.machine_label, "workload_id": key.workload_id,
            "workload": self.series.workload, "index": self.point.index, "runs": len(self.series.points),
            "commit_before": self.commit_before, "commit": self.commit, "started_at": self.started_at,
            "mean_before": self.point.mean_before, "mean_after": self.point.mean_after,
            "stdev_before": self.point.stdev_before, "stdev_after": self.point.stdev_after,
            "change": self.point.change, "p_value": self.point.p_value, "confidence": self.point.confidence,
            "direction": direction_of(key.metric), "regression": self.regression,
        }


#: What a series' point is of each run: the headline value, or a summary of the run's rounds.
STATISTICS = {"value": "value", "median": "samples_median", "best": None}


def load_series(store: Store, *, branch: str | None = None, test: str | None = None,
                metric: str | None = None, statistic: str = "value") -> list[Series]:
    """Every series of the store (of ``branch`` when given), oldest run first.

    ``statistic``: each run's headline ``value`` (default), the ``median`` of its
    rounds, or its ``best`` round (the lowest of a lower-is-better metric, the highest
    of a higher-is-better one: a busy machine only ever makes a round worse).
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}")
    clauses, params = ["f.value IS NOT NULL"], []
    if branch is not None:
        clauses.append("r.branch = ?")
        params.append(branch)
    if metric is not None:
        clauses.append("f.metric = ?")
        params.append(metric)
    rows = store.series_rows(" AND ".join(clauses), params)
    found: dict[SeriesKey, Series] = {}
    for row in rows:
        if test and test not in row["test"]:
            continue
        key = SeriesKey(row["test"], row["measurement"], row["metric"], row["machine_id"], row["workload_id"])
        series = found.get(key)
        if series is None:
            series = found[key] = Series(key, machine=row["machine"] or {}, workload=row["workload"])
        value = point_value(row, statistic)
        if value is None:
            continue
        series.points.append(Point(int(row["run_id"]), row["commit_sha"], row["branch"], row["started_at"],
                                   value, row["verdict"]))
    return sorted((s for s in found.values() if s.points),
                  key=lambda s: (s.key.test, s.key.measurement, s.key.metric, s.key.machine_id, s.key.workload_id or ""))


def point_value(row: dict[str, Any], statistic: str) -> float | None:
    """A series row's point for ``statistic`` (see :func:`load_series`); None if not stored."""
    column = STATISTICS[statistic]
    if column is None:  # best round
        column = "samples_max" if direction_of(row["metric"]) == "higher" else "samples_min"
    value = row[column]
    return None if value is None else float(value)


def changes_of(series: Series, *, max_pvalue: float = MAX_PVALUE, min_magnitude: float = 0.0,
               test: Test = "ttest") -> list[Change]:
    """The change points of one series."""
    points = series.points
    return [Change(series, cp, points[cp.index - 1].commit, points[cp.index].commit, points[cp.index].started_at)
            for cp in detect(series.values, max_pvalue=max_pvalue, min_magnitude=min_magnitude, test=test)]


def find_changes(all_series: Iterable[Series], *, max_pvalue: float = MAX_PVALUE,
                 min_magnitude: float = 0.0, test: Test = "ttest") -> list[Change]:
    """The change points of every series, newest first."""
    found = [c for s in all_series
             for c in changes_of(s, max_pvalue=max_pvalue, min_magnitude=min_magnitude, test=test)]
    return sorted(found, key=lambda c: c.started_at, reverse=True)
