"""The terminal summary: the headline, then one table of every gated figure, failures first."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..presentation import (
    count_outcomes,
    format_number,
    format_p,
    format_percent,
    headline,
    outcome_rank,
    reported_p,
    short_test,
)
from ..presentation import paired_change as paired_change_text
from .verdict import NEW_FIGURE, SIDES_UNEQUAL, CheckResult, TestVerdict
from .yardstick import MOVED_WITH_THE_MODEL, RATIO_METRIC

HEADER = ("test", "metric", "value", "baseline", "change", "verdict")
#: Test ids in the table are cut to this many characters.
TEST_WIDTH = 60


def _rows(v: TestVerdict) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for c in v.checks:
        metric = f"{c.measurement}.{c.metric}"
        if c.kind == "threshold":
            reference = f"{c.bound} {format_number(c.limit)}"
            change = ""
        elif c.kind == "paired":
            if c.metric == "-":
                rows.append((c.measurement, "", "", "", c.verdict))
                continue
            reference = "base " + format_number(c.baseline)
            change = paired_change(c)
        else:
            reference = format_number(c.baseline) + ("*" if c.normalised else "") if c.baseline is not None else ""
            change = format_percent(c.raw_change) if c.raw_change is not None and c.judged else ""
        verdict = "FAIL" if c.verdict == "fail" else "not judged" if c.verdict == "not-judged" else c.verdict
        if c.confirmed and c.verdict == "fail":
            verdict += " (re-measured)"
        if c.verdict == "not-judged" and c.reason:
            verdict += f": {c.reason}"
        elif c.verdict == "pass" and c.reason:  # e.g. a failure that did not reproduce
            verdict += f" ({c.reason})"
        rows.append((metric, format_number(c.value), reference, change, verdict))
    for key, (old, new) in v.updated.items():
        change = format_percent(new / old - 1) if old else ""
        rows.append((key, format_number(new), format_number(old) if old is not None else "(none)", change, "updated"))
    if not rows:
        rows.append(("-", "", "", "", v.outcome))
    return rows


def paired_change(c: CheckResult) -> str:
    """``+4.1% [+2.0%, +6.3%] p=0.002`` (arithmetic change, its interval, Holm p)."""
    check = c.to_dict()
    text = paired_change_text(check)
    p = format_p(reported_p(check))
    return text + (f" {p}" if text and p else "")


def records_of(verdicts: Sequence[TestVerdict], skipped: Mapping[str, str]) -> list[dict]:
    """The headline's input: each verdict's dict, and each skipped perf test."""
    return [*(v.to_dict() for v in verdicts),
            *({"nodeid": n, "outcome": "skipped", "message": why} for n, why in skipped.items())]


def render(verdicts: Sequence[TestVerdict], skipped: Mapping[str, str] | None = None) -> list[str]:
    """Lines of the headline, the summary table and the notes under it."""
    skipped = dict(skipped or {})
    if not verdicts and not skipped:
        return []
    lines = [headline(records_of(verdicts, skipped))]
    if not verdicts:
        return lines
    table: list[tuple[str, ...]] = [HEADER]
    for v in sorted(verdicts, key=lambda v: outcome_rank(v.outcome)):
        for i, row in enumerate(_rows(v)):
            table.append((short_test(v.nodeid, TEST_WIDTH) if i == 0 else "", *row))
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
    lines.append("")
    for n, row in enumerate(table):
        cells = [cell.ljust(w) if i < 2 or i == 5 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    counts = count_outcomes(v.outcome for v in verdicts)
    lines.append("")
    lines.append("gate: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    if any(c.normalised for v in verdicts for c in v.checks):
        lines.append("* baseline recorded on another machine, scaled by the median shift of the run's other tests")
    lines.extend(_notes(verdicts))
    lines.extend(_why_not_judged(verdicts))
    return lines


def _why_not_judged(verdicts: Sequence[TestVerdict]) -> list[str]:
    """Why figures were not judged, each different reason once with how many figures it covers."""
    found: dict[str, int] = {}
    for v in verdicts:
        if v.outcome == "updated":
            continue  # this run recorded the baselines: nothing was to be judged
        for c in v.checks:
            if c.verdict == "not-judged":
                detail = c.message.split("not judged: ", 1)[-1]
                found[detail] = found.get(detail, 0) + 1
    return [f"not judged ({n} figure{'s' if n != 1 else ''}): {detail}" for detail, n in found.items()]


def _notes(verdicts: Sequence[TestVerdict]) -> list[str]:
    """Each test's notes; a note that several tests share is said once, with how many."""
    owners: dict[str, list[str]] = {}
    for v in verdicts:
        for note in v.notes:
            owners.setdefault(note, []).append(v.nodeid)
    out = []
    for note, nodeids in owners.items():
        who = short_test(nodeids[0], TEST_WIDTH) if len(nodeids) == 1 else f"{len(nodeids)} tests"
        out.append(f"{who}: {note}")
    return out


def strict_problems(verdicts: Sequence[TestVerdict], skipped: Mapping[str, str]) -> list[str]:
    """What ``--agentmem-strict`` fails a run for: a skipped perf test, a figure not judged
    (no baseline included), a test that wrote no verdict.

    A CPU figure that moved with its measurement's model yardstick (``MOVED_WITH_THE_MODEL``)
    is not one when that measurement's ``cpu_model_ratio`` was judged: the ratio answers for
    the code outside the model (:mod:`.yardstick`).

    A figure that a test's baseline was recorded without (``NEW_FIGURE``: one an upgrade of
    the plugin added) is not one: the test's other figures are judged as before, and an
    upgrade must not fail every pull request until the baselines are recorded again.

    An A/B wall-time figure not judged because the machine took unequal time from the two
    sides is not one when its run's ``cpu_ms_per_op`` was judged: that is the figure the
    A/B gate decides such a run on (the table still shows it as not judged).
    """
    out = [f"{short_test(n)}: skipped ({why})" for n, why in skipped.items()]
    for v in verdicts:
        if v.outcome in ("failed", "error", "updated"):
            continue
        cpu_judged = {c.measurement for c in v.checks if c.metric == "cpu_ms_per_op" and c.judged}
        ratio_judged = {c.measurement for c in v.checks if c.metric == RATIO_METRIC and c.judged}
        missing = [c for c in v.checks if c.verdict == "not-judged" and c.reason != NEW_FIGURE
                   and not (c.reason == SIDES_UNEQUAL and c.measurement in cpu_judged)
                   and not (c.reason == MOVED_WITH_THE_MODEL and c.measurement in ratio_judged)]
        if missing:
            reasons = sorted({c.reason or "not judged" for c in missing})
            out.append(f"{short_test(v.nodeid)}: {len(missing)} figure{'s' if len(missing) != 1 else ''} "
                       f"not judged ({', '.join(reasons)})")
    return out
