"""One presentation vocabulary: the terminal summary and the reports say things alike."""

from __future__ import annotations

import typing

import pytest

from pytest_agentmem import presentation
from pytest_agentmem.gate import summary, verdict
from pytest_agentmem.gate.checks import fmt, pct
from pytest_agentmem.gate.verdict import CheckResult, TestVerdict
from pytest_agentmem.load import histogram
from pytest_agentmem.presentation import (
    Outcome,
    Verdict,
    count_outcomes,
    format_number,
    format_percent,
    paired_change,
    short_test,
)
from pytest_agentmem.report import markdown, records, svg


def _verdict(nodeid: str, outcome: str) -> TestVerdict:
    check = CheckResult(measurement="search", metric="qps", value=100.0, baseline=100.0, limit=None,
                        change=0.0, tolerance=0.15, p_value=None, confirmed=False, verdict="pass",
                        message="", kind="baseline", raw_change=0.0)
    return TestVerdict(nodeid=nodeid, outcome=outcome, checks=[check])  # type: ignore[arg-type]


def test_the_gate_and_the_reports_share_one_vocabulary() -> None:
    assert fmt is format_number and pct is format_percent
    assert svg.fmt_number is presentation.compact_number
    assert markdown.short_test is short_test
    assert histogram.PERCENTILES is presentation.PERCENTILES
    assert records.PERCENTILE_METRICS == tuple((p, k) for k, p in histogram.PERCENTILES.items())
    assert records.OUTCOME_RANK is presentation.OUTCOME_RANK


def test_outcome_and_verdict_enums_cover_the_gates_values() -> None:
    assert set(typing.get_args(verdict.Outcome)) <= {o.value for o in Outcome}
    assert set(typing.get_args(verdict.Verdict)) == {v.value for v in Verdict}
    assert Outcome.NOT_JUDGED == "not-judged" and f"{Outcome.NOT_JUDGED}" == "not-judged"


def test_terminal_summary_lists_outcomes_in_the_reports_order() -> None:
    names = ["passed", "updated", "not-judged", "failed", "error"]
    verdicts = [_verdict(f"tests/perf/test_{n.replace('-', '_')}.py::test_x", n) for n in names]
    lines = summary.render(verdicts)
    listed = [line.split(".py::")[0].split("test_")[-1].replace("_", "-") for line in lines
              if line.startswith("test_")]
    recorded = [r["outcome"] for r in records.sort_records([{"outcome": n} for n in names])]
    assert listed == recorded == ["failed", "error", "not-judged", "updated", "passed"]
    assert "gate: 1 failed, 1 error, 1 not-judged, 1 updated, 1 passed" in lines
    assert records.counts([{"outcome": n} for n in names]) == count_outcomes(names)


def test_terminal_summary_shortens_test_ids_like_the_reports() -> None:
    nodeid = "tests/perf/deep/test_search.py::test_filtered[user-1]"
    lines = summary.render([_verdict(nodeid, "passed")])
    assert any(line.startswith("test_search.py::test_filtered[user-1] ") for line in lines)
    assert short_test(nodeid) == markdown.short_test(nodeid) == "test_search.py::test_filtered[user-1]"
    long = "tests/test_x.py::test_" + "y" * 80
    assert short_test(long, 60) == "..." + long[-57:] and len(short_test(long, 60)) == 60


@pytest.mark.parametrize(("value", "plain", "compact"), [
    (None, "-", "–"), (0.0, "0", "0"), (0.00312, "0.00312", "0.00312"), (3.0, "3", "3"),
    (18.23, "18.2", "18.2"), (999.6, "1000", "1000"), (1234.5, "1234", "1234"),
    (12345.0, "12345", "12.3k"), (2.5e6, "2500000", "2.5M"), (float("inf"), "inf", "–"),
])
def test_one_number_formatter(value: float | None, plain: str, compact: str) -> None:
    assert format_number(value) == plain
    assert format_number(value, compact=True) == compact


def test_percentages_and_paired_changes() -> None:
    assert [format_percent(x) for x in (0.5, -0.081, 0.004, None)] == ["+50%", "-8%", "+0.4%", "-"]
    assert format_percent(0.15, signed=False) == "15%" and format_percent(0.5, digits=1) == "+50.0%"
    check = CheckResult(measurement="s", metric="qps", value=96.0, baseline=100.0, limit=None,
                        change=0.04, tolerance=0.03, p_value=0.001, confirmed=False, verdict="fail",
                        message="", kind="paired", direction="higher", raw_change=-0.04,
                        interval=(0.02, 0.06), pairs=20, p_adjusted=0.002)
    assert paired_change(check.to_dict()) == "-4% [-6%, -2%]"
    assert summary.paired_change(check) == "-4% [-6%, -2%] p=0.002"
    assert markdown.paired_text(check.to_dict()) == "-4.0% [-6.0%, -2.0%] worse, p=0.002 over 20 pairs"
