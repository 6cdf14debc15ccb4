"""The self-contained HTML report (``--agentmem-html PATH``).

One file, no network: inline CSS and inline SVG charts from :mod:`.svg`, no
scripts. Rendered from the JSON report's document, so it shows exactly what the
JSON says. Every piece of text is escaped with :func:`html.escape`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from html import escape
from typing import Any

from ..compare.pacer import pairs_text
from ..presentation import (
    PERCENTILE_METRICS,
    Outcome,
    Verdict,
    compact_number,
    count_verdicts,
    outcome_rank,
    short_test,
)
from . import svg
from .evidence import evidence_html
from .markdown import change_text, metric_label, reference
from .records import curve_from_metrics, sort_checks

VERDICT_COLOR = {Verdict.FAIL: svg.RED, Verdict.NOT_JUDGED: svg.AMBER, Verdict.PASS: svg.GREEN}
OUTCOME_STYLE = {  # outcome -> (badge text, colour)
    Outcome.FAILED: ("REGRESSED", svg.RED), Outcome.ERROR: ("ERROR", svg.RED),
    Outcome.NOT_JUDGED: ("NOT JUDGED", svg.AMBER), Outcome.UPDATED: ("BASELINE UPDATED", svg.BLUE),
    Outcome.PASSED: ("PASSED", svg.GREEN), Outcome.UNCHECKED: ("UNCHECKED", svg.AMBER),
    Outcome.SKIPPED: ("SKIPPED", svg.GREY),
}
LOAD_METRICS = ("qps", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms",
                "error_rate", "ops", "errors", "timeouts", "duration_s", "concurrency", "rate")

CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f6f8fa;color:#1f2328;font:14px/1.45 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif}
main{max-width:1200px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 10px}
h3{font-size:15px;margin:18px 0 8px}
.meta{color:#59636e;font-size:12.5px}
.banner{border-radius:10px;padding:18px 22px;margin:18px 0;color:#fff;display:flex;align-items:center;gap:18px}
.banner .big{font-size:26px;font-weight:700;letter-spacing:.3px}
.banner .sub{font-size:15px;opacity:.95}
.pills{display:flex;gap:8px;flex-wrap:wrap;margin-left:auto}
.pill{background:rgba(255,255,255,.2);border-radius:999px;padding:3px 12px;font-weight:600;white-space:nowrap}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d0d7de;border-radius:8px;overflow:hidden}
th,td{padding:6px 10px;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-size:12px;text-transform:uppercase;letter-spacing:.4px;color:#59636e}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.v-fail td{background:#ffebe9}
tr.v-warn td{background:#fff8c5}
tr.v-new td{background:#ddf4ff}
td code,.nodeid{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
.badge{display:inline-block;border-radius:6px;padding:1px 8px;color:#fff;font-size:12px;font-weight:700;white-space:nowrap}
.card{background:#fff;border:1px solid #d0d7de;border-radius:10px;padding:16px 18px;margin:16px 0}
.card > header{display:flex;align-items:center;gap:10px;flex-wrap:wrap}
.card > header .nodeid{font-size:14px;font-weight:600}
.why{background:#ffebe9;border-left:4px solid #cf222e;padding:8px 12px;margin:10px 0;border-radius:4px}
.why div{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:pre-wrap}
.note{background:#fff8c5;border-left:4px solid #bf8700;padding:6px 12px;margin:8px 0;border-radius:4px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:14px;margin-top:10px}
.grid > div{background:#fff;border:1px solid #eaeef2;border-radius:8px;padding:8px}
.figures{display:flex;flex-wrap:wrap;gap:6px 18px;margin:8px 0;font-size:13px}
.figures b{font-variant-numeric:tabular-nums}
details{margin-top:10px}
summary{cursor:pointer;color:#59636e}
a{color:#0969da;text-decoration:none}
a:hover{text-decoration:underline}
.samples{margin:6px 0 0;padding-left:18px;font-size:12px;color:#59636e}
.samples code{font-size:11.5px;word-break:break-all}
.nowrap{white-space:nowrap}
td.test{min-width:300px}
.count{font-weight:700;font-size:12.5px;margin-right:6px}
details.checks table{margin-top:6px}
footer{margin:30px 0 10px;color:#59636e;font-size:12px}
"""


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _anchor(nodeid: str) -> str:
    return "t-" + re.sub(r"[^A-Za-z0-9_-]+", "-", nodeid).strip("-")


def _badge(outcome: str) -> str:
    text, color = OUTCOME_STYLE.get(outcome, (outcome.upper(), svg.GREY))
    return f'<span class="badge" style="background:{color}">{_e(text)}</span>'


def _verdict_badge(verdict: str) -> str:
    color = VERDICT_COLOR.get(verdict, svg.GREY)
    return f'<span class="badge" style="background:{color}">{_e(verdict)}</span>'


# --------------------------------------------------------------------------- page parts


def _banner(document: dict[str, Any]) -> str:
    outcomes: dict[str, int] = document["summary"].get("outcomes", {})
    bad = outcomes.get("failed", 0) + outcomes.get("error", 0)
    ran = sum(n for k, n in outcomes.items() if k != "skipped")
    unjudged = outcomes.get("not-judged", 0) + outcomes.get("unchecked", 0)
    if bad:
        color, big = svg.RED, f"{bad} of {ran} perf tests FAILED"
    elif not ran:
        color, big = svg.GREY, "No perf tests ran"
    elif unjudged or outcomes.get("skipped"):
        skipped = outcomes.get("skipped", 0)
        color = svg.AMBER
        big = (f"{unjudged} of {ran} perf tests not fully judged" if unjudged else
               f"{skipped} perf test{'s' if skipped != 1 else ''} skipped")
        if unjudged and skipped:
            big += f", {skipped} skipped"
        big += ": no regression found in what was judged"
    elif outcomes.get("updated"):
        color, big = svg.BLUE, "Baselines updated"
    else:
        color, big = svg.GREEN, f"All {ran} perf tests passed, every figure judged"
    pills = "".join(f'<span class="pill">{n} {_e(OUTCOME_STYLE.get(k, (k,))[0].lower())}</span>'
                    for k, n in sorted(outcomes.items(), key=lambda kv: outcome_rank(kv[0])) if n)
    return (f'<section class="banner" style="background:{color}"><div>'
            f'<div class="big">{_e(big)}</div><div class="sub">{_e(document["summary"]["headline"])}</div>'
            f'</div><div class="pills">{pills}</div></section>')


def _run_meta(run: dict[str, Any]) -> str:
    bits = [f"finished {run.get('finished_at') or '?'}"]
    compare = run.get("compare")
    if isinstance(compare, dict):
        bits.insert(0, f"A/B: this checkout vs {compare.get('ref')} ({str(compare.get('commit'))[:12]}), "
                       f"{pairs_text(compare.get('pairs'))} a run"
                       + (f", {compare['processes']} processes a side" if (compare.get("processes") or 1) > 1 else "")
                       + ", tolerance "
                       f"{float(compare.get('tolerance') or 0):.0%}")
    if run.get("duration_s") is not None:
        bits.append(f"{run['duration_s']:.1f} s")
    bits.append(f"Python {run.get('python')}, pytest {run.get('pytest')}")
    if run.get("plugin_version"):
        bits.append(f"pytest-agentmem {run['plugin_version']}")
    if run.get("workers"):
        bits.append(f"{run['workers']} xdist workers")
    fp = run.get("fingerprint") or {}
    fp = fp.get("machine", fp) if isinstance(fp.get("machine"), dict) else fp
    cpu = fp.get("cpu_model") or fp.get("cpu")
    if cpu:
        cores = fp.get("cpu_count") or fp.get("cores")
        bits.append(f"{cpu}" + (f" × {cores}" if cores else ""))
    seen: set[str] = set()
    for service in run.get("services", []):
        text = f"{service.get('name')} {service.get('version')} ({service.get('mode')})"
        if text not in seen:
            seen.add(text)
            bits.append(text)
    return '<div class="meta">' + " · ".join(_e(b) for b in bits) + "</div>"


def _check_counts(checks: Sequence[dict[str, Any]]) -> str:
    found = count_verdicts(check.get("verdict") for check in checks)
    return " ".join(f'<span class="count" style="color:{VERDICT_COLOR.get(k, svg.GREY)}">{n} {_e(k)}</span>'
                    for k, n in found.items() if k in VERDICT_COLOR)


def _worst(record: dict[str, Any]) -> str:
    """What to read first about a test: its worst check, or why it has none."""
    checks = record.get("checks", [])
    if not checks:
        return _e(record.get("message") or "; ".join(record.get("notes", [])) or "no figures checked")
    ranked = sort_checks([(record, c) for c in checks])
    bad = [c for _, c in ranked if c.get("verdict") in ("fail", "not-judged")]
    if bad:
        c = bad[0]
        more = f" <span class='meta'>(+{len(bad) - 1} more)</span>" if len(bad) > 1 else ""
        return _e(c.get("message") or metric_label(c, record)) + more
    measured = [c for c in checks if c.get("kind") == "baseline"] or checks
    shown = measured[:4]
    return " · ".join(f"{_e(metric_label(c, record))} <b>{_e(compact_number(c.get('value')))}</b>"
                      for c in shown)


def _summary_table(records: Sequence[dict[str, Any]]) -> str:
    """One row per test, bad news first: outcome, checks by verdict, the worst finding."""
    if not records:
        return '<p class="meta">No perf tests ran.</p>'
    rows = []
    for record in records:
        outcome = str(record.get("outcome"))
        css = {"failed": "v-fail", "error": "v-fail", "not-judged": "v-warn", "unchecked": "v-warn"}.get(outcome, "")
        rows.append(f'<tr class="{css}"><td>{_badge(outcome)}</td>'
                    f'<td class="test"><a href="#{_anchor(record["nodeid"])}"><code>{_e(short_test(record["nodeid"]))}</code></a></td>'
                    f'<td class="nowrap">{_check_counts(record.get("checks", []))}</td>'
                    f'<td>{_worst(record)}</td>'
                    f'<td class="num">{float(record.get("duration_s") or 0):.1f} s</td></tr>')
    return ("<table><thead><tr><th>verdict</th><th>test</th><th>checks</th><th>finding</th>"
            "<th>time</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _checks_table(record: dict[str, Any]) -> str:
    """Every check of one test: metric, value, baseline, change, verdict; failures first."""
    pairs = sort_checks([(record, c) for c in record.get("checks", [])])
    if not pairs:
        return ""
    rows = [f'<tr class="v-{_e(c.get("verdict"))}" title="{_e(c.get("message", ""))}">'
            f'<td>{_e(metric_label(c, record))}</td>'
            f'<td class="num"><b>{_e(compact_number(c.get("value")))}</b></td>'
            f'<td class="num">{_e(reference(c))}</td><td class="num">{_e(change_text(c))}</td>'
            f'<td>{_verdict_badge(str(c.get("verdict")))}</td></tr>' for _, c in pairs]
    return ('<details class="checks"' + (" open" if record.get("outcome") in ("failed", "error") else "")
            + f"><summary>{len(rows)} checks</summary><table><thead><tr><th>metric</th><th>value</th>"
            "<th>baseline</th><th>change</th><th>verdict</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></details>")


def _figures(metrics: dict[str, Any]) -> str:
    keys = [k for k in LOAD_METRICS if k in metrics] + sorted(k for k in metrics if k not in LOAD_METRICS)
    items = [f"<span>{_e(k)} <b>{_e(compact_number(metrics[k]) if isinstance(metrics[k], (int, float)) else metrics[k])}</b></span>"
             for k in keys if metrics.get(k) is not None]
    return '<div class="figures">' + "".join(items) + "</div>"


def _baseline_percentiles(checks: Sequence[dict[str, Any]], measurement: str) -> list[tuple[float, float]]:
    by_metric = {c["metric"]: c["baseline"] for c in checks
                 if c.get("kind") == "baseline" and c.get("baseline") is not None
                 and c.get("measurement") == measurement}
    return [(p, float(by_metric[key])) for p, key in PERCENTILE_METRICS if key in by_metric]


def _latency_chart(measurement: dict[str, Any], checks: Sequence[dict[str, Any]]) -> str:
    load = measurement.get("load") or {}
    curve = measurement.get("percentiles") or curve_from_metrics({**measurement.get("metrics", {}), **load})
    series = [svg.Series("this run", [(float(p), float(v)) for p, v in curve], svg.BLUE,
                         markers=len(curve) <= 8)]
    base = _baseline_percentiles(checks, measurement.get("name", ""))
    if base:
        series.append(svg.Series("baseline", base, svg.GREY, dashed=True, markers=True))
    return svg.percentile_chart("Latency distribution", series)


def _timeline_chart(load: dict[str, Any]) -> str:
    timeline = load.get("timeline") or []
    t = [float(p.get("t", i)) for i, p in enumerate(timeline)]
    ops = [float(p.get("ops", 0) or 0) for p in timeline]
    errors = [float(p.get("errors", 0) or 0) for p in timeline]
    p95 = [p.get("p95_ms") for p in timeline]
    # ops are counted per timeline bucket; show them per second
    if len(t) > 1 and t[1] - t[0] > 0 and abs(t[1] - t[0] - 1.0) > 1e-9:
        width = t[1] - t[0]
        ops = [n / width for n in ops]
        errors = [n / width for n in errors]
    return svg.timeline_chart("Throughput and p95 over time", t, ops, p95, errors)


def _bars(measurement: dict[str, Any], checks: Sequence[dict[str, Any]]) -> str:
    rows: list[svg.BarPair] = []
    for check in checks:
        if check.get("measurement") != measurement.get("name") or check.get("kind") != "baseline":
            continue
        value = check.get("value")
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        verdict = str(check.get("verdict"))
        color = VERDICT_COLOR.get(verdict, svg.BLUE)
        if verdict == "not-judged":
            note = f"not judged: {check.get('reason') or 'see the table'}"
        else:
            note = change_text(check).split(",")[0] if check.get("baseline") is not None else "no baseline"
            if check.get("normalised"):
                note += " (against the scaled baseline)"
        rows.append(svg.BarPair(str(check.get("metric")), float(value), check.get("baseline"), color, note,
                                note_color=color if verdict in ("fail", "not-judged") else svg.MUTED))
    if not any(row.baseline is not None for row in rows):
        return ""  # nothing to compare with yet; the notes say so
    return svg.paired_bars("Baseline vs this run", rows)


def _paired_chart(measurement: dict[str, Any]) -> str:
    """A/B: each side's throughput round by round, in the order measured (pair k: base, candidate)."""
    info = measurement.get("info") or {}
    base, cand = info.get("ab_base_rounds"), info.get("ab_candidate_rounds")
    if not base or not cand:
        return ""
    metric = "qps" if any("qps" in r for r in cand) else next(iter(cand[0]), "")
    series = [svg.Series("base", [(i + 1, float(r.get(metric, math.nan))) for i, r in enumerate(base)],
                         svg.GREY, dashed=True, markers=True),
              svg.Series("this checkout", [(i + 1, float(r.get(metric, math.nan))) for i, r in enumerate(cand)],
                         svg.BLUE, markers=True)]
    return svg.line_chart(f"Paired rounds: {metric}", series, x_axis=svg.Axis(label="pair"),
                          y_axis=svg.Axis(label=metric))


def _error_count(info: Any) -> float:
    if isinstance(info, dict):
        return float(info.get("count", 0) or 0)
    return float(info or 0)


def _errors_chart(load: dict[str, Any]) -> str:
    by_type = load.get("errors_by_type") or {}
    if not by_type and not load.get("errors"):
        return ""
    chart = svg.hbar_chart("Errors by type", [(str(k), _error_count(v)) for k, v in by_type.items()])
    samples = [(k, sample) for k, v in by_type.items() if isinstance(v, dict)
               for sample in (v.get("samples") or [])[:2]]
    if samples:
        chart += '<ul class="samples">' + "".join(
            f"<li><b>{_e(k)}</b>: <code>{_e(str(sample)[:300])}</code></li>" for k, sample in samples) + "</ul>"
    return chart


def _resources(load: dict[str, Any]) -> str:
    res = load.get("resources") or {}
    labels = (("process_cpu_pct", "test process CPU", "%"), ("services_cpu_pct", "services CPU", "%"),
              ("process_rss_mb_max", "peak RSS", " MiB"), ("services_rss_mb_max", "services peak RSS", " MiB"))
    items = []
    for key, label, unit in labels:
        value = res.get(key)
        if isinstance(value, (int, float)):
            text = f"{compact_number(value)}{unit}"
            items.append(f"<span>{_e(label)} <b>{_e(text)}</b></span>")
    mode = load.get("mode")
    if mode:
        how = f"open loop {compact_number(load.get('rate'))}/s" if mode == "open" \
            else f"closed loop × {load.get('concurrency')}"
        items.insert(0, f"<span>{_e(how)}</span>")
    return '<div class="figures meta">' + "".join(items) + "</div>" if items else ""


def _measurement_block(measurement: dict[str, Any], checks: Sequence[dict[str, Any]], many: bool) -> str:
    load = measurement.get("load")
    title = f"<h3>{_e(measurement.get('name'))} <span class='meta'>({_e(measurement.get('kind'))}" + \
        (f", {len(measurement.get('rounds') or [])} rounds" if measurement.get("rounds") else "") + \
        (f", re-measured ({measurement['confirmations']} pass{'es' if measurement['confirmations'] > 1 else ''})" if measurement.get("confirmations") else "") + \
        ")</span></h3>" if many or load else ""
    parts = [title, _figures(measurement.get("metrics", {}))]
    if isinstance(load, dict):
        parts.append(_resources(load))
    panels: list[str] = []
    if isinstance(load, dict):
        panels += [_latency_chart(measurement, checks), _timeline_chart(load)]
    panels += [_paired_chart(measurement), _bars(measurement, checks)]
    if isinstance(load, dict):
        panels.append(_errors_chart(load))
    panels = [p for p in panels if p]
    if panels:
        parts.append('<div class="grid">' + "".join(f"<div>{p}</div>" for p in panels) + "</div>")
    parts.append(evidence_html(measurement))  # issue 23: statements, pool, I/O, Redis, flame graphs
    return "".join(parts)


def _test_card(record: dict[str, Any]) -> str:
    nodeid = record["nodeid"]
    checks = record.get("checks", [])
    head = (f'<header>{_badge(record.get("outcome", ""))}<span class="nodeid">{_e(nodeid)}</span>'
            f'<span class="meta">{float(record.get("duration_s") or 0):.2f} s'
            + (f' · worker {_e(record["worker"])}' if record.get("worker") else "") + "</span></header>")
    parts = [f'<section class="card" id="{_anchor(nodeid)}">', head]
    failures = [c for c in checks if c.get("verdict") == "fail"]
    if failures or record.get("message"):
        lines = [c.get("message", "") for c in failures] or [record.get("message", "")]
        parts.append('<div class="why"><b>Why it failed</b>' +
                     "".join(f"<div>{_e(line)}</div>" for line in lines) + "</div>")
    for note in record.get("notes", []):
        parts.append(f'<div class="note">{_e(note)}</div>')
    for key, (old, new) in (record.get("updated") or {}).items():
        parts.append(f'<div class="note">baseline {_e(key)}: {_e(compact_number(old))} → {_e(compact_number(new))}</div>')
    parts.append(_checks_table(record))
    measurements = record.get("measurements", [])
    for measurement in measurements:
        parts.append(_measurement_block(measurement, checks, len(measurements) > 1))
    if record.get("baseline_path"):
        parts.append(f'<div class="meta">baseline file: <code>{_e(record["baseline_path"])}</code></div>')
    parts.append("</section>")
    return "".join(parts)


def _flatten(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [row for k, v in sorted(value.items()) for row in _flatten(f"{prefix}{k}.", v)]
    return [(prefix.rstrip("."), value)]


def _fingerprint(run: dict[str, Any]) -> str:
    rows = _flatten("", run.get("fingerprint") or {})
    rows += [(f"service {s.get('name')}" + (f" ({s['worker']})" if s.get("worker") else ""),
              f"{s.get('version')} {s.get('mode')} {s.get('url')}") for s in run.get("services", [])]
    rows += [(f"setting {k}", v) for k, v in sorted((run.get("settings") or {}).items())]
    if not rows:
        return ""
    body = "".join(f"<tr><td>{_e(k)}</td><td><code>{_e(v)}</code></td></tr>" for k, v in rows)
    return f"<details><summary>Machine, services and settings</summary><table>{body}</table></details>"


def render_html(document: dict[str, Any]) -> str:
    """The report page for a JSON report ``document`` (see :mod:`.json_report`)."""
    run = document.get("run", {})
    records = document.get("tests", [])
    shown = [r for r in records if r.get("outcome") != "skipped"]
    skipped = [r for r in records if r.get("outcome") == "skipped"]
    body = [
        "<main>",
        "<h1>pytest-agentmem performance report</h1>",
        _run_meta(run),
        _banner(document),
        "<h2>Summary</h2>",
        _summary_table(shown),
        "<h2>Tests</h2>" if shown else "",
        *(_test_card(r) for r in shown),
    ]
    if skipped:
        body.append("<details><summary>" + _e(f"{len(skipped)} skipped perf tests") + "</summary><ul>" +
                    "".join(f"<li><code>{_e(r['nodeid'])}</code> {_e(r.get('message', ''))}</li>" for r in skipped)
                    + "</ul></details>")
    body += [_fingerprint(run),
             f'<footer>schema {_e(document.get("schema"))} v{_e(document.get("schema_version"))} · '
             "generated by pytest-agentmem · the JSON report holds every figure</footer>", "</main>"]
    title = f"agentmem: {document['summary']['headline']}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
            + "".join(body) + "</body></html>\n")
