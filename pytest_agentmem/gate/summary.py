"""The terminal summary: one table of every gated figure, failures first."""

from __future__ import annotations

from collections.abc import Sequence

from .checks import fmt, pct
from .verdict import CheckResult, TestVerdict

HEADER = ("test", "metric", "value", "baseline", "change", "verdict")
_ORDER = {"failed": 0, "error": 1, "updated": 2, "no-baseline": 3, "passed": 4}


def _short(nodeid: str, width: int = 60) -> str:
    return nodeid if len(nodeid) <= width else "..." + nodeid[-(width - 3):]


def _rows(v: TestVerdict) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for c in v.checks:
        metric = f"{c.measurement}.{c.metric}"
        if c.kind == "threshold":
            reference = f"{c.bound} {fmt(c.limit)}"
            change = ""
        elif c.kind == "paired":
            if c.metric == "-":
                rows.append((c.measurement, "", "", "", c.verdict))
                continue
            reference = "base " + fmt(c.baseline)
            change = paired_change(c)
        else:
            reference = fmt(c.baseline) + ("*" if c.normalised else "")
            change = pct(c.raw_change) if c.raw_change is not None else ""
        verdict = c.verdict.upper() if c.verdict == "fail" else c.verdict
        if c.confirmed and c.verdict == "fail":
            verdict += " (re-run)"
        rows.append((metric, fmt(c.value), reference, change, verdict))
    for key, (old, new) in v.updated.items():
        change = pct(new / old - 1) if old else ""
        rows.append((key, fmt(new), fmt(old) if old is not None else "(none)", change, "updated"))
    if not rows:
        rows.append(("-", "", "", "", v.outcome))
    return rows


def paired_change(c: CheckResult) -> str:
    """``+4.1% [+2.0%, +6.3%] p=0.002`` (worse-oriented change, its interval, Holm p)."""
    if c.change is None:
        return ""
    if c.change == 0 and (c.interval is None or c.interval == (0.0, 0.0)):
        return "unchanged"
    if c.raw_change is None:  # a rate, compared by difference
        text = f"{c.change:+.3g}"
        interval = f" [{c.interval[0]:+.3g}, {c.interval[1]:+.3g}]" if c.interval else ""
    else:
        sign = 1 if c.direction == "lower" else -1  # back to the arithmetic change
        text = pct(sign * c.change)
        lo, hi = sorted(sign * x for x in c.interval) if c.interval else (None, None)
        interval = f" [{pct(lo)}, {pct(hi)}]" if c.interval else ""
    p = c.p_adjusted if c.p_adjusted is not None else c.p_value
    return text + interval + (f" p={p:.2g}" if p is not None else "")


def render(verdicts: Sequence[TestVerdict]) -> list[str]:
    """Lines of the summary table and the notes under it."""
    if not verdicts:
        return []
    table: list[tuple[str, ...]] = [HEADER]
    for v in sorted(verdicts, key=lambda v: _ORDER.get(v.outcome, 5)):
        for i, row in enumerate(_rows(v)):
            table.append((_short(v.nodeid) if i == 0 else "", *row))
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
    lines = []
    for n, row in enumerate(table):
        cells = [cell.ljust(w) if i < 2 or i == 5 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v.outcome] = counts.get(v.outcome, 0) + 1
    lines.append("")
    lines.append("gate: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: _ORDER.get(kv[0], 5))))
    if any(c.normalised for v in verdicts for c in v.checks):
        lines.append("* baseline recorded on another machine, normalised by the calibration probe")
    for v in verdicts:
        for note in v.notes:
            lines.append(f"{_short(v.nodeid)}: {note}")
    return lines
