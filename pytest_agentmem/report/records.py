"""Per-test report records: plain JSON-ready dicts built from the gate's verdicts.

A record is the gate's ``TestVerdict.to_dict()`` plus what the reports need
beyond it: pytest's own outcome, the test's duration, and for each load
measurement a percentile curve read from its merged histogram. Records are what
a pytest-xdist worker sends to the controller and what every report renders, so
the JSON, markdown and HTML reports read one shape whether or not xdist ran.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from ..evidence.run import public_evidence
from ..presentation import (
    CURVE_PERCENTILES,
    OUTCOME_RANK,
    PERCENTILE_METRICS,
    VERDICT_RANK,
    Outcome,
    count_outcomes,
    outcome_rank,
    verdict_rank,
)
from ..presentation import headline as presentation_headline

__all__ = ["CURVE_PERCENTILES", "OUTCOME_RANK", "PERCENTILE_METRICS", "VERDICT_RANK",
           "build_record", "counts", "curve_from_metrics", "headline", "jsonable",
           "percentile_curve", "sort_checks", "sort_records"]


# --------------------------------------------------------------------------- JSON values


def jsonable(value: Any) -> Any:
    """``value`` with only JSON types: non-finite floats become ``None``, tuples lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return str(value)  # plain str: an enum member travels to xdist's controller as text
    if value is None or isinstance(value, (int, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return jsonable(to_dict())
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return jsonable(item())
        except (TypeError, ValueError):
            pass
    return str(value)


# --------------------------------------------------------------------------- latency curve


def percentile_curve(load: Any) -> list[list[float]]:
    """``[[percentile, ms], ...]`` of a LoadResult: from its histogram, else its percentiles.

    The histogram is read through the load engine's own accessor
    (``value_at_percentile_ms``) when it has one, else directly from an
    ``hdrh`` histogram whose unit the result names in ``histogram_unit_ms``
    (milliseconds per histogram unit, default 0.001: microseconds).
    """
    if load is None:
        return []
    accessor = getattr(load, "value_at_percentile_ms", None)
    histogram = getattr(load, "histogram", None)
    curve: list[list[float]] = []
    try:
        if callable(accessor):
            curve = [[p, float(accessor(p))] for p in CURVE_PERCENTILES]
        elif histogram is not None and histogram.get_total_count() > 0:
            unit = float(getattr(load, "histogram_unit_ms", 0.001))
            curve = [[p, histogram.get_value_at_percentile(p) * unit] for p in CURVE_PERCENTILES]
    except Exception:  # noqa: BLE001 - a report must not fail a run over a chart
        curve = []
    if curve and all(math.isfinite(v) for _, v in curve):
        return curve
    return curve_from_metrics(getattr(load, "to_dict", lambda: {})() if load is not None else {})


def curve_from_metrics(metrics: dict[str, Any]) -> list[list[float]]:
    """The few percentiles a result names (p50 .. p99.9), as a coarse curve."""
    curve = [[p, float(metrics[key])] for p, key in PERCENTILE_METRICS
             if isinstance(metrics.get(key), (int, float)) and math.isfinite(metrics[key])]
    if curve and isinstance(metrics.get("max_ms"), (int, float)) and math.isfinite(metrics["max_ms"]):
        curve.append([100.0, float(metrics["max_ms"])])
    return curve


# --------------------------------------------------------------------------- records


def build_record(nodeid: str, verdict: Any, measurements: Sequence[Any], *,
                 pytest_outcome: str, duration_s: float, message: str = "",
                 worker: str = "") -> dict[str, Any]:
    """One test's record: the verdict's dict plus pytest outcome, duration and curves."""
    from ..gate.verdict import measurement_to_dict

    if verdict is not None:
        record = dict(verdict.to_dict())
        live = list(getattr(verdict, "measurements", []) or measurements)
    else:
        live = list(measurements)
        record = {"nodeid": nodeid, "outcome": _outcome_without_verdict(pytest_outcome, live),
                  "checks": [], "measurements": [measurement_to_dict(m) for m in live],
                  "baseline_path": None, "notes": [], "updated": {}, "fingerprint": {},
                  "baseline_fingerprint": None}
    for entry, measurement in zip(record.get("measurements", []), live):
        load = getattr(measurement, "load", None)
        if load is not None:
            entry["percentiles"] = percentile_curve(load)
        evidence = public_evidence(measurement)  # issue 23: statements, pool, I/O, Redis, profile
        if evidence:
            entry["evidence"] = evidence
    bad = (Outcome.FAILED, Outcome.ERROR)
    if pytest_outcome in bad and record.get("outcome") not in bad:
        record["gate_outcome"] = record.get("outcome")
        record["outcome"] = Outcome.ERROR.value  # the test itself failed, whatever the figures said
    record.update(pytest_outcome=pytest_outcome, duration_s=duration_s, worker=worker,
                  has_verdict=verdict is not None)
    if message:
        record["message"] = message
    return jsonable(record)


def _outcome_without_verdict(pytest_outcome: str, measurements: Sequence[Any]) -> str:
    if pytest_outcome == Outcome.SKIPPED:
        return Outcome.SKIPPED.value
    if pytest_outcome in (Outcome.FAILED, Outcome.ERROR):
        return Outcome.ERROR.value
    return (Outcome.UNCHECKED if measurements else Outcome.PASSED).value


def sort_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Failed tests first, then errors, new, updated, passed, skipped; stable otherwise."""
    return sorted(records, key=lambda r: outcome_rank(r.get("outcome")))


def sort_checks(rows: Iterable[tuple[dict[str, Any], dict[str, Any]]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(record, check)`` pairs, failing checks first, then warnings, new, passes."""
    return sorted(rows, key=lambda rc: (verdict_rank(rc[1].get("verdict")),
                                        outcome_rank(rc[0].get("outcome"))))


def counts(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How many tests ended in each outcome (passed, failed, no-baseline ...)."""
    return count_outcomes(record.get("outcome") for record in records)


def headline(records: Sequence[dict[str, Any]]) -> str:
    """The run in one line (see :func:`pytest_agentmem.presentation.headline`)."""
    return presentation_headline(records)
