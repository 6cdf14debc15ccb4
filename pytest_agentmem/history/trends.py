"""Static trend pages: one self-contained HTML page per test, and an index.

Each metric of each measurement is one inline SVG chart: the value of every run
in run order (x: the runs of that test, labelled by commit), one line per machine
(and workload), the change points found (:mod:`.changepoints`) drawn as dashed
rules with their size, red for a regression and green for an improvement. Every
point's tooltip names its commit, time and value; with ``commit_url``
(``https://github.com/OWNER/REPO/commit/{commit}``) points and change points link
to their commit. No script, no external file: the folder can be published as is
(GitHub Pages, an artifact).
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from .._files import write_text_atomic
from ..gate.directions import is_primary
from ..presentation import compact_number, format_number
from ..report.svg import FONT, GREEN, INK, LIGHT, MUTED, RED, SERIES, nice_ticks
from .changepoints import MAX_PVALUE, Test
from .series import Change, Series, changes_of

WIDTH, HEIGHT = 900, 300
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 30, 60

CSS = f"""
body{{{FONT};color:{INK};margin:24px auto;max-width:960px;padding:0 16px;line-height:1.45}}
h1{{font-size:22px}} h2{{font-size:17px;margin-top:32px}} a{{color:#0969da}}
table{{border-collapse:collapse;font-size:13px;margin:8px 0}} td,th{{border-bottom:1px solid {LIGHT};
padding:4px 10px;text-align:left}} th{{color:{MUTED};font-weight:600}} .num{{text-align:right;
font-variant-numeric:tabular-nums}} .reg{{color:{RED};font-weight:600}} .imp{{color:{GREEN};font-weight:600}}
.muted{{color:{MUTED};font-size:13px}} svg{{width:100%;height:auto;display:block}}
"""


_TESTS = {"ttest": "t-test", "ranks": "rank test", "permutation": "permutation test"}


def page_name(test: str) -> str:
    """A file name for the page of ``test``: a readable slug and a short hash."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", test).strip("-")[:60] or "test"
    return f"{slug}-{hashlib.sha256(test.encode()).hexdigest()[:8]}.html"


def _link(commit: str | None, template: str | None, text: str | None = None) -> str:
    label = escape(text if text is not None else (commit or "?")[:10])
    if commit and template:
        return f'<a href="{escape(template.replace("{commit}", commit))}">{label}</a>'
    return label


def _date(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


def chart(title: str, series: Sequence[Series], changes: Sequence[Change], *,
          commit_url: str | None = None) -> str:
    """One metric's chart: a line per series over the test's runs, change points marked."""
    runs = sorted({(p.started_at, p.run_id) for s in series for p in s.points})
    x_of = {run_id: i for i, (_, run_id) in enumerate(runs)}
    commit_of = {p.run_id: p.commit for s in series for p in s.points}
    values = [p.value for s in series for p in s.points]
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or abs(high) * 0.05 or 1.0
    ticks = nice_ticks(low - pad, high + pad)
    y0, y1 = ticks[0], ticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = max(1, len(runs) - 1)

    def px(i: int) -> float:
        return LEFT + plot_w * (i / span if len(runs) > 1 else 0.5)

    def py(v: float) -> float:
        return TOP + plot_h * (1 - (v - y0) / ((y1 - y0) or 1.0))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
           f'aria-label="{escape(title)}" style="{FONT}">']
    for t in ticks:
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="{LIGHT}"/>')
        out.append(f'<text x="{LEFT - 6}" y="{py(t) + 4:.1f}" font-size="11" text-anchor="end" '
                   f'fill="{MUTED}">{escape(compact_number(t))}</text>')
    step = max(1, round(len(runs) / 10))
    for i in range(0, len(runs), step):
        commit = commit_of.get(runs[i][1]) or "?"
        out.append(f'<text x="{px(i):.1f}" y="{HEIGHT - BOTTOM + 16}" font-size="10" text-anchor="end" '
                   f'fill="{MUTED}" transform="rotate(-35 {px(i):.1f} {HEIGHT - BOTTOM + 16})">'
                   f'{escape(commit[:7])}</text>')
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" font-size="11" text-anchor="middle" '
               f'fill="{MUTED}">runs in order (commit)</text>')
    for c in changes:
        run_id = c.series.points[c.point.index].run_id
        x = (px(x_of[run_id]) + px(x_of[c.series.points[c.point.index - 1].run_id])) / 2
        color = RED if c.regression else GREEN if c.regression is False else MUTED
        tip = (f"change point {(c.commit_before or '?')[:10]}..{(c.commit or '?')[:10]}: "
               f"{format_number(c.point.mean_before)} -> {format_number(c.point.mean_after)} "
               f"({c.point.change:+.1%}), confidence {c.point.confidence:.4f}")
        line = (f'<g><title>{escape(tip)}</title><line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" '
                f'y2="{TOP + plot_h}" stroke="{color}" stroke-width="2" stroke-dasharray="6 4"/>'
                f'<text x="{x + 4:.1f}" y="{TOP + 12}" font-size="11" font-weight="600" fill="{color}">'
                f'{c.point.change:+.1%}</text></g>')
        out.append(_wrap(line, c.commit, commit_url))
    for n, s in enumerate(series):
        color = SERIES[n % len(SERIES)]
        coords = [(px(x_of[p.run_id]), py(p.value)) for p in s.points]
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="'
                   + " ".join(f"{x:.1f},{y:.1f}" for x, y in coords) + '"/>')
        for p, (x, y) in zip(s.points, coords):
            tip = (f"{(p.commit or '?')[:10]} {_date(p.started_at)}: {format_number(p.value)}"
                   + (f" ({p.verdict})" if p.verdict else "") + f" - {s.machine_label}")
            dot = (f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"><title>{escape(tip)}</title>'
                   f'</circle>')
            out.append(_wrap(dot, p.commit, commit_url))
    out.append("</svg>")
    return "".join(out)


def _wrap(svg: str, commit: str | None, template: str | None) -> str:
    if commit and template:
        return f'<a href="{escape(template.replace("{commit}", commit))}">{svg}</a>'
    return svg


def _legend(series: Sequence[Series]) -> str:
    items = []
    for n, s in enumerate(series):
        workload = f", workload {s.key.workload_id[:8]}" if s.key.workload_id else ""
        items.append(f'<span style="color:{SERIES[n % len(SERIES)]}">&#9632;</span> '
                     f"{escape(s.machine_label + workload)} ({len(s.points)} runs)")
    return '<p class="muted">' + " &nbsp; ".join(items) + "</p>"


def _changes_table(changes: Sequence[Change], commit_url: str | None) -> str:
    if not changes:
        return '<p class="muted">No change point.</p>'
    rows = ["<table><tr><th>commits</th><th>when</th><th class=num>before</th><th class=num>after</th>"
            "<th class=num>change</th><th class=num>confidence</th><th>machine</th></tr>"]
    for c in changes:
        cls = "reg" if c.regression else "imp" if c.regression is False else ""
        rows.append(f"<tr><td>{_link(c.commit_before, commit_url)}..{_link(c.commit, commit_url)}</td>"
                    f"<td>{escape(_date(c.started_at))}</td>"
                    f"<td class=num>{escape(format_number(c.point.mean_before))}</td>"
                    f"<td class=num>{escape(format_number(c.point.mean_after))}</td>"
                    f'<td class="num {cls}">{c.point.change:+.1%}</td>'
                    f"<td class=num>{c.point.confidence:.4f}</td><td>{escape(c.series.machine_label)}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _page(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head>'
            f"<body>{body}</body></html>\n")


def test_page(test: str, series: Sequence[Series], changes: dict[int, list[Change]], *,
              commit_url: str | None, title: str, significance: str = "t-test") -> str:
    """The page of one test: a chart and a change table per measurement and metric."""
    groups: dict[tuple[str, str], list[Series]] = defaultdict(list)
    for s in series:
        groups[(s.key.measurement, s.key.metric)].append(s)
    runs = len({p.run_id for s in series for p in s.points})
    parts = [f'<p class="muted"><a href="index.html">{escape(title)}</a></p><h1>{escape(test)}</h1>',
             f'<p class="muted">{runs} runs, {len(groups)} figures; change points by E-divisive means with a '
             f"{escape(significance)} (as Apache Otava). Hover a point for its commit and value.</p>"]
    # the gate's primary figures (qps, p95_ms, error_rate, cpu_ms_per_op ...) first
    for (measurement, metric), members in sorted(groups.items(), key=lambda kv: (
            not is_primary(kv[0][1], "load"), kv[0])):
        found = [c for s in members for c in changes.get(id(s), [])]
        parts.append(f'<h2 id="{escape(measurement)}.{escape(metric)}">{escape(measurement)}.{escape(metric)}</h2>')
        parts.append(chart(f"{measurement}.{metric}", members, found, commit_url=commit_url))
        parts.append(_legend(members))
        parts.append(_changes_table(sorted(found, key=lambda c: c.started_at), commit_url))
    return _page(f"{test} - {title}", "".join(parts))


def write_trends(out: Path, series: Sequence[Series], *, commit_url: str | None = None,
                 max_pvalue: float = MAX_PVALUE, min_magnitude: float = 0.0,
                 title: str = "pytest-agentmem trends", test_kind: Test = "ttest") -> list[Path]:
    """Write ``index.html`` and one page per test into ``out``; return the pages written."""
    by_test: dict[str, list[Series]] = defaultdict(list)
    for s in series:
        by_test[s.key.test].append(s)
    changes = {id(s): changes_of(s, max_pvalue=max_pvalue, min_magnitude=min_magnitude, test=test_kind)
               for s in series}
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    rows = ["<table><tr><th>test</th><th class=num>runs</th><th class=num>figures</th>"
            "<th class=num>regressions</th><th class=num>improvements</th><th>last run</th></tr>"]
    for test, members in sorted(by_test.items()):
        path = out / page_name(test)
        write_text_atomic(path, test_page(test, members, changes, commit_url=commit_url, title=title,
                                                significance=_TESTS[test_kind]))
        written.append(path)
        found = [c for s in members for c in changes[id(s)]]
        last = max(p.started_at for s in members for p in s.points)
        rows.append(f'<tr><td><a href="{escape(path.name)}">{escape(test)}</a></td>'
                    f"<td class=num>{len({p.run_id for s in members for p in s.points})}</td>"
                    f"<td class=num>{len({(s.key.measurement, s.key.metric) for s in members})}</td>"
                    f"<td class=num>{sum(1 for c in found if c.regression)}</td>"
                    f"<td class=num>{sum(1 for c in found if c.regression is False)}</td>"
                    f"<td>{escape(_date(last))}</td></tr>")
    rows.append("</table>")
    body = (f"<h1>{escape(title)}</h1><p class=muted>{len(by_test)} tests, {len(series)} series "
            f"(test, metric, machine, workload). Change points: E-divisive means, {_TESTS[test_kind]} p &le; "
            f"{max_pvalue:g}."
            "</p>" + "".join(rows) if by_test else f"<h1>{escape(title)}</h1><p>No runs in the history yet.</p>")
    index = out / "index.html"
    write_text_atomic(index, _page(title, body))
    return [index, *written]
