"""The evidence section of the reports: where the time went (issue 23).

:func:`evidence_html` renders one measurement's ``evidence`` (from the JSON
record) as an HTML block: database time per operation, the top statements
(against the baseline's or the A/B base's where there is one), the pool and I/O
over time, Redis commands, and the flame graphs (embedded, with links to the
files). :func:`failing_lines` gives the terminal summary's lines for a failing
test: the three statements and the three functions whose share grew most.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import svg

#: Largest flame graph embedded in the HTML page (bigger ones are linked only).
EMBED_LIMIT = 1_500_000
TOP = 10
#: The terminal names a statement as grown when its time per operation grew by more than this
#: share of the reference's whole database time per operation (pool resets and the like
#: move by a few microseconds).
MIN_GROWTH = 0.02


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def short_query(query: str, width: int = 90) -> str:
    """A statement on one line, cut to ``width`` characters."""
    text = " ".join(str(query).split())
    return text if len(text) <= width else text[:width - 1] + "…"


def _bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _statements_table(evidence: dict[str, Any]) -> str:
    grown = evidence.get("statements_grown")
    rows = grown if grown else evidence.get("statements") or []
    if not rows:
        status = evidence.get("statements_status")
        return f'<div class="note">statements: {_e(status)}</div>' if status and status != "ok" else ""
    ref = evidence.get("reference")
    head = ("<tr><th>statement</th><th>calls/op</th><th>ms/op</th><th>mean ms</th><th>rows</th>"
            "<th>blks hit</th><th>blks read</th>" +
            (f"<th>ms/op {_e(ref)}</th><th>grew ms/op</th>" if grown else "") + "</tr>")
    body = []
    for r in rows[:TOP]:
        cells = [f'<td title="{_e(r.get("query"))}"><code>{_e(short_query(r.get("query", "")))}</code></td>',
                 f'<td>{r.get("calls_per_op", 0):.3g}</td>', f'<td>{r.get("ms_per_op", 0):.3g}</td>',
                 f'<td>{r.get("mean_ms", 0):.3g}</td>', f'<td>{r.get("rows", 0):.0f}</td>',
                 f'<td>{r.get("shared_blks_hit", 0):.0f}</td>', f'<td>{r.get("shared_blks_read", 0):.0f}</td>']
        if grown:
            was = r.get("ref_ms_per_op")
            cells += [f"<td>{'new' if was is None else f'{was:.3g}'}</td>",
                      f'<td>{r.get("grew_ms_per_op", 0):+.3g}</td>']
        body.append("<tr>" + "".join(cells) + "</tr>")
    title = "Top statements by database time" + (f" (by growth against the {_e(ref)})" if grown else "")
    return f"<h4>{title}</h4><table>{head}{''.join(body)}</table>"


def _pool_chart(evidence: dict[str, Any]) -> str:
    line = evidence.get("pool_timeline") or []
    if not line:
        return ""
    series = [svg.Series("in use", [(s[0], float(s[1])) for s in line], svg.SERIES[0]),
              svg.Series("idle", [(s[0], float(s[2])) for s in line], svg.SERIES[3])]
    waiting = [(s[0], float(s[4])) for s in line if s[4] is not None]
    if waiting:
        series.append(svg.Series("waiting", waiting, svg.RED))
    return svg.line_chart("asyncpg pool connections over time", series,
                          x_axis=svg.Axis("seconds (rounds end to end)"), y_axis=svg.Axis("connections"))


def _io_chart(evidence: dict[str, Any]) -> str:
    line = evidence.get("io_timeline") or []
    if not line:
        return ""
    names = (("process_net_sent", "net sent"), ("process_net_received", "net received"),
             ("process_disk_read", "disk read"), ("process_disk_write", "disk write"),
             ("services_disk_read", "services disk read"), ("services_disk_write", "services disk write"))
    series = []
    for index, (key, label) in enumerate(names):
        points = [(t, v[key] / 1024) for t, v in line if key in v]
        if points and any(p[1] for p in points):
            series.append(svg.Series(label, points, svg.SERIES[index % len(svg.SERIES)]))
    if not series:
        return ""
    return svg.line_chart("I/O over time (cumulative)", series, x_axis=svg.Axis("seconds"),
                          y_axis=svg.Axis("KiB"))


def _figures(evidence: dict[str, Any]) -> str:
    items = []
    if "db_ms_per_op" in evidence:
        ref = evidence.get("ref_db_ms_per_op")
        items.append(f"database time/op <b>{evidence['db_ms_per_op']:.3g} ms</b>" +
                     (f" ({_e(evidence.get('reference'))} {ref:.3g} ms)" if isinstance(ref, (int, float)) else ""))
    pool = evidence.get("pool") or {}
    if pool:
        items.append(f"pool in use mean <b>{pool.get('in_use_mean', 0):.3g}</b> max "
                     f"<b>{pool.get('in_use_max', 0):.0f}</b>, waiting max <b>{pool.get('waiting_max', 0):.0f}</b>")
    io = evidence.get("io") or {}
    for key, label in (("process_net_sent", "net sent"), ("process_net_received", "net received"),
                       ("process_disk_read", "disk read"), ("process_disk_write", "disk written"),
                       ("services_disk_read", "services disk read"), ("services_disk_write", "services disk written")):
        if key in io:
            items.append(f"{label} <b>{_e(_bytes(io[key]))}</b>")
    return '<div class="figures meta">' + "".join(f"<span>{i}</span>" for i in items) + "</div>" if items else ""


def _redis_table(evidence: dict[str, Any]) -> str:
    rows = evidence.get("redis") or []
    if not rows:
        return ""
    body = "".join(f"<tr><td><code>{_e(r['command'])}</code></td><td>{r['calls']:.0f}</td>"
                   f"<td>{r.get('calls_per_op', 0):.3g}</td><td>{r['mean_us']:.3g}</td><td>{r['failed']:.0f}</td></tr>"
                   for r in rows[:TOP])
    return ("<h4>Redis commands (INFO commandstats)</h4><table><tr><th>command</th><th>calls</th>"
            f"<th>calls/op</th><th>mean µs</th><th>failed</th></tr>{body}</table>")


def _embed(path: Any, caption: str) -> str:
    if not path:
        return ""
    file = Path(str(path))
    link = f'<div class="meta">{_e(caption)}: <a href="{_e(file.as_uri() if file.is_absolute() else file)}">{_e(file.name)}</a></div>'
    try:
        text = file.read_text()
    except OSError:
        return link
    if len(text) > EMBED_LIMIT:
        return link
    return f'<div class="flame" style="overflow-x:auto">{text}</div>' + link


def _profile(evidence: dict[str, Any]) -> str:
    profile = evidence.get("profile")
    if not isinstance(profile, dict):
        return ""
    head = f"<h4>Profile (py-spy, {_e(profile.get('scope'))})</h4>"
    if profile.get("problem"):
        return head + f'<div class="note">{_e(profile["problem"])}</div>'
    parts = [head]
    if profile.get("note"):
        parts.append(f'<div class="note">{_e(profile["note"])}</div>')
    grown = profile.get("grown") or []
    if grown:
        parts.append("<table><tr><th>function</th><th>self share</th><th>" + _e(profile.get("reference")) +
                     "</th><th>grew</th></tr>" + "".join(
                         f"<tr><td><code>{_e(r.get('function'))}</code></td><td>{100 * r.get('self_share', 0):.1f} %</td>"
                         f"<td>{100 * r.get('ref_self_share', 0):.1f} %</td><td>{100 * r.get('grew', 0):+.1f} pt</td></tr>"
                         for r in grown[:5]) + "</table>")
        parts.append(_embed(profile.get("diff_svg"), "differential flame graph"))
    parts.append(_embed(profile.get("svg"), "flame graph"))
    if profile.get("reference_svg"):
        parts.append(_embed(profile.get("reference_svg"), f"flame graph of {profile.get('reference')}"))
    return "".join(parts)


def evidence_html(measurement: dict[str, Any]) -> str:
    """The evidence block of one measurement of a JSON record ('' if it has none)."""
    evidence = measurement.get("evidence")
    if not isinstance(evidence, dict) or not evidence:
        return ""
    charts = [c for c in (_pool_chart(evidence), _io_chart(evidence)) if c]
    parts = ['<details class="evidence" open><summary><b>Where the time went</b></summary>',
             _figures(evidence), _statements_table(evidence)]
    if charts:
        parts.append('<div class="grid">' + "".join(f"<div>{c}</div>" for c in charts) + "</div>")
    parts += [_redis_table(evidence), _profile(evidence), "</details>"]
    return "".join(parts)


def failing_lines(records: Sequence[dict[str, Any]], n: int = 3) -> list[str]:
    """Terminal lines for each failing test: the statements and functions whose share grew most."""
    lines: list[str] = []
    for record in records:
        if record.get("outcome") != "failed":
            continue
        for m in record.get("measurements", []):
            evidence = m.get("evidence") or {}
            if not evidence:
                continue
            head = f"{record['nodeid']} [{m.get('name')}]"
            floor = MIN_GROWTH * float(evidence.get("ref_db_ms_per_op") or 0.0)
            grown = [r for r in evidence.get("statements_grown") or []
                     if r.get("grew_ms_per_op", 0) > floor][:n]
            if grown:
                lines.append(f"{head}: statements that grew against the {evidence.get('reference')}:")
                lines += [f"  {r['grew_ms_per_op']:+.3g} ms/op  ({r.get('calls_per_op', 0):.2g} calls/op, "
                          f"mean {r.get('mean_ms', 0):.3g} ms)  {short_query(r['query'], 70)}" for r in grown]
            elif evidence.get("statements_grown"):
                lines.append(f"{head}: no statement grew by more than {MIN_GROWTH:.0%} of the "
                             f"{evidence.get('reference')}'s database time per operation")
            elif evidence.get("statements"):
                lines.append(f"{head}: top statements (no reference to compare with):")
                lines += [f"  {r.get('ms_per_op', 0):.3g} ms/op  {short_query(r['query'], 70)}"
                          for r in evidence["statements"][:n]]
            elif evidence.get("statements_status") not in (None, "ok"):
                lines.append(f"{head}: statements: {evidence['statements_status']}")
            profile = evidence.get("profile") or {}
            if profile.get("grown"):
                lines.append(f"{head}: functions whose share of samples grew ({profile.get('reference')}):")
                lines += [f"  {100 * r['grew']:+.1f} pt  {r['function']}" for r in profile["grown"][:n]]
                lines.append(f"  differential flame graph: {profile.get('diff_svg')}")
            elif profile.get("top"):
                lines.append(f"{head}: busiest functions ({profile.get('scope')}; "
                             f"{profile.get('note') or 'no reference profile'}):")
                lines += [f"  {100 * r['self_share']:.1f} %  {r['function']}" for r in profile["top"][:n]]
                lines.append(f"  flame graph: {profile.get('svg')}")
            elif profile.get("problem"):
                lines.append(f"{head}: no profile: {profile['problem']}")
    return lines
