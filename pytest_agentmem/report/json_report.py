"""The machine-readable JSON report (``--agentmem-report PATH``).

Schema (``schema_version`` 1)::

    {"schema": "pytest-agentmem-report", "schema_version": 1,
     "run": {started_at, finished_at, duration_s, python, pytest, plugin_version,
             platform, workers, settings{...}, fingerprint{...}, services[...]},
     "summary": {headline, tests, outcomes{passed, failed, ...}, checks{pass, fail, ...}},
     "tests": [record, ...]}   # records.build_record, bad news first

Service URLs appear only with passwords masked (``RunningService.safe_url``).
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._files import write_text_atomic
from .records import counts, headline, jsonable, sort_records

SCHEMA = "pytest-agentmem-report"
SCHEMA_VERSION = 1


def service_info(service: Any, worker: str = "") -> dict[str, Any]:
    """What the report says about one RunningService (URL redacted)."""
    info = {
        "name": service.name, "url": service.safe_url, "mode": service.mode,
        "version": service.version, "components": dict(service.components),
        "startup_s": round(float(service.startup_s), 3),
    }
    if worker:
        info["worker"] = worker
    return info


def iso(timestamp: float | None) -> str | None:
    """An ISO-8601 UTC time, or ``None``."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat(timespec="seconds")


def run_info(*, started: float | None, finished: float, settings: Any,
             services: Sequence[dict[str, Any]], workers: int,
             records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``run`` section: when, on what, with which settings and services."""
    import pytest

    try:
        from importlib.metadata import version

        plugin_version = version("pytest-agentmem")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        plugin_version = None
    fingerprint: dict[str, Any] = next((r["fingerprint"] for r in records if r.get("fingerprint")), {})
    return {
        "started_at": iso(started), "finished_at": iso(finished),
        "duration_s": round(finished - started, 3) if started else None,
        "python": sys.version.split()[0], "pytest": pytest.__version__,
        "plugin_version": plugin_version,
        "platform": platform.platform(terse=True), "workers": workers,
        "settings": {
            "perf": settings.perf, "update_baselines": settings.update_baselines,
            "tolerance": settings.tolerance, "baselines_dir": str(settings.baselines_dir),
            "services": settings.services,
        },
        "fingerprint": fingerprint,
        "services": list(services),
    }


def build_document(records: Sequence[dict[str, Any]], run: dict[str, Any]) -> dict[str, Any]:
    """The whole report as a JSON-ready dict."""
    ordered = sort_records(records)
    check_counts: dict[str, int] = {}
    for record in ordered:
        for check in record.get("checks", []):
            key = str(check.get("verdict"))
            check_counts[key] = check_counts.get(key, 0) + 1
    return jsonable({
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "run": run,
        "summary": {"headline": headline(ordered), "tests": len(ordered),
                    "outcomes": counts(ordered), "checks": check_counts},
        "tests": ordered,
    })


write_atomic = write_text_atomic


def write_json_report(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` as indented, key-sorted JSON, atomically."""
    write_atomic(path, json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n")
