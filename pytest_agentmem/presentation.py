"""The presentation vocabulary shared by the gate, the reports and the A/B mode.

One place for how the plugin *says* things (pyperf keeps its formatters in one
module the same way): the outcomes and verdicts and their order (bad news first),
how many of each, the percentiles every summary reports, how a number, a
percentage, a p-value and a paired change are written, and how a test id is
shortened. The terminal summary (``gate/summary.py``), the markdown, JSON and
HTML reports (``report/``) and the A/B gate (``compare/``) all import from here,
so they cannot disagree.

This module imports nothing from the package: every layer may use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._enum import StrEnum

# --------------------------------------------------------------------------- outcomes


class Outcome(StrEnum):
    """How a perf test ended, in the order every summary lists them (bad news first).

    The values are what the JSON report and ``TestVerdict.outcome`` hold.
    """

    FAILED = "failed"  # a check failed: a regression or a breached threshold
    ERROR = "error"  # the gate could not decide, or the test itself failed
    NOT_JUDGED = "not-judged"  # none failed, some figures not judged (no baseline, busy machine...)
    UPDATED = "updated"  # the run wrote a new baseline
    PASSED = "passed"  # every figure judged, none failed
    UNCHECKED = "unchecked"  # measured, but no verdict reached the report
    SKIPPED = "skipped"


class Verdict(StrEnum):
    """The verdict of one check, in the order every table lists them (bad news first)."""

    FAIL = "fail"  # judged: regressed (fails the test)
    NOT_JUDGED = "not-judged"  # shown, not decided; the check's ``reason`` says why
    PASS = "pass"  # judged: within its tolerance, or not significantly worse


#: Rank of each outcome / verdict name in listing order (unknown names sort last).
OUTCOME_RANK: dict[str, int] = {o.value: i for i, o in enumerate(Outcome)}
VERDICT_RANK: dict[str, int] = {v.value: i for i, v in enumerate(Verdict)}


def outcome_rank(outcome: object) -> int:
    """Where ``outcome`` (an :class:`Outcome` or its string) sorts: failures first."""
    return OUTCOME_RANK.get(str(outcome), len(OUTCOME_RANK))


def verdict_rank(verdict: object) -> int:
    """Where ``verdict`` (a :class:`Verdict` or its string) sorts: failures first."""
    return VERDICT_RANK.get(str(verdict), len(VERDICT_RANK))


def count_outcomes(outcomes: Iterable[object]) -> dict[str, int]:
    """How many tests ended in each outcome, in listing order; only those that occur."""
    return _count(outcomes, OUTCOME_RANK)


def count_verdicts(verdicts: Iterable[object]) -> dict[str, int]:
    """How many checks got each verdict, in listing order; only those that occur."""
    return _count(verdicts, VERDICT_RANK)


def _count(names: Iterable[object], ranks: Mapping[str, int]) -> dict[str, int]:
    found: dict[str, int] = {}
    for name in names:
        found[str(name)] = found.get(str(name), 0) + 1
    return dict(sorted(found.items(), key=lambda kv: ranks.get(kv[0], len(ranks))))


# --------------------------------------------------------------------------- headline

#: What to do about each reason a figure was not judged.
NOT_JUDGED_ADVICE: dict[str, str] = {
    "no baseline": "record one with --update-baselines",
    "another machine's baseline": "record this machine's with --update-baselines, or gate with "
                                  "--agentmem-compare",
    "tests and probes disagree": "record this machine's with --update-baselines, or gate with "
                                 "--agentmem-compare",
    "machine busy": "re-run on a quiet machine, or gate with --agentmem-compare",
    "tests moved unevenly": "re-run on a quiet machine, record this machine's baselines, or gate with "
                            "--agentmem-compare",
    "runs spread": "measure longer rounds, widen the figure's tolerance, or gate with --agentmem-compare",
    "workload changed": "record the new workload's baseline with --update-baselines",
    "one round": "measure several rounds",
    "baseline updated": "this run recorded the baseline",
    "sides unequal": "re-run on a quiet machine",
    "new": "nothing to compare with in the base",
    "not reproduced": "re-run on a quiet machine, or gate with --agentmem-compare",
}

#: How a test's status on one side (correctness or speed) is written in the headline.
STATUS_ORDER = ("failed", "not-judged", "partly-judged", "passed")


def _status_counts(records: Iterable[Mapping[str, Any]], side: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for record in records:
        status = str(record.get(side) or "none")
        if status != "none":
            found[status] = found.get(status, 0) + 1
    return {k: found[k] for k in STATUS_ORDER if k in found}


def not_judged_reasons(records: Iterable[Mapping[str, Any]], speed: bool | None = None) -> dict[str, int]:
    """How many figures were not judged for each reason (most first)."""
    found: dict[str, int] = {}
    for record in records:
        for check in record.get("checks") or ():
            if check.get("verdict") == Verdict.NOT_JUDGED and (speed is None or bool(check.get("speed")) == speed):
                reason = str(check.get("reason") or "not judged")
                found[reason] = found.get(reason, 0) + 1
    return dict(sorted(found.items(), key=lambda kv: -kv[1]))


def headline(records: Sequence[Mapping[str, Any]]) -> str:
    """``12 perf tests: correctness 12 passed; speed 3 passed, 8 not judged (...); 1 skipped (...)``.

    ``records`` are the tests' report records (a ``TestVerdict.to_dict()`` each, or a
    skipped test's ``{"nodeid", "outcome": "skipped", "message"}``). A figure that was not
    judged is never counted as passed; the reasons and what to do are said.
    """
    ran = [r for r in records if r.get("outcome") != Outcome.SKIPPED]
    skipped = [r for r in records if r.get("outcome") == Outcome.SKIPPED]
    text = f"{len(ran)} perf test{'s' if len(ran) != 1 else ''}"
    parts: list[str] = []
    errors = sum(1 for r in ran if r.get("outcome") == Outcome.ERROR)
    updated = sum(1 for r in ran if r.get("outcome") == Outcome.UPDATED)
    for side in ("correctness", "speed"):
        counts = _status_counts((r for r in ran if r.get("outcome") not in (Outcome.ERROR, Outcome.UPDATED)), side)
        if not counts:
            continue
        part = f"{side} " + ", ".join(f"{n} {k.replace('-', ' ')}" for k, n in counts.items())
        reasons = not_judged_reasons((r for r in ran if r.get("outcome") != Outcome.UPDATED),
                                     speed=side == "speed")
        if reasons and (counts.get("not-judged") or counts.get("partly-judged")):
            part += " (" + "; ".join(f"{reason}: {NOT_JUDGED_ADVICE.get(reason, 'see the table')}"
                                     for reason in reasons) + ")"
        parts.append(part)
    if updated:
        parts.append(f"{updated} baseline{'s' if updated != 1 else ''} updated")
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    unchecked = sum(1 for r in ran if r.get("outcome") == Outcome.UNCHECKED)
    if unchecked:
        parts.append(f"{unchecked} unchecked")
    if skipped:
        names = ", ".join(short_test(str(r.get("nodeid", "?"))) + (f" ({r['message']})" if r.get("message") else "")
                          for r in skipped[:3])
        parts.append(f"{len(skipped)} skipped: {names}" + (" ..." if len(skipped) > 3 else ""))
    return text + (": " + "; ".join(parts) if parts else "")


# --------------------------------------------------------------------------- percentiles

#: The percentiles every summary reports, with the metric name of each.
PERCENTILES: dict[str, float] = {
    "p50_ms": 50.0, "p90_ms": 90.0, "p95_ms": 95.0, "p99_ms": 99.0, "p999_ms": 99.9,
}

#: The same table as ``(percentile, metric)`` pairs, in increasing percentile.
PERCENTILE_METRICS: tuple[tuple[float, str], ...] = tuple(
    sorted((p, key) for key, p in PERCENTILES.items()))

#: Percentiles of a drawn latency curve, dense towards the tail (0 .. 100).
CURVE_PERCENTILES: tuple[float, ...] = (
    0.0, 10.0, 25.0, 50.0, 60.0, 70.0, 75.0, 80.0, 85.0, 90.0, 92.5, 95.0, 96.0, 97.0,
    97.5, 98.0, 98.5, 99.0, 99.25, 99.5, 99.75, 99.9, 99.95, 99.99, 100.0,
)


# --------------------------------------------------------------------------- numbers


def format_number(value: float | None, *, compact: bool = False) -> str:
    """A figure with about three significant digits and no exponent for usual sizes.

    ``1234.5 -> "1234"``, ``18.23 -> "18.2"``, ``0.00312 -> "0.00312"``, ``3.0 -> "3"``.
    ``compact`` (tables and charts) writes ten thousand and more as ``12.3k`` /
    ``4.56M`` and a missing or non-finite value as an en dash; otherwise (messages)
    a missing value is ``-`` and a non-finite one ``inf`` / ``nan``.
    """
    if value is None or not math.isfinite(value):
        if compact:
            return "–"
        return "-" if value is None else str(value)
    size = abs(value)
    if compact and size >= 1e6:
        return f"{value / 1e6:.3g}M"
    if compact and size >= 1e4:
        return f"{value / 1e3:.3g}k"
    if size >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def compact_number(value: float | None) -> str:
    """:func:`format_number` for table cells and chart labels (``12.3k``, ``–``)."""
    return format_number(value, compact=True)


def format_percent(fraction: float | None, signed: bool = True, *, digits: int | None = None) -> str:
    """A fraction as a percentage: ``+15%``, ``-0.4%``; ``digits`` fixes the decimals.

    Without ``digits``: whole percents, one decimal below half a percent (signed).
    """
    if fraction is None or math.isnan(fraction):
        return "-"
    if math.isinf(fraction):
        return "+inf%" if fraction > 0 else "-inf%"
    sign = "+" if signed else ""
    if digits is None:
        digits = 1 if signed and abs(fraction) < 0.005 else 0
    return f"{fraction * 100:{sign}.{digits}f}%"


def format_p(p: float | None, digits: int = 2) -> str:
    """``p=0.0023`` (empty when there is no p-value)."""
    return "" if p is None else f"p={p:.{digits}g}"


def reported_p(check: Mapping[str, Any]) -> float | None:
    """The p-value a table shows for a check: Holm-adjusted when it was, else raw."""
    adjusted = check.get("p_adjusted")
    return adjusted if adjusted is not None else check.get("p_value")


def paired_change(check: Mapping[str, Any], *, digits: int | None = None) -> str:
    """``+4.1% [+2.0%, +6.3%]``: a paired (A/B) check's arithmetic change and its interval.

    ``check`` is a ``CheckResult.to_dict()``. Its ``change`` is worse-oriented
    (+ = worse); a ratio metric is turned back into the arithmetic change (a
    throughput that fell 4 % reads ``-4%``). A rate (``raw_change`` None) is
    compared by difference and written as one. Empty without a change.
    """
    change, interval = check.get("change"), check.get("interval")
    if change is None:
        return ""
    if change == 0 and (not interval or tuple(interval) == (0.0, 0.0)):
        return "unchanged"
    if check.get("raw_change") is None:  # a rate, compared by difference
        text = f"{change:+.3g}"
        return text + (f" [{interval[0]:+.3g}, {interval[1]:+.3g}]" if interval else "")
    sign = 1 if check.get("direction") == "lower" else -1
    text = format_percent(sign * change, digits=digits)
    if interval:
        lo, hi = sorted(sign * x for x in interval)
        text += f" [{format_percent(lo, digits=digits)}, {format_percent(hi, digits=digits)}]"
    return text


# --------------------------------------------------------------------------- test ids


def short_test(nodeid: str, width: int | None = None) -> str:
    """A test id without its folders, cut from the left to ``width`` characters.

    ``tests/perf/test_x.py::test_y[a/b]`` -> ``test_x.py::test_y[a/b]``; with a
    ``width``, a longer id keeps its end behind ``...``.
    """
    path, sep, rest = nodeid.partition("::")
    short = f"{path.rsplit('/', 1)[-1]}{sep}{rest}"
    if width is not None and len(short) > width:
        return "..." + short[-(width - 3):]
    return short
