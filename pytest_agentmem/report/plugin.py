"""Report hooks: JUnit properties, JSON / markdown / HTML reports, xdist hand-over.

Data flow. The gate appends a ``TestVerdict`` to ``get_session(config).results``
when a perf test's call phase ends. When the teardown report of that test is made
this plugin (1) copies the verdict's figures into ``item.user_properties`` (so
``--junitxml`` carries them) and (2) files a JSON-ready record of the test
(:func:`records.build_record`) under ``extras["pytest_agentmem.report"]``.

Under pytest-xdist a worker sends its records and services to the controller in
``config.workeroutput`` at session end; the controller, in
``pytest_testnodedown``, stores the records with its own and appends a rebuilt
``TestVerdict`` per record to ``get_session(config).results`` so the gate's
terminal summary on the controller sees every verdict, as in a plain run. The
controller alone writes the reports, at the end of ``pytest_sessionfinish``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import pytest

from ..compare.plugin import compare_info
from ..gate.verdict import verdict_from_dict
from ..marker import perf_marker_of
from ..measurement import measurements_of
from ..redact import redact_text, redact_value
from ..session import get_session
from .json_report import (
    build_document,
    run_info,
    service_info,
    write_atomic,
    write_json_report,
)
from .markdown import append_step_summary, render_markdown
from .records import build_record

EXTRAS_KEY = "pytest_agentmem.report"
WORKEROUTPUT_KEY = "agentmem_report"


@dataclass
class ReportState:
    """What this plugin keeps for the run (``extras["pytest_agentmem.report"]``)."""

    started: float | None = None
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # nodeid -> record
    services: list[dict[str, Any]] = field(default_factory=list)  # from xdist workers
    workers: int = 0
    written: list[str] = field(default_factory=list)  # lines for the terminal summary


def report_state(config: pytest.Config) -> ReportState:
    """This run's :class:`ReportState` (created on first use)."""
    extras = get_session(config).extras
    state = extras.get(EXTRAS_KEY)
    if not isinstance(state, ReportState):
        state = extras[EXTRAS_KEY] = ReportState()
    return state


def report_records(config: pytest.Config) -> list[dict[str, Any]]:
    """Every test record of the run (in the controller: the workers' too)."""
    return list(report_state(config).records.values())


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _worker_id(config: pytest.Config) -> str:
    workerinput = getattr(config, "workerinput", None)
    return str(workerinput.get("workerid", "")) if workerinput else ""


# --------------------------------------------------------------------------- per test

_PHASES = pytest.StashKey[dict[str, Any]]()


def verdict_of(config: pytest.Config, nodeid: str) -> Any:
    """The latest verdict the gate filed for ``nodeid`` (``None`` if none)."""
    for verdict in reversed(get_session(config).results):
        if getattr(verdict, "nodeid", None) == nodeid:
            return verdict
    return None


def junit_properties(verdict: Any) -> list[tuple[str, object]]:
    """``agentmem.<measurement>.<metric>[.baseline|.change|.p_value|.verdict|.<bound>_limit]``."""
    props: list[tuple[str, object]] = [("agentmem.outcome", verdict.outcome)]
    seen: set[str] = set()
    for check in verdict.checks:
        key = f"agentmem.{check.measurement}.{check.metric}" if check.measurement else f"agentmem.{check.metric}"
        if key not in seen:
            seen.add(key)
            props.append((key, _num(check.value)))
        if check.kind == "threshold":
            props.append((f"{key}.{check.bound or 'limit'}_limit", _num(check.limit)))
            props.append((f"{key}.{check.bound or 'limit'}_verdict", check.verdict))
            continue
        if check.baseline is not None:
            props.append((f"{key}.baseline", _num(check.baseline)))
        change = check.raw_change if check.raw_change is not None else check.change
        if change is not None:
            props.append((f"{key}.change", round(change, 4)))
        if check.p_value is not None:
            props.append((f"{key}.p_value", _num(check.p_value)))
        props.append((f"{key}.verdict", check.verdict))
    return props


def _num(value: Any) -> object:
    return round(value, 6) if isinstance(value, float) else value


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    verdict = None
    is_perf = perf_marker_of(item) is not None
    if call.when == "teardown":
        verdict = verdict_of(item.config, item.nodeid)
        if verdict is not None:
            item.user_properties.extend(junit_properties(verdict))
    report = yield
    redact_report(report)
    phases = item.stash.setdefault(_PHASES, {})
    phases[call.when] = report
    if call.when == "teardown" and (is_perf or verdict is not None):
        _file_record(item, verdict, phases)
    return report


def _file_record(item: pytest.Item, verdict: Any, phases: dict[str, Any]) -> None:
    setup, body, teardown = phases.get("setup"), phases.get("call"), phases.get("teardown")
    if setup is not None and setup.skipped or body is not None and body.skipped:
        outcome = "skipped"
    elif setup is not None and setup.failed or teardown is not None and teardown.failed:
        outcome = "error"
    elif body is not None and body.failed:
        outcome = "failed"
    else:
        outcome = "passed"
    failing = next((r for r in (setup, body, teardown) if r is not None and (r.failed or r.skipped)), None)
    message = _first_line(failing) if failing is not None else ""
    duration = sum(r.duration for r in (setup, body, teardown) if r is not None)
    record = build_record(item.nodeid, verdict, measurements_of(item),
                          pytest_outcome=outcome, duration_s=round(duration, 4), message=message,
                          worker=_worker_id(item.config))
    # Messages and error samples may quote a DSN: no password reaches JSON, HTML or markdown.
    report_state(item.config).records[item.nodeid] = redact_value(record)


class RedactedRepr:
    """A failure's report with every secret masked (see :func:`redact_report`).

    Prints the redacted text, ``E`` lines in red as pytest does; ``reprcrash``
    (the short summary's message) is the original's with its message redacted.
    """

    def __init__(self, text: str, reprcrash: Any = None) -> None:
        self.text = text
        self.reprcrash = reprcrash

    def toterminal(self, tw: Any) -> None:
        for line in self.text.splitlines():
            if line.startswith("E "):
                tw.line(line, red=True, bold=True)
            else:
                tw.line(line)

    def __str__(self) -> str:
        return self.text


def redact_report(report: Any) -> None:
    """Mask passwords in a test report: its traceback (fixture values and locals
    included), its skip or crash message and its captured output.

    A traceback that holds no secret keeps pytest's own representation.
    """
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        report.longrepr = (longrepr[0], longrepr[1], redact_text(str(longrepr[2])))
    elif longrepr is not None:
        text = str(longrepr)
        clean = redact_text(text)
        if clean != text:
            crash = getattr(longrepr, "reprcrash", None)
            if crash is not None and isinstance(getattr(crash, "message", None), str):
                try:
                    crash = dataclasses.replace(crash, message=redact_text(crash.message))
                except TypeError:
                    crash = None
            report.longrepr = RedactedRepr(clean, crash)
    if report.sections:
        report.sections = [(title, redact_text(content)) for title, content in report.sections]


def _first_line(report: Any) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    text = getattr(report, "longreprtext", "") or ""
    lines = [line for line in text.splitlines() if line.startswith("E ")]
    return (lines[0][1:].strip() if lines else text.strip().splitlines()[-1] if text.strip() else "")[:500]


# --------------------------------------------------------------------------- session


def pytest_sessionstart(session: pytest.Session) -> None:
    report_state(session.config).started = time.time()


def _services_here(config: pytest.Config) -> list[dict[str, Any]]:
    running = get_session(config).services.running
    return [service_info(svc, _worker_id(config)) for svc in running.values()]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    state = report_state(config)
    if _is_worker(config):
        payload = {"records": list(state.records.values()), "services": _services_here(config)}
        config.workeroutput[WORKEROUTPUT_KEY] = json.dumps(payload, allow_nan=False)  # type: ignore[attr-defined]
        return
    write_reports(config)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: take over a finished worker's records and verdicts."""
    raw = getattr(node, "workeroutput", {}).get(WORKEROUTPUT_KEY)
    if not raw:
        return
    config = node.config
    state = report_state(config)
    payload = json.loads(raw)
    state.workers += 1
    state.services.extend(payload.get("services", []))
    results = get_session(config).results
    for record in payload.get("records", []):
        state.records[record["nodeid"]] = record
        if record.get("has_verdict"):
            results.append(verdict_from_dict(record))


def write_reports(config: pytest.Config) -> None:
    """Write the JSON and HTML reports and the step summary this run asks for.

    A report that cannot be written is said in the terminal summary; it does not
    hide the run's results behind an internal error.
    """
    settings = get_session(config).settings
    state = report_state(config)
    records = list(state.records.values())
    if settings.report_path is not None or settings.html_path is not None:
        services = _services_here(config) + state.services
        run = run_info(started=state.started, finished=time.time(), settings=settings,
                       services=services, workers=state.workers, records=records)
        run["compare"] = compare_info(config)
        document = build_document(records, run)
        json_path, html_path = settings.report_path, settings.html_path
        if json_path is not None:
            _attempt(state, "JSON report", "written to", json_path,
                     lambda: write_json_report(json_path, document))
        if html_path is not None:
            from .html import render_html

            _attempt(state, "HTML report", "written to", html_path,
                     lambda: write_atomic(html_path, render_html(document)))
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target and any(r.get("outcome") != "skipped" for r in records):
        _attempt(state, "markdown summary", "appended to", target,
                 lambda: append_step_summary(render_markdown(records, title=_title(config)), target))


def _title(config: pytest.Config) -> str:
    info = compare_info(config)
    if info is None:
        return "pytest-agentmem"
    return f"pytest-agentmem A/B: this checkout vs {info['ref']} ({info['commit'][:12]})"


def _attempt(state: ReportState, what: str, verb: str, path: Any, write: Callable[[], Any]) -> None:
    try:
        write()
    except OSError as exc:
        state.written.append(f"agentmem: ERROR: {what} not {verb} {path}: {exc}")
    else:
        state.written.append(f"agentmem: {what} {verb} {path}")


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    for line in report_state(config).written:
        terminalreporter.write_line(line)
