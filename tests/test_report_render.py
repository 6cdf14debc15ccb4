"""Report rendering from records: chart primitives, markdown cells, HTML escaping.

Built from real gate values (CheckResult/TestVerdict) and a real LoadResult over an
HDR histogram filled with known latencies, without running pytest.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from pytest_agentmem.gate.verdict import CheckResult, TestVerdict
from pytest_agentmem.load.histogram import new_histogram, record_ns
from pytest_agentmem.load.result import LoadResult
from pytest_agentmem.measurement import Measurement
from pytest_agentmem.report import svg
from pytest_agentmem.report.html import render_html
from pytest_agentmem.report.json_report import build_document
from pytest_agentmem.report.markdown import cell, change_text, render_markdown
from pytest_agentmem.report.records import (
    build_record,
    headline,
    jsonable,
    percentile_curve,
)


def _load(ms: list[float]) -> LoadResult:
    hist = new_histogram()
    record_ns(hist, np.array([int(v * 1e6) for v in ms], dtype=np.int64))
    timeline = [{"t": 0.0, "ops": 50, "errors": 1, "p95_ms": 9.0},
                {"t": 1.0, "ops": 50, "errors": 0, "p95_ms": 10.0}]
    return LoadResult.build(histogram=hist, ops=len(ms) + 1, errors=1, duration_s=2.0, name="search",
                            timeouts=0, concurrency=4, rate=None, timeline=timeline,
                            errors_by_type={"TimeoutError": {"count": 1, "samples": ["<took too long>"]}})


def _check(metric: str, value: float, baseline: float | None, verdict: str, **kw: object) -> CheckResult:
    raw = value / baseline - 1 if baseline else None
    return CheckResult(measurement="search", metric=metric, value=value, baseline=baseline, limit=None,
                       change=raw, tolerance=0.15, p_value=0.004 if verdict == "fail" else None,
                       confirmed=verdict == "fail", verdict=verdict,  # type: ignore[arg-type]
                       message=f"{metric} {value} vs {baseline}", kind="baseline",
                       direction="lower", raw_change=raw, **kw)  # type: ignore[arg-type]


@pytest.fixture
def records() -> list[dict]:
    load = _load([1.0] * 90 + [5.0] * 9 + [40.0])
    search = Measurement("search", load.metrics(), load=load)
    bad = TestVerdict("tests/perf/test_s.py::test_search[<img src=x onerror=alert(1)>]", "failed",
                      [_check("p95_ms", 6.0, 4.0, "fail"), _check("p50_ms", 1.0, 1.0, "pass")],
                      [search], fingerprint={"machine": {"cpu_model": "Test CPU", "cpu_count": 2}})
    new = TestVerdict("tests/perf/test_s.py::test_new", "not-judged", [_check("p95_ms", 3.0, None, "not-judged", reason="no baseline")])
    return [build_record(bad.nodeid, bad, [search], pytest_outcome="failed", duration_s=1.0),
            build_record(new.nodeid, new, [], pytest_outcome="passed", duration_s=0.5)]


def test_percentile_curve_reads_the_histogram() -> None:
    curve = dict(map(tuple, percentile_curve(_load([1.0] * 90 + [5.0] * 9 + [40.0]))))
    assert curve[50.0] == pytest.approx(1.0, rel=0.01)
    assert curve[95.0] == pytest.approx(5.0, rel=0.01)
    assert curve[100.0] == pytest.approx(40.0, rel=0.01)


def test_records_are_json_and_headline_counts(records: list[dict]) -> None:
    json.dumps(records, allow_nan=False)
    assert headline(records) == ("2 perf tests: speed 1 failed, 1 not judged "
                                 "(no baseline: record one with --update-baselines)")
    assert jsonable({"a": float("nan"), "b": (1, float("inf"))}) == {"a": None, "b": [1, None]}


def test_markdown_table_puts_failures_first_and_escapes(records: list[dict]) -> None:
    text = render_markdown(records)
    rows = [line for line in text.splitlines() if line.startswith("| test_s.py")]
    assert [r.rsplit("|", 2)[-2].strip() for r in rows] == ["❌ fail", "⚠️ not judged: no baseline", "✅ pass"]
    assert "&lt;img src=x onerror=alert(1)&gt;" in rows[0] and "<img" not in text
    assert "+50.0% worse, p=0.004" in rows[0]
    assert cell("a|b\nc") == "a\\|b c"


def test_change_text_names_the_direction() -> None:
    worse_qps = {"raw_change": -0.2, "change": 0.2}
    assert change_text(worse_qps) == "-20.0% worse"
    assert change_text({"raw_change": None, "change": None}) == "–"


def test_html_escapes_everything_and_draws_the_charts(records: list[dict]) -> None:
    page = render_html(build_document(records, {"fingerprint": records[0]["fingerprint"], "services": []}))
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;took too long&gt;" in page
    assert "<script" not in page.lower() and not re.search(r"https?://", page)
    for title in ("Latency distribution", "Throughput and p95 over time", "Baseline vs this run",
                  "Errors by type"):
        assert f"<title>{title}</title>" in page
    assert "Test CPU" in page and "1 of 2 perf tests FAILED" in page


def test_nice_ticks_and_numbers() -> None:
    assert svg.nice_ticks(0, 97) == [0, 20, 40, 60, 80, 100]
    assert svg.nice_ticks(0, 0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert [svg.fmt_number(v) for v in (0, 0.0042, 1.5, 12.34, 250.0, 12345.0, None)] == \
        ["0", "0.0042", "1.5", "12.3", "250", "12.3k", "–"]


def test_svg_text_is_escaped() -> None:
    chart = svg.hbar_chart("errors <b>", [("<script>x</script>", 3.0)])
    assert "<script>" not in chart and "&lt;script&gt;" in chart and "errors &lt;b&gt;" in chart
    assert svg.line_chart("empty", []).count("no data") == 1
