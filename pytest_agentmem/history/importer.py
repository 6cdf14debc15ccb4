"""Back-fill a history from JSON reports (``--agentmem-report``) of earlier runs.

A report holds the run's times, fingerprint, settings and every test record;
since this plugin version it also holds the run's ``git`` commit and branch. The
run's ``uid`` is a hash of the file's bytes, so importing the same report twice
stores it once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..redact import redact_value
from .rows import RunRow, figures_of_records
from .store import HistoryError, Store

REPORT_SCHEMA = "pytest-agentmem-report"


def read_report(path: Path) -> dict[str, Any]:
    """A JSON report's document (a :class:`HistoryError` says what is wrong with the file)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HistoryError(f"{path}: not a readable JSON report: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != REPORT_SCHEMA:
        raise HistoryError(f"{path}: not a pytest-agentmem JSON report (no \"schema\": \"{REPORT_SCHEMA}\"); "
                           "write one with --agentmem-report PATH")
    if data.get("schema_version") != 1:
        raise HistoryError(f"{path}: report schema version {data.get('schema_version')!r} is not one this "
                           "pytest-agentmem reads (1)")
    return data


def run_from_report(path: Path, document: dict[str, Any], *, commit: str | None = None,
                    branch: str | None = None) -> RunRow:
    """The run of a report; ``commit``/``branch`` override what the report says."""
    run = document.get("run") or {}
    git = run.get("git") or {}
    fp: dict[str, Any] = run.get("fingerprint") or next(
        (r.get("fingerprint") for r in document.get("tests", []) if r.get("fingerprint")), {}) or {}
    started = run.get("started_at") or run.get("finished_at")
    if not started:
        raise HistoryError(f"{path}: the report's run has no start time")
    return RunRow(started_at=started, finished_at=run.get("finished_at"), machine=dict(fp.get("machine") or {}),
                  stack=dict(fp.get("stack") or {}), settings=redact_value(dict(run.get("settings") or {})),
                  commit_sha=commit or git.get("commit"), branch=branch or git.get("branch"),
                  commit_time=git.get("commit_time") if not commit else None,
                  plugin_version=run.get("plugin_version"), source="import",
                  uid="import-" + hashlib.sha256(path.read_bytes()).hexdigest()[:32])


def import_report(store: Store, path: Path, *, commit: str | None = None,
                  branch: str | None = None) -> tuple[bool, int]:
    """Import one report: (stored now, figures); ``False`` when it was stored already."""
    document = read_report(path)
    figures = figures_of_records(document.get("tests") or [])
    run = run_from_report(path, document, commit=commit, branch=branch)
    return store.append(run, figures), len(figures)
