"""The history's one schema, versioned, with the migrations that build it.

Tables (prefixed ``agentmem_``, so a team's existing database can hold them):

``agentmem_schema``
    one row per applied migration (``version``, ``applied_at``).
``agentmem_runs``
    one row per pytest run: ``uid`` (unique: a JSON report imported twice is
    stored once), ``commit_sha``, ``branch``, ``commit_time``, ``started_at``,
    ``finished_at``, ``machine_id`` (a hash of the machine fingerprint's
    comparable keys), ``machine`` and ``stack`` (the fingerprint, JSON),
    ``settings`` (JSON, passwords masked), ``plugin_version``, ``source``
    (``plugin`` or ``import``).
``agentmem_figures``
    one row per measured figure: ``run_id``, ``test`` (node id),
    ``measurement``, ``metric``, ``value`` (the headline value; NULL if not
    finite), the samples' summary (``samples_n``, ``samples_median``,
    ``samples_mean``, ``samples_stdev``, ``samples_min``, ``samples_max``) and
    the samples themselves (JSON), ``workload`` (JSON, NULL when the record
    names none) and ``workload_id`` (its hash), ``verdict`` and ``reason`` (the
    gate's, NULL when not judged by any check), ``outcome`` (the test's).

Times are ISO-8601 UTC text in SQLite and ``timestamptz`` in Postgres; JSON is
text in SQLite and ``jsonb`` in Postgres. A store written by a newer plugin
(a higher version than :data:`LATEST`) is refused, never altered.
"""

from __future__ import annotations

from ..history_target import Kind

#: The schema version this plugin writes.
LATEST = 1

_RUNS = """
CREATE TABLE agentmem_runs (
    id {pk},
    uid TEXT NOT NULL UNIQUE,
    commit_sha TEXT,
    branch TEXT,
    commit_time {time},
    started_at {time} NOT NULL,
    finished_at {time},
    machine_id TEXT NOT NULL,
    machine {json} NOT NULL,
    stack {json} NOT NULL,
    settings {json} NOT NULL,
    plugin_version TEXT,
    source TEXT NOT NULL
)"""

_FIGURES = """
CREATE TABLE agentmem_figures (
    id {pk},
    run_id {fk} NOT NULL REFERENCES agentmem_runs(id) ON DELETE CASCADE,
    test TEXT NOT NULL,
    measurement TEXT NOT NULL,
    metric TEXT NOT NULL,
    value {real},
    samples_n INTEGER NOT NULL,
    samples_median {real},
    samples_mean {real},
    samples_stdev {real},
    samples_min {real},
    samples_max {real},
    samples {json},
    workload {json},
    workload_id TEXT,
    verdict TEXT,
    reason TEXT,
    outcome TEXT
)"""

_TYPES: dict[Kind, dict[str, str]] = {
    "sqlite": {"pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "fk": "INTEGER", "time": "TEXT",
               "json": "TEXT", "real": "REAL"},
    "postgres": {"pk": "BIGSERIAL PRIMARY KEY", "fk": "BIGINT", "time": "TIMESTAMPTZ",
                 "json": "JSONB", "real": "DOUBLE PRECISION"},
}

CREATE_VERSION_TABLE = ("CREATE TABLE IF NOT EXISTS agentmem_schema "
                        "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")


def migrations(kind: Kind) -> dict[int, list[str]]:
    """The statements of each schema version, in the dialect of ``kind``."""
    types = _TYPES[kind]
    return {
        1: [_RUNS.format(**types), _FIGURES.format(**types),
            "CREATE INDEX agentmem_figures_series ON agentmem_figures (test, measurement, metric)",
            "CREATE INDEX agentmem_figures_run ON agentmem_figures (run_id)",
            "CREATE INDEX agentmem_runs_started ON agentmem_runs (started_at)"],
    }
