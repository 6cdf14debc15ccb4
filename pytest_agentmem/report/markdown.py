"""The markdown summary appended to ``$GITHUB_STEP_SUMMARY``.

A headline, then one GitHub-flavoured table row per check (test, metric, value,
baseline, change, verdict), failing checks first, then why each failure failed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from ..presentation import (
    compact_number,
    format_p,
    format_percent,
    paired_change,
    reported_p,
    short_test,
)
from .records import headline, sort_checks

__all__ = ["append_step_summary", "cell", "change_text", "metric_label", "paired_text",
           "reference", "render_markdown", "short_test", "table_rows"]

VERDICT_LABEL = {"fail": "❌ fail", "not-judged": "⚠️ not judged", "pass": "✅ pass"}
OUTCOME_LABEL = {"error": "💥 error", "unchecked": "❔ unchecked", "failed": "❌ fail", "skipped": "⏭️ skipped"}
MAX_ROWS = 300  # GitHub caps a step summary at 1 MiB; a huge run keeps its worst rows


def cell(text: Any) -> str:
    """``text`` safe inside a table cell: HTML escaped, pipes and newlines neutralised."""
    return escape(str(text)).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def metric_label(check: dict[str, Any], record: dict[str, Any]) -> str:
    """``metric``, or ``measurement.metric`` when the test measured several things."""
    names = {m.get("name") for m in record.get("measurements", [])}
    measurement = check.get("measurement") or ""
    if len(names) > 1 and measurement:
        return f"{measurement}.{check.get('metric')}"
    return str(check.get("metric"))


def reference(check: dict[str, Any]) -> str:
    """The baseline column: the stored baseline, or the absolute limit of a threshold."""
    if check.get("kind") == "threshold" and check.get("limit") is not None:
        sign = "≥" if check.get("bound") == "min" else "≤"
        return f"{sign} {compact_number(check['limit'])} (limit)"
    if check.get("baseline") is None:
        return "–"
    if check.get("kind") == "paired":
        return f"{compact_number(check['baseline'])} (base)"
    mark = " (scaled)" if check.get("normalised") else ""
    return f"{compact_number(check['baseline'])}{mark}"


def change_text(check: dict[str, Any]) -> str:
    """``+50.0% worse`` / ``-8.1% better`` (arithmetic change, judged by the metric's direction).

    A threshold says only whether its limit was breached; a zero baseline has no ratio.
    """
    if check.get("kind") == "threshold":
        return "breached" if check.get("verdict") == "fail" else "within limit"
    if check.get("kind") == "paired":
        return paired_text(check)
    if check.get("verdict") == "not-judged":
        return "–"  # a change against a baseline it was not judged by would read as a finding
    raw, signed = check.get("raw_change"), check.get("change")
    if check.get("baseline") == 0:
        value = check.get("value")
        return "unchanged" if not value else f"from 0 ({'worse' if (signed or 0) > 0 else 'better'})"
    if raw is None and signed is None:
        return "–"
    shown = float(raw if raw is not None else signed or 0.0)
    text = format_percent(shown, digits=1)
    if signed is not None and abs(signed) >= 0.0005:
        text += " worse" if signed > 0 else " better"
    if check.get("p_value") is not None:
        text += ", " + format_p(check["p_value"])
    return text


def paired_text(check: dict[str, Any]) -> str:
    """``-4.1% [-6.3%, -2.0%] worse, p=0.002 over 20 pairs`` for an A/B check."""
    change = check.get("change")
    if change is None:
        return cell(check.get("message", "–"))
    text = paired_change(check, digits=1)
    if abs(change) >= 0.0005:
        text += " worse" if change > 0 else " better"
    p = reported_p(check)
    if p is not None:
        text += ", " + format_p(p)
    if check.get("pairs"):
        text += f" over {check['pairs']} pairs"
    return text


def table_rows(records: Sequence[dict[str, Any]]) -> list[list[str]]:
    """The table body: one row per check, bad news first; tests without checks too."""
    pairs = [(r, c) for r in records for c in r.get("checks", [])]
    rows = [[cell(short_test(r["nodeid"])), cell(metric_label(c, r)), cell(compact_number(c.get("value"))),
             cell(reference(c)), cell(change_text(c)),
             VERDICT_LABEL.get(str(c.get("verdict")), cell(c.get("verdict")))
             + (cell(f": {c['reason']}") if c.get("verdict") == "not-judged" and c.get("reason") else "")]
            for r, c in sort_checks(pairs)]
    for record in records:
        for key, (old, new) in (record.get("updated") or {}).items():
            change = format_percent(new / old - 1, digits=1) if old else "–"
            rows.append([cell(short_test(record["nodeid"])), cell(key), cell(compact_number(new)),
                         cell(compact_number(old) if old is not None else "(none)"), change, "🔄 updated"])
    for record in records:
        if record.get("checks") or record.get("outcome") == "passed":
            continue
        label = OUTCOME_LABEL.get(str(record.get("outcome")), cell(record.get("outcome")))
        why = record.get("message") or "; ".join(record.get("notes", [])) or "no verdict"
        rows.insert(0, [cell(short_test(record["nodeid"])), "–", "–", "–", cell(why), label])
    return rows


def render_markdown(records: Sequence[dict[str, Any]], *, title: str = "pytest-agentmem") -> str:
    """The whole summary as GitHub-flavoured markdown."""
    lines = [f"### {title}: {cell(headline(records))}", ""]
    rows = table_rows(records)
    if rows:
        lines += ["| test | metric | value | baseline | change | verdict |",
                  "|---|---|---:|---:|---|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows[:MAX_ROWS]]
        if len(rows) > MAX_ROWS:
            lines.append(f"\n_{len(rows) - MAX_ROWS} more rows in the JSON/HTML report._")
    failures = [(r, c) for r in records for c in r.get("checks", []) if c.get("verdict") == "fail"]
    if failures:
        lines += ["", "<details open><summary>Why they failed</summary>", ""]
        lines += [f"- **{cell(short_test(r['nodeid']))}**: {cell(c.get('message', ''))}" for r, c in failures]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n\n"


def append_step_summary(text: str, path: str | os.PathLike[str] | None = None) -> Path | None:
    """Append ``text`` to ``$GITHUB_STEP_SUMMARY`` (or ``path``); ``None`` when unset."""
    target = path or os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(text)
    return Path(target)
