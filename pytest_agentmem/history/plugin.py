"""The history's plugin object: append the run's figures, judge figures against their history.

:class:`HistoryPlugin` (registered as ``agentmem-history`` when
``--agentmem-history`` is given):

- ``pytest_sessionfinish`` (the xdist controller, or the only process): one
  :class:`~.rows.RunRow` (commit, branch, times, machine fingerprint, redacted
  settings) and every figure of the run's report records (:mod:`.rows`) are
  appended in one transaction. A store that cannot be reached or written is a
  warning line in the terminal summary; the run's verdict and exit code stay
  what the tests made them.
- ``pytest_agentmem_gate_checks`` (with ``--agentmem-history-baseline N``): the
  gate's extra check :func:`history_checks`, which judges each gated figure
  against its last N runs (:mod:`.judge`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from ..history_target import Target
from ..redact import redact_text, redact_value
from ..session import get_session
from ..xdist import is_worker
from .judge import HistoryVerdict, judge, recent_values
from .rows import RunRow, figures_of_records, machine_id, workload_id
from .store import HistoryError, Store, open_store


def _iso(timestamp: float) -> str:
    from ..report.json_report import iso

    return str(iso(timestamp))


def settings_dict(settings: Any) -> dict[str, Any]:
    """The run's settings as JSON values, every password masked."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, Target):
            value = value.describe()
        elif isinstance(value, Enum):
            value = value.value
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, dict):
            value = {str(k): v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
                     for k, v in value.items()}
        elif not isinstance(value, (str, int, float, bool, type(None))):
            value = str(value)
        values[f.name] = value
    return redact_value(values)  # type: ignore[no-any-return]


class HistoryPlugin:
    """The run's history store (registered as ``agentmem-history``)."""

    NAME = "agentmem-history"

    def __init__(self, config: pytest.Config, target: Target) -> None:
        self.config = config
        self.target = target.resolved(Path(config.rootpath))
        self.started = time.time()
        self.lines: list[str] = []
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.target)
        return self._store

    # ------------------------------------------------------------------ the gate's extra check

    @pytest.hookimpl
    def pytest_agentmem_gate_checks(self, item: pytest.Item) -> list[Any]:
        runs = get_session(self.config).settings.history_baseline
        if not runs:
            return []
        return [functools.partial(history_checks, self, runs)]

    # ------------------------------------------------------------------ append

    def pytest_sessionstart(self) -> None:
        self.started = time.time()

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self) -> None:
        settings = get_session(self.config).settings
        if is_worker(self.config) or settings.ab_role == "base" or not settings.perf:
            return
        self.append(settings)

    def append(self, settings: Any) -> None:
        """Append this run's figures; any failure becomes a warning line, never an error of the run."""
        from ..gate.fingerprint import fingerprint
        from ..report.plugin import report_records
        from .gitinfo import git_info

        records = report_records(self.config)
        figures = figures_of_records(records)
        if not figures:
            self.lines.append(f"agentmem: history: no figures measured, nothing appended to {self.target}")
            return
        fp = next((r["fingerprint"] for r in records if r.get("fingerprint")), None) or fingerprint(self.config)
        git = git_info(Path(self.config.rootpath))
        run = RunRow(started_at=_iso(self.started), finished_at=_iso(time.time()),
                     machine=dict(fp.get("machine", {})), stack=dict(fp.get("stack", {})),
                     settings=settings_dict(settings), commit_sha=git["commit"], branch=git["branch"],
                     commit_time=git["commit_time"], plugin_version=_plugin_version(), source="plugin")
        try:
            self.store.append(run, figures)
        except HistoryError as exc:
            self.lines.append(f"agentmem: WARNING: history not appended: {exc} (the run's verdict is "
                              "unchanged)")
        except Exception as exc:  # noqa: BLE001 - the history must never turn a run into an internal error
            self.lines.append(f"agentmem: WARNING: history not appended to {self.target}: "
                              f"{type(exc).__name__}: {redact_text(str(exc))} (the run's verdict is unchanged)")
        else:
            commit = (run.commit_sha or "no commit")[:12]
            self.lines.append(f"agentmem: history: {len(figures)} figures of {commit} "
                              f"({run.branch or 'no branch'}) appended to {self.target}")

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for line in self.lines:
            terminalreporter.write_line(line)


def _plugin_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("pytest-agentmem")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return None


def history_checks(plugin: HistoryPlugin, runs: int, ctx: Any) -> list[Any]:
    """The gate's check against the history: one CheckResult per gated figure.

    A store that cannot be read makes every figure ``not judged`` (shown, never failed).
    """
    from ..config import env_value
    from ..gate.directions import direction_of, is_primary
    from ..gate.fingerprint import machine_fingerprint

    branch = str(env_value("AGENTMEM_HISTORY_BRANCH"))
    machine = machine_id(machine_fingerprint())
    results = []
    for m in ctx.measurements:
        workload = getattr(m, "workload", None) or m.info.get("workload") or None
        for metric, value in sorted(m.metrics.items()):
            if not is_primary(metric, m.kind, ctx.gate_metrics) or direction_of(metric) == "none":
                continue
            label = f"{m.name}.{metric}"
            try:
                history = recent_values(plugin.store, test=ctx.nodeid, measurement=m.name, metric=metric,
                                        machine_id=machine,
                                        workload_id=workload_id(workload if isinstance(workload, dict) else None),
                                        branch=branch, runs=runs)
            except HistoryError as exc:
                reason = f"history store unreadable: {exc}"
                verdict = HistoryVerdict("not-judged", f"{label}: not judged against the history ({reason})",
                                         reason=reason)
            else:
                verdict = judge(float(value), history, direction=direction_of(metric), runs=runs, label=label,
                                min_change=ctx.tolerance, branch=branch)
            results.append(as_check(verdict, m.name, metric, float(value), direction_of(metric), ctx.tolerance))
    return results


def as_check(verdict: HistoryVerdict, measurement: str, metric: str, value: float, direction: str,
             tolerance: float) -> Any:
    """A :class:`~pytest_agentmem.gate.verdict.CheckResult` (``kind="history"``) of a history verdict.

    passed -> ``pass``, failed -> ``fail``, not judged -> ``not-judged`` with its
    ``reason`` where the gate's CheckResult has one; with the older CheckResult
    (verdicts pass/fail/new/warn and a ``judged`` field) not judged is ``warn``,
    ``judged=False``.
    """
    from ..gate.verdict import CheckResult

    fields = CheckResult.__dataclass_fields__
    extra: dict[str, Any] = {}
    if "reason" in fields:
        name = {"passed": "pass", "failed": "fail", "not-judged": "not-judged"}[verdict.verdict]
        extra["reason"] = verdict.reason
    else:
        name = {"passed": "pass", "failed": "fail", "not-judged": "warn"}[verdict.verdict]
    if "judged" in fields:
        extra["judged"] = verdict.verdict != "not-judged"
    return CheckResult(
        measurement=measurement, metric=metric, value=value, baseline=verdict.mean, limit=verdict.limit,
        change=verdict.change, tolerance=tolerance, p_value=None, confirmed=False, verdict=name,  # type: ignore[arg-type]
        message=verdict.message, kind="history", direction=direction,  # type: ignore[arg-type]
        raw_change=None, **extra)
