"""The terminal summary: one table of every gated figure, failures first."""

from __future__ import annotations

from collections.abc import Sequence

from ..presentation import (
    count_outcomes,
    format_number,
    format_p,
    format_percent,
    outcome_rank,
    reported_p,
    short_test,
)
from ..presentation import paired_change as paired_change_text
from .verdict import CheckResult, TestVerdict

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
            reference = format_number(c.baseline) + ("*" if c.normalised else "")
            change = format_percent(c.raw_change) if c.raw_change is not None else ""
        verdict = c.verdict.upper() if c.verdict == "fail" else c.verdict
        if c.confirmed and c.verdict == "fail":
            verdict += " (re-run)"
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


def render(verdicts: Sequence[TestVerdict]) -> list[str]:
    """Lines of the summary table and the notes under it."""
    if not verdicts:
        return []
    table: list[tuple[str, ...]] = [HEADER]
    for v in sorted(verdicts, key=lambda v: outcome_rank(v.outcome)):
        for i, row in enumerate(_rows(v)):
            table.append((short_test(v.nodeid, TEST_WIDTH) if i == 0 else "", *row))
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
    lines = []
    for n, row in enumerate(table):
        cells = [cell.ljust(w) if i < 2 or i == 5 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    counts = count_outcomes(v.outcome for v in verdicts)
    lines.append("")
    lines.append("gate: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    if any(c.normalised for v in verdicts for c in v.checks):
        lines.append("* baseline recorded on another machine, normalised by the calibration probe")
    for v in verdicts:
        for note in v.notes:
            lines.append(f"{short_test(v.nodeid, TEST_WIDTH)}: {note}")
    return lines
