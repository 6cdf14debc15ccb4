"""Stored baselines: one versioned, key-sorted JSON file per test, written atomically.

A baseline is an immutable value (:class:`Baseline`); :func:`load_baseline`
validates a file and raises :class:`~pytest_agentmem.errors.BaselineError` naming
the file and the fix when it is malformed or of a newer schema version (the file
is never touched); :func:`write_baseline` writes a temporary file in the same
folder and ``os.replace``-s it, so a reader (or another xdist worker) sees the
old file or the new one, never half of one.

Each measurement may carry ``calibration`` (the median of the interleaved
calibration probe run between its rounds, see :mod:`.calibration`; kept for the
reports and the cross-machine check) and ``workload`` (what was measured: the
run's spec, scenario scale, data set, embedding model; a baseline of another
workload is not compared). Both keys are optional and additive, so the schema
version stays 1: a file without them loads and an older reader ignores them.

Baselines per machine (asv keeps results per machine the same way): the files
directly in the folder are the primary set; a machine whose figures differ from
it (another runner type) keeps its own set in ``machines/<machine key>/``, which
``--update-baselines`` writes there and the gate reads first on that machine
(:func:`locate`, :func:`write_target`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._files import write_text_atomic
from ..errors import BaselineError
from ..measurement import Measurement
from .calibration import summarise_probes
from .recordings import MAX_RECORDINGS, MAX_ROUNDS, RUN_KEY, centres
from .stats import centre

SCHEMA = "pytest-agentmem-baseline"
VERSION = 1

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def baseline_path(directory: Path, nodeid: str) -> Path:
    """``<dir>/<safe node id>-<10 hex of sha256(node id)>.json``."""
    safe = _UNSAFE.sub("_", nodeid.replace("::", "__")).strip("._")[:100] or "test"
    digest = hashlib.sha256(nodeid.encode()).hexdigest()[:10]
    return Path(directory) / f"{safe}-{digest}.json"


@dataclass(frozen=True)
class StoredMeasurement:
    """One measurement as stored: headline metrics and the per-round samples."""

    kind: str
    metrics: dict[str, float]
    rounds: tuple[dict[str, float], ...] = ()
    calibration: dict[str, Any] | None = None  # median interleaved probe of the rounds
    workload: dict[str, Any] = field(default_factory=dict)  # what was measured (empty: not recorded)
    #: one entry per run recorded (its figures' medians), oldest first; empty in files of
    #: older versions (one recording, its rounds): see :mod:`.recordings`
    recordings: tuple[dict[str, float], ...] = ()

    def samples(self, metric: str) -> list[float]:
        values = [r[metric] for r in self.rounds if metric in r]
        if values:
            return values
        return [self.metrics[metric]] if metric in self.metrics else []


@dataclass(frozen=True)
class Baseline:
    """The stored reference figures of one test."""

    nodeid: str
    measurements: dict[str, StoredMeasurement]
    fingerprint: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    created: str = ""
    version: int = VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "version": self.version, "nodeid": self.nodeid,
            "created": self.created, "fingerprint": self.fingerprint,
            "calibration": self.calibration,
            "measurements": {name: _entry(m) for name, m in self.measurements.items()},
        }


def _entry(m: StoredMeasurement) -> dict[str, Any]:
    entry: dict[str, Any] = {"kind": m.kind, "metrics": dict(m.metrics),
                             "rounds": [dict(r) for r in m.rounds]}
    if m.calibration:
        entry["calibration"] = dict(m.calibration)
    if m.workload:
        entry["workload"] = dict(m.workload)
    if m.recordings:
        entry["recordings"] = [dict(r) for r in m.recordings]
    return entry


def _finite(values: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in values.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            number = float(v)  # OverflowError for an integer beyond a float: malformed
            if math.isfinite(number):
                out[k] = number
    return out


def baseline_from(nodeid: str, measurements: list[Measurement], fingerprint: dict[str, Any],
                  calibration: dict[str, Any] | None, run: float | None = None) -> Baseline:
    """The baseline this run's ``measurements`` make (non-finite values dropped); ``run`` names
    the pytest run in its recording (:data:`~.recordings.RUN_KEY`)."""
    stored = {}
    for m in measurements:
        rounds = tuple(_finite(r) for r in m.rounds)
        recording = centres(rounds, _finite(m.metrics))
        if run is not None:
            recording[RUN_KEY] = float(run)
        stored[m.name] = StoredMeasurement(m.kind, _finite(m.metrics), rounds,
                                           summarise_probes(getattr(m.load, "calibration", None) or []),
                                           dict(getattr(m, "workload", None) or {}), (recording,))
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    return Baseline(nodeid, stored, fingerprint, calibration, created)


def _fix_hint(path: Path) -> str:
    return (f"fix: restore it from version control, or delete {path} and run "
            "with --update-baselines to record a new one")


def load_baseline(path: Path) -> Baseline | None:
    """The baseline stored at ``path``; ``None`` if there is none.

    Raises :class:`BaselineError` (the file left untouched) when it cannot be read,
    is not valid JSON of our schema, or was written by a newer schema version.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(f"baseline file {path} cannot be read: {exc}; {_fix_hint(path)}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BaselineError(f"baseline file {path} is not valid JSON ({exc}); {_fix_hint(path)}") from exc
    except (RecursionError, ValueError) as exc:  # nesting too deep; an integer of too many digits
        raise BaselineError(f"baseline file {path} is malformed: {type(exc).__name__}: {exc}; "
                            f"{_fix_hint(path)}") from exc
    try:
        return _parse(path, data)
    except (OverflowError, RecursionError, TypeError, ValueError) as exc:  # e.g. float() of a huge int
        raise BaselineError(f"baseline file {path} is malformed: {type(exc).__name__}: {exc}; "
                            f"{_fix_hint(path)}") from exc


def _parse(path: Path, data: Any) -> Baseline:
    def bad(why: str) -> BaselineError:
        return BaselineError(f"baseline file {path} is malformed: {why}; {_fix_hint(path)}")

    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise bad(f'expected a JSON object with "schema": "{SCHEMA}"')
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise bad(f"version must be a positive integer, got {version!r}")
    if version > VERSION:
        raise BaselineError(
            f"baseline file {path} has schema version {version}, newer than this pytest-agentmem "
            f"reads (up to {VERSION}); fix: upgrade pytest-agentmem, or delete the file and run "
            "with --update-baselines to record it again with this version")
    raw = data.get("measurements")
    if not isinstance(raw, dict):
        raise bad('"measurements" must be an object of measurement name -> figures')
    measurements: dict[str, StoredMeasurement] = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("metrics"), dict):
            raise bad(f'measurement {name!r} must be an object with a "metrics" object')
        metrics = entry["metrics"]
        rounds = entry.get("rounds", [])
        if not isinstance(rounds, list) or not all(isinstance(r, dict) for r in rounds):
            raise bad(f'measurement {name!r}: "rounds" must be a list of objects')
        for where in [metrics, *rounds]:
            for key, value in where.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise bad(f"measurement {name!r}: metric {key!r} must be a number, got {value!r}")
        probe = entry.get("calibration")
        if probe is not None and not (isinstance(probe, dict) and all(
                isinstance(v, str) or (isinstance(v, (int, float)) and not isinstance(v, bool))
                for v in probe.values())):
            raise bad(f'measurement {name!r}: "calibration" must be an object of numbers')
        workload = entry.get("workload") or {}
        if not isinstance(workload, dict) or not all(
                isinstance(v, (str, int, float, bool, type(None))) for v in workload.values()):
            raise bad(f'measurement {name!r}: "workload" must be an object of plain values')
        recordings = entry.get("recordings") or []
        if not isinstance(recordings, list) or not all(
                isinstance(r, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                            for v in r.values()) for r in recordings):
            raise bad(f'measurement {name!r}: "recordings" must be a list of objects of numbers')
        measurements[name] = StoredMeasurement(str(entry.get("kind", "load")), _finite(metrics),
                                               tuple(_finite(r) for r in rounds), probe or None,
                                               dict(workload), tuple(_finite(r) for r in recordings))
    fingerprint = data.get("fingerprint") or {}
    calibration = data.get("calibration")
    if not isinstance(fingerprint, dict) or not (calibration is None or isinstance(calibration, dict)):
        raise bad('"fingerprint" and "calibration" must be objects')
    return Baseline(str(data.get("nodeid", "")), measurements, fingerprint, calibration,
                    str(data.get("created", "")), version)


def with_recording(old: Baseline | None, new: Baseline) -> tuple[Baseline, dict[str, int]]:
    """``new`` added to ``old`` as one more recording of the same code, and how many
    recordings each measurement now has.

    A measurement ``old`` lacks, or whose workload differs, starts again from ``new``'s
    recording. The rounds are pooled (the newest :data:`MAX_ROUNDS` kept), the
    headline figures are the medians over the recordings, and the newest
    :data:`MAX_RECORDINGS` recordings are kept.
    """
    merged: dict[str, StoredMeasurement] = {}
    counts: dict[str, int] = {}
    for name, m in new.measurements.items():
        before = old.measurements.get(name) if old is not None else None
        if before is None or before.workload != m.workload or before.kind != m.kind:
            merged[name], counts[name] = m, 1
            continue
        earlier = before.recordings or (centres(before.rounds, before.metrics),)
        recordings = (*earlier, *m.recordings)[-MAX_RECORDINGS:]
        headline = {k: centre([r[k] for r in recordings if k in r]) for k in m.metrics}
        merged[name] = StoredMeasurement(m.kind, {k: v for k, v in headline.items() if math.isfinite(v)},
                                         (*before.rounds, *m.rounds)[-MAX_ROUNDS:], m.calibration,
                                         dict(m.workload), recordings)
        counts[name] = len(recordings)
    return Baseline(new.nodeid, merged, new.fingerprint, new.calibration, new.created), counts


def check_writable(path: Path) -> None:
    """Refuse to replace a file that exists but is not a valid baseline of ours.

    Raises :class:`BaselineError`: --update-baselines never overwrites a malformed or
    newer-version file silently; the user deletes or fixes it first.
    """
    try:
        load_baseline(path)
    except BaselineError as exc:
        raise BaselineError(f"{exc} (--update-baselines does not overwrite it)") from exc


def write_baseline(path: Path, baseline: Baseline) -> None:
    """Write ``baseline`` to ``path`` atomically (temp file in the same folder + os.replace)."""
    path = Path(path)
    text = json.dumps(baseline.to_json(), sort_keys=True, indent=2, allow_nan=False) + "\n"
    try:
        write_text_atomic(path, text)
    except OSError as exc:
        raise BaselineError(f"cannot write baseline file {path}: {exc}") from exc


# --------------------------------------------------------------------------- sets per machine

#: The folder of the per-machine sets, inside the baselines folder.
MACHINES_DIR = "machines"
#: The machine facts a machine key is made of (see gate.fingerprint.MACHINE_KEYS).
_KEY_FACTS = ("arch", "cpu_model", "cpu_count", "memory_gb", "os")


def machine_key(machine: Mapping[str, Any]) -> str:
    """A readable folder name for a machine: ``x86_64-amd-epyc-2cpu-1a2b3c4d``.

    The hash covers the machine facts and CPU flags that make two machines differ for
    the gate (:func:`pytest_agentmem.gate.fingerprint.machine_differences`).
    """
    facts = {k: machine.get(k) for k in _KEY_FACTS}
    flags = machine.get("cpu_flags") or {}
    facts["cpu_flags"] = sorted(k for k, v in dict(flags).items() if v) if isinstance(flags, Mapping) else []
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:8]
    model = _UNSAFE.sub("-", str(machine.get("cpu_model") or "cpu").lower()).strip("-.")[:32] or "cpu"
    return f"{machine.get('arch') or 'arch'}-{model}-{machine.get('cpu_count') or 0}cpu-{digest}"


@dataclass(frozen=True)
class Located:
    """The baseline the gate compares a test with, and whose machine recorded it."""

    path: Path  # the file read (or the file the primary set would hold)
    baseline: Baseline | None
    same_machine: bool  # recorded on this machine (its own set, or the primary set's machine)


def locate(directory: Path, nodeid: str, machine: Mapping[str, Any], differs: Any) -> Located:
    """This machine's baseline of ``nodeid``: its own set first, then the primary set.

    ``differs(fingerprint) -> list[str]`` says how a baseline's machine differs from
    this one (empty: the same). Raises :class:`BaselineError` for a malformed file.
    """
    own = baseline_path(Path(directory) / MACHINES_DIR / machine_key(machine), nodeid)
    found = load_baseline(own)
    if found is not None:
        return Located(own, found, True)
    primary = baseline_path(directory, nodeid)
    found = load_baseline(primary)
    return Located(primary, found, found is None or not differs(found.fingerprint))


def write_target(directory: Path, nodeid: str, machine: Mapping[str, Any], located: Located) -> Path:
    """Where ``--update-baselines`` writes this machine's baseline of ``nodeid``.

    The primary set when it holds nothing for the test or was recorded on this
    machine; else this machine's own set, so another machine's baseline is kept.
    """
    if located.same_machine:
        return located.path
    return baseline_path(Path(directory) / MACHINES_DIR / machine_key(machine), nodeid)
