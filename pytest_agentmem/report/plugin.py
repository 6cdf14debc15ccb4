"""The reports' plugin object: JUnit properties, JSON / markdown / HTML reports.

Data flow. The gate files a ``TestVerdict`` on each perf test when its call
phase ends (:func:`~pytest_agentmem.gate.plugin.verdict_of`). When the teardown
report of that test is made :class:`ReportPlugin` (1) copies the verdict's
figures into ``item.user_properties`` (so ``--junitxml`` carries them) and (2)
files a JSON-ready record of the test (:func:`records.build_record`) in its
:attr:`ReportPlugin.records`.

Under pytest-xdist a worker sends its records and services to the controller
through the :class:`~pytest_agentmem.xdist.WorkerChannel`; the controller keeps
them with its own. The controller alone writes the reports, at the end of
``pytest_sessionfinish``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Generator
from typing import Any

import pytest

from ..compare.plugin import compare_info
from ..gate.plugin import GatePlugin, verdict_of
from ..history.gitinfo import git_info
from ..marker import perf_marker_of
from ..measurement import measurements_of
from ..redact import redact_text, redact_value
from ..services.plugin import service_manager
from ..session import get_session, plugin_of
from ..xdist import WorkerChannel, is_worker, worker_id
from .evidence import failing_lines
from .json_report import (
    build_document,
    run_info,
    service_info,
    write_atomic,
    write_json_report,
)
from .markdown import append_step_summary, render_markdown
from .records import build_record, jsonable

#: The worker channel's key of the records and services.
CHANNEL_KEY = "report"

_PHASES = pytest.StashKey[dict[str, Any]]()


class ReportPlugin:
    """The run's reports (registered as ``agentmem-report``)."""

    NAME = "agentmem-report"

    def __init__(self, config: pytest.Config, channel: WorkerChannel) -> None:
        self.config = config
        self.started: float | None = None
        self.records: dict[str, dict[str, Any]] = {}  # nodeid -> record (controller: the workers' too)
        self.worker_services: list[dict[str, Any]] = []  # from xdist workers
        self.workers = 0
        self.written: list[str] = []  # lines for the terminal summary
        channel.add(CHANNEL_KEY, self._send, self._receive)

    # ------------------------------------------------------------------ per test

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
        verdict = None
        is_perf = perf_marker_of(item) is not None
        if call.when == "teardown":
            verdict = verdict_of(item)
            if verdict is not None:
                item.user_properties.extend(junit_properties(verdict))
        report = yield
        redact_report(report)
        phases = item.stash.setdefault(_PHASES, {})
        phases[call.when] = report
        if call.when == "teardown" and (is_perf or verdict is not None):
            self._file_record(item, verdict, phases)
        return report

    def _file_record(self, item: pytest.Item, verdict: Any, phases: dict[str, Any]) -> None:
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
        record = build_record(
            item.nodeid, verdict, measurements_of(item), pytest_outcome=outcome,
            duration_s=round(duration, 4), message=message, worker=worker_id(item.config))
        # Messages and error samples may quote a DSN: no password reaches JSON, HTML or markdown.
        self.records[item.nodeid] = redact_value(record)

    def pytest_agentmem_verdict_changed(self, verdict: Any) -> None:
        """The end of the run judged more of a test's figures: refresh its record."""
        record = self.records.get(verdict.nodeid)
        if record is None:
            return
        fresh = verdict.to_dict()
        patch = {k: fresh[k] for k in ("checks", "correctness", "speed", "notes")}
        if record.get("outcome") != "error":
            patch["outcome"] = fresh["outcome"]
        record.update(redact_value(jsonable(patch)))
        if fresh["outcome"] == "failed":
            record["pytest_outcome"] = record.get("pytest_outcome", "passed")
            record["message"] = "; ".join(c["message"] for c in fresh["checks"] if c["verdict"] == "fail")

    # ------------------------------------------------------------------ session

    def pytest_sessionstart(self) -> None:
        self.started = time.time()

    def _services_here(self) -> list[dict[str, Any]]:
        running = service_manager(self.config).running
        return [service_info(svc, worker_id(self.config)) for svc in running.values()]

    def _send(self) -> dict[str, Any]:
        return {"records": list(self.records.values()), "services": self._services_here()}

    def _receive(self, workerid: str, part: Any) -> None:
        """xdist controller: take over a finished worker's records and services."""
        self.workers += 1
        self.worker_services.extend(part.get("services", []))
        for record in part.get("records", []):
            self.records[record["nodeid"]] = record

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self) -> None:
        if not is_worker(self.config):
            self.write_reports()

    def write_reports(self) -> None:
        """Write the JSON and HTML reports and the step summary this run asks for.

        A report that cannot be written is said in the terminal summary; it does not
        hide the run's results behind an internal error.
        """
        config = self.config
        settings = get_session(config).settings
        records = list(self.records.values())
        if settings.report_path is not None or settings.html_path is not None:
            services = self._services_here() + self.worker_services
            run = run_info(started=self.started, finished=time.time(), settings=settings,
                           services=services, workers=self.workers, records=records)
            run["compare"] = compare_info(config)
            # the end of the run's fresh processes (a failure must reproduce), when there were some
            run["reproduce"] = plugin_of(config, GatePlugin).reproduction
            run["git"] = git_info(config.rootpath)  # commit and branch: history import reads them
            document = build_document(records, run)
            json_path, html_path = settings.report_path, settings.html_path
            if json_path is not None:
                self._attempt("JSON report", "written to", json_path,
                              lambda: write_json_report(json_path, document))
            if html_path is not None:
                from .html import render_html

                self._attempt("HTML report", "written to", html_path,
                              lambda: write_atomic(html_path, render_html(document)))
        target = os.environ.get("GITHUB_STEP_SUMMARY")
        if target and any(r.get("outcome") != "skipped" for r in records):
            self._attempt("markdown summary", "appended to", target,
                          lambda: append_step_summary(render_markdown(records, title=_title(config)), target))

    def _attempt(self, what: str, verb: str, path: Any, write: Callable[[], Any]) -> None:
        try:
            write()
        except OSError as exc:
            self.written.append(f"agentmem: ERROR: {what} not {verb} {path}: {exc}")
        else:
            self.written.append(f"agentmem: {what} {verb} {path}")

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        evidence = failing_lines(list(self.records.values()))  # issue 23: where the time went
        if evidence:
            terminalreporter.write_sep("-", "agentmem: where the time went")
            for line in evidence:
                terminalreporter.write_line(line)
        for line in self.written:
            terminalreporter.write_line(line)


def report_records(config: pytest.Config) -> list[dict[str, Any]]:
    """Every test record of the run (in the controller: the workers' too)."""
    return list(plugin_of(config, ReportPlugin).records.values())


def junit_properties(verdict: Any) -> list[tuple[str, object]]:
    """``agentmem.<measurement>.<metric>[.baseline|.change|.p_value|.verdict|.<bound>_limit]``."""
    props: list[tuple[str, object]] = [("agentmem.outcome", verdict.outcome),
                                       ("agentmem.correctness", verdict.correctness),
                                       ("agentmem.speed", verdict.speed)]
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
        if check.reason:
            props.append((f"{key}.reason", check.reason))
    return props


def _num(value: Any) -> object:
    return round(value, 6) if isinstance(value, float) else value


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


def _title(config: pytest.Config) -> str:
    info = compare_info(config)
    if info is None:
        return "pytest-agentmem"
    return f"pytest-agentmem A/B: this checkout vs {info['ref']} ({info['commit'][:12]})"
