"""The reports end to end (pytester): JSON, markdown step summary, JUnit properties, HTML, xdist.

The generated perf tests measure with the real ``perf`` fixture (load engine) and
are judged by the real gate; the op is a short ``asyncio.sleep`` (the reports do
not care what was measured, only that it went through the real path), failing
every 25th call so the error breakdown has something to show.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

PERF_TESTS = '''
    import asyncio
    import pytest

    async def op(i):
        await asyncio.sleep(0.002)
        if i % 25 == 7:
            raise ValueError(f"op {i} failed on purpose")

    @pytest.mark.agentmem_perf(max_error_rate=0.5)
    async def test_search(perf):
        await perf.run(op, concurrency=2, duration=1.2, name="search")

    @pytest.mark.agentmem_perf(min_recall=0.9)
    def test_recall_ok(perf):
        perf.record("quality", recall=0.95)

    @pytest.mark.agentmem_perf(min_recall=0.9)
    def test_recall_low(perf):
        perf.record("quality", recall=0.5)

    @pytest.mark.agentmem_perf
    @pytest.mark.parametrize("label", ["<script>alert('x')</script>", "a|b"])
    def test_named(perf, label):
        perf.record("quality", items_per_s=120.0)

    def test_plain():
        pass
'''

RECORD_TESTS = '''
    import pytest

    @pytest.mark.agentmem_perf(min_recall=0.9, max_p95_ms=20)
    def test_recall(perf):
        perf.record("quality", recall=0.95, p95_ms=12.5)

    @pytest.mark.agentmem_perf(min_recall=0.9)
    def test_recall_low(perf):
        perf.record("quality", recall=0.5)

    @pytest.mark.agentmem_perf
    @pytest.mark.parametrize("label", ["<script>alert('x')</script>", "a|b"])
    def test_named(perf, label):
        perf.record("quality", items_per_s=120.0)
'''


def _run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_perf=source)
    return pytester.runpytest("--agentmem-perf", "-p", "no:cacheprovider", *args)


# --------------------------------------------------------------------------- JSON


def test_json_report_has_every_result_and_verdict(pytester: pytest.Pytester) -> None:
    result = _run(pytester, PERF_TESTS, "--agentmem-report=out/report.json")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["agentmem: JSON report written to *report.json"])
    doc = json.loads((pytester.path / "out" / "report.json").read_text())

    assert doc["schema"] == "pytest-agentmem-report" and doc["schema_version"] == 1
    run = doc["run"]
    assert run["started_at"] and run["finished_at"] and run["python"] and run["pytest"]
    assert run["fingerprint"]["machine"]["cpu_count"] >= 1
    assert run["settings"]["perf"] is True and run["services"] == []
    assert doc["summary"]["headline"] == ("5 perf tests: correctness 1 failed, 2 partly judged (no baseline: record one with --update-baselines); speed 3 not judged (no baseline: record one with --update-baselines)")

    tests = {t["nodeid"].split("::")[1]: t for t in doc["tests"]}
    assert set(tests) == {"test_search", "test_recall_ok", "test_recall_low",
                          "test_named[<script>alert('x')</script>]", "test_named[a|b]"}
    assert doc["tests"][0]["nodeid"].endswith("test_recall_low")  # bad news first
    low = tests["test_recall_low"]
    assert low["outcome"] == "failed" and low["pytest_outcome"] == "failed"
    (check,) = [c for c in low["checks"] if c["kind"] == "threshold"]
    assert check["metric"] == "recall" and check["value"] == 0.5 and check["limit"] == 0.9
    assert check["verdict"] == "fail" and "recall" in check["message"]

    search = tests["test_search"]
    assert search["outcome"] == "not-judged"
    (measurement,) = search["measurements"]
    load = measurement["load"]
    assert load["ops"] > 50 and 0 < load["errors"] < load["ops"]
    assert load["errors_by_type"]["ValueError"]["count"] == load["errors"]
    assert load["timeline"] and {"t", "ops", "errors", "p95_ms"} <= set(load["timeline"][0])
    curve = measurement["percentiles"]  # from the merged HDR histogram
    assert curve[0][0] == 0.0 and curve[-1][0] == 100.0 and len(curve) > 10
    assert all(a[1] <= b[1] for a, b in zip(curve, curve[1:]))
    assert 1.5 < dict(map(tuple, curve))[50.0] < 500  # ~2 ms sleeps on a busy machine
    assert any(c["metric"] == "p95_ms" and c["verdict"] == "not-judged" and c["reason"] == "no baseline" for c in search["checks"])


def test_json_report_redacts_service_urls() -> None:
    from pytest_agentmem.report.json_report import service_info
    from pytest_agentmem.services.base import RunningService

    service = RunningService(name="postgres", url="postgresql://app:s3cret@db.example:5432/x",
                             mode="external", version="18.1", startup_s=0.01,
                             components={"pgvector": "0.8.2"})
    info = service_info(service, "gw1")
    assert "s3cret" not in json.dumps(info)
    assert info == {"name": "postgres", "url": "postgresql://app:***@db.example:5432/x",
                    "mode": "external", "version": "18.1", "components": {"pgvector": "0.8.2"},
                    "startup_s": 0.01, "worker": "gw1"}


def test_no_report_without_the_option(pytester: pytest.Pytester) -> None:
    result = _run(pytester, RECORD_TESTS)
    result.assert_outcomes(passed=3, failed=1)
    assert "report written" not in result.stdout.str()
    assert not list(pytester.path.glob("*.json")) and not list(pytester.path.glob("*.html"))


def test_report_path_from_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nagentmem_report = reports/agentmem.json\n")
    _run(pytester, RECORD_TESTS).assert_outcomes(passed=3, failed=1)
    doc = json.loads((pytester.path / "reports" / "agentmem.json").read_text())
    assert doc["summary"]["tests"] == 4


# --------------------------------------------------------------------------- markdown


def test_markdown_summary_is_appended_to_github_step_summary(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = pytester.path / "step_summary.md"
    summary.write_text("## earlier step\n\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = _run(pytester, RECORD_TESTS)
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["agentmem: markdown summary appended to *step_summary.md"])
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("## earlier step\n\n")  # appended, not overwritten
    assert "### pytest-agentmem: 4 perf tests: correctness 1 failed, 1 partly judged (no baseline: record one with --update-baselines); speed 2 not judged, 1 partly judged (no baseline: record one with --update-baselines)" in text
    lines = text.splitlines()
    header = lines.index("| test | metric | value | baseline | change | verdict |")
    assert lines[header + 1] == "|---|---|---:|---:|---|---|"
    rows = [line for line in lines[header + 2:] if line.startswith("|")]
    assert all(row.count(" | ") == 5 for row in rows)  # pipes in names are escaped
    assert rows[0].startswith("| test_perf.py::test_recall_low | recall | 0.5 | ≥ 0.9 (limit) |")
    assert rows[0].endswith("❌ fail |")
    assert "| test_perf.py::test_named[a\\|b] | items_per_s | 120 | – | – | ⚠️ not judged: no baseline |" in rows
    assert "&lt;script&gt;" in text and "<script>" not in text
    assert "Why they failed" in text


def test_no_step_summary_when_unset(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    result = _run(pytester, RECORD_TESTS)
    assert "markdown summary" not in result.stdout.str()


# --------------------------------------------------------------------------- JUnit


def test_junit_xml_carries_the_figures_as_properties(pytester: pytest.Pytester) -> None:
    result = _run(pytester, RECORD_TESTS, "--junitxml=junit.xml")
    result.assert_outcomes(passed=3, failed=1)
    root = ET.parse(pytester.path / "junit.xml").getroot()
    props = {case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
             for case in root.iter("testcase")}
    ok = props["test_recall"]
    assert ok["agentmem.outcome"] == "not-judged"
    assert float(ok["agentmem.quality.recall"]) == 0.95
    assert float(ok["agentmem.quality.recall.min_limit"]) == 0.9
    assert ok["agentmem.quality.recall.min_verdict"] == "pass"
    assert float(ok["agentmem.quality.p95_ms"]) == 12.5
    assert float(ok["agentmem.quality.p95_ms.max_limit"]) == 20
    assert ok["agentmem.quality.p95_ms.verdict"] == "not-judged"
    low = props["test_recall_low"]
    assert low["agentmem.outcome"] == "failed" and low["agentmem.quality.recall.min_verdict"] == "fail"


# --------------------------------------------------------------------------- HTML


def test_html_report_is_self_contained_with_charts_and_escaped(pytester: pytest.Pytester) -> None:
    result = _run(pytester, PERF_TESTS, "--agentmem-html=report.html")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["agentmem: HTML report written to *report.html"])
    page = (pytester.path / "report.html").read_text(encoding="utf-8")

    assert page.startswith("<!DOCTYPE html>")
    # nothing fetched: no scripts at all, no external style sheets, no remote URLs
    assert "<script" not in page.lower()
    assert "<link" not in page.lower() and "@import" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page, re.I)
    # the test named with a script tag is shown as text
    assert "test_named[&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;]" in page
    # headline banner, summary table, and the charts of the load test
    assert "1 of 5 perf tests FAILED" in page
    assert "5 perf tests: correctness 1 failed, 2 partly judged (no baseline: record one with --update-baselines); speed 3 not judged (no baseline: record one with --update-baselines)" in page
    assert page.count("<svg") >= 3
    for title in ("Latency distribution", "Throughput and p95 over time", "Errors by type"):
        assert f"<title>{title}</title>" in page
    assert "ValueError" in page and "failed on purpose" in page
    assert page.index("test_recall_low") < page.index("test_recall_ok")  # regressions first


def test_html_shows_baseline_vs_current_after_update(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_perf=RECORD_TESTS)
    first = pytester.runpytest("--agentmem-perf", "--update-baselines", "-k", "not low")
    first.assert_outcomes(passed=3)
    result = pytester.runpytest("--agentmem-perf", "-k", "not low", "--agentmem-html=r.html",
                                "--agentmem-report=r.json")
    result.assert_outcomes(passed=3)
    doc = json.loads((pytester.path / "r.json").read_text())
    baselined = [c for t in doc["tests"] for c in t["checks"] if c["kind"] == "baseline"]
    assert baselined and all(c["baseline"] is not None for c in baselined)
    page = (pytester.path / "r.html").read_text(encoding="utf-8")
    assert "<title>Baseline vs this run</title>" in page
    assert "All 3 perf tests passed" in page


# --------------------------------------------------------------------------- xdist


def test_xdist_controller_writes_the_combined_report(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("xdist")
    summary = pytester.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    # pytest-benchmark warns (an error here) that it is disabled under xdist
    result = _run(pytester, RECORD_TESTS, "-p", "no:benchmark", "-n", "2", "--agentmem-report=r.json",
                  "--agentmem-html=r.html", "--junitxml=j.xml")
    result.assert_outcomes(passed=3, failed=1)
    doc = json.loads((pytester.path / "r.json").read_text())
    assert doc["run"]["workers"] == 2
    assert len(doc["tests"]) == 4
    assert {t["worker"] for t in doc["tests"]} <= {"gw0", "gw1"} and all(t["worker"] for t in doc["tests"])
    assert doc["summary"]["outcomes"] == {"failed": 1, "not-judged": 3}
    assert summary.read_text().count("### pytest-agentmem") == 1  # once, by the controller
    assert "1 of 4 perf tests FAILED" in (pytester.path / "r.html").read_text()
    # the gate's terminal summary on the controller sees the workers' verdicts
    result.stdout.fnmatch_lines(["*test_recall_low*recall*0.5*FAIL*"])
    junit = (pytester.path / "j.xml").read_text()
    assert 'name="agentmem.quality.recall"' in junit


def test_unwritable_report_is_said_not_an_internal_error(pytester: pytest.Pytester) -> None:
    (pytester.path / "blocked").write_text("a file, not a folder")
    result = _run(pytester, RECORD_TESTS, "--agentmem-report=blocked/r.json")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["agentmem: ERROR: JSON report not written to *blocked/r.json: *"])
    assert "INTERNALERROR" not in result.stdout.str()
