"""The history (issue 20): store, appends from real runs, concurrency, change points, CLI, judge."""

from __future__ import annotations

import json
import math
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pytest_agentmem
from pytest_agentmem.config import Settings
from pytest_agentmem.history.__main__ import main as history_main
from pytest_agentmem.history.changepoints import detect
from pytest_agentmem.history.judge import judge
from pytest_agentmem.history.plugin import settings_dict
from pytest_agentmem.history.rows import FigureRow, RunRow
from pytest_agentmem.history.stats import mannwhitney, t_ppf, t_sf, ttest_ind
from pytest_agentmem.history.store import HistoryError, open_store
from pytest_agentmem.history_target import parse_target

ROOT = Path(pytest_agentmem.__file__).resolve().parents[1]

# ----------------------------------------------------------------------- targets


def test_target_forms() -> None:
    assert parse_target("hist.db").kind == "sqlite"
    assert parse_target("sqlite:///rel/h.db").path == Path("rel/h.db")
    assert parse_target("sqlite:////abs/h.db").path == Path("/abs/h.db")
    pg = parse_target("postgresql://bench:s3cr3t-pw@db.example/hist")
    assert pg.kind == "postgres" and "s3cr3t-pw" not in pg.describe()
    assert parse_target("postgres://h/db").kind == "postgres"


@pytest.mark.parametrize("bad", ["mysql://h/db", "sqlite://", "sqlite:///", "  "])
def test_target_rejects_unknown_forms(bad: str) -> None:
    with pytest.raises(pytest.UsageError, match="agentmem-history"):
        parse_target(bad)


def test_settings_are_stored_without_passwords() -> None:
    settings = Settings(postgres_url="postgresql://u:hunter2-secret@h/db",
                        history=parse_target("postgresql://u:other-secret@h/hist"))
    text = json.dumps(settings_dict(settings))
    assert "hunter2-secret" not in text and "other-secret" not in text
    assert "postgresql://u:***@h/db" in text


# ----------------------------------------------------------------------- statistics


def test_t_distribution_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 3, 12, 29, 150):
        for t in (0.2, 1.0, 2.3, 6.0):
            assert math.isclose(t_sf(t, df), stats.t.sf(t, df), rel_tol=1e-9, abs_tol=1e-14)
        for p in (0.9, 0.99, 0.999):
            assert math.isclose(t_ppf(p, df), stats.t.ppf(p, df), rel_tol=1e-7)
    rng = np.random.default_rng(4)
    a, b = rng.normal(0, 1, 11), rng.normal(0.7, 1.3, 8)
    t, p = ttest_ind(list(a), list(b))
    expected = stats.ttest_ind(a, b)
    assert math.isclose(t, expected.statistic, rel_tol=1e-9) and math.isclose(p, expected.pvalue, rel_tol=1e-7)


# ----------------------------------------------------------------------- change points


def _steps(seed: int, noise: float = 0.01) -> list[float]:
    rng = np.random.default_rng(seed)
    level = [100.0] * 11 + [110.0] * 10 + [115.5] * 9
    return [v * (1 + rng.normal(0, noise)) for v in level]


@pytest.mark.parametrize("seed", range(5))
def test_two_steps_found_at_their_index(seed: int) -> None:
    found = detect(_steps(seed))
    assert [abs(c.index - at) <= 1 for c, at in zip(found, (11, 21))] == [True, True], found
    assert len(found) == 2
    assert 0.07 < found[0].change < 0.13 and 0.02 < found[1].change < 0.08


@pytest.mark.parametrize("seed", range(5))
def test_flat_series_has_no_change_point(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    assert detect(list(100 * (1 + rng.normal(0, 0.02, 30)))) == []


def test_one_outlier_is_not_a_change_point() -> None:
    rng = np.random.default_rng(7)
    values = list(100 * (1 + rng.normal(0, 0.01, 30)))
    values[14] *= 1.6  # one run on a busy machine
    assert detect(values) == []


def test_rank_test_matches_scipy_and_finds_the_steps() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(5)
    a, b = list(rng.normal(0, 1, 12)), list(rng.normal(1, 1, 15))
    a[3] = a[4]  # a tie
    assert math.isclose(mannwhitney(a, b), stats.mannwhitneyu(a, b, method="asymptotic").pvalue, rel_tol=1e-9)
    for seed in range(3):
        assert [c.index for c in detect(_steps(seed), test="ranks")] in ([11, 21], [11, 22], [12, 21])


def test_permutation_variant_and_short_series() -> None:
    assert [c.index for c in detect(_steps(1), test="permutation")] in ([11, 21], [11, 22], [12, 21])
    assert detect([1.0, 2.0, 3.0]) == [] and detect([5.0] * 20) == []


# ----------------------------------------------------------------------- judge


def test_judge_against_last_runs() -> None:
    history = [100.0, 101.0, 99.0, 100.5, 99.5]
    few = judge(130.0, history[:2], direction="lower", runs=5, label="op.p95_ms")
    assert few.verdict == "not-judged" and "only 2 of 5 runs" in (few.reason or "")
    assert judge(101.5, history, direction="lower", runs=5, label="op.p95_ms").verdict == "passed"
    failed = judge(130.0, history, direction="lower", runs=5, label="op.p95_ms", min_change=0.15)
    assert failed.verdict == "failed" and "+30.0%" in failed.message
    # beyond the statistical bound but within the tolerance: passes
    assert judge(110.0, history, direction="lower", runs=5, label="x", min_change=0.15).verdict == "passed"
    # higher is better: a drop fails
    assert judge(70.0, history, direction="higher", runs=5, label="op.qps", min_change=0.15).verdict == "failed"


# ----------------------------------------------------------------------- store


def _run(uid: str, when: str = "2026-12-01T10:00:00+00:00", **kw: object) -> RunRow:
    return RunRow(started_at=when, machine={"cpu_model": "X", "cpu_count": 2}, uid=uid, **kw)  # type: ignore[arg-type]


def test_store_refuses_a_newer_schema(tmp_path: Path) -> None:
    target = parse_target(str(tmp_path / "h.db"))
    store = open_store(target)
    assert store.append(_run("a"), [FigureRow("t", "m", "qps", 1.0, (1.0, 1.2))])
    assert store.schema_version() == 1 and not store.append(_run("a"), [])  # a uid is stored once
    with sqlite3.connect(tmp_path / "h.db") as conn:
        conn.execute("INSERT INTO agentmem_schema VALUES (99, 'later')")
    with pytest.raises(HistoryError, match="schema version 99, newer than this pytest-agentmem"):
        open_store(target).append(_run("b"), [])
    with pytest.raises(HistoryError, match="upgrade pytest-agentmem"):
        open_store(target).series_rows()


def test_store_errors_name_the_store_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(HistoryError, match="cannot create its folder"):
        open_store(parse_target(str(tmp_path / "file" / "h.db"))).append(_run("a"), [])
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(HistoryError, match="not a SQLite history store"):
        open_store(parse_target(str(tmp_path / "junk.db"))).append(_run("a"), [])
    with pytest.raises(HistoryError, match="no history store at"):
        open_store(parse_target(str(tmp_path / "missing.db")), create=False).series_rows()


# ----------------------------------------------------------------------- two jobs at once

APPENDER = r'''
import json, sys, time
from pytest_agentmem.history.rows import FigureRow, RunRow
from pytest_agentmem.history.store import open_store
from pytest_agentmem.history_target import parse_target
target, job, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = open_store(parse_target(target))
figures = [FigureRow(f"test_{i % 5}", "op", f"metric_{i}", float(i), (float(i), i + 0.5)) for i in range(40)]
print("ready", flush=True)
sys.stdin.readline()  # "go": both jobs are up, whatever the machine's speed
spans = []
for n in range(count):
    began = time.time()
    assert store.append(RunRow(started_at="2026-12-01T10:00:00+00:00", machine={"job": job},
                               uid=f"{job}-{n}", commit_sha=f"{job}{n:04d}", branch="main"), figures)
    spans.append((began, time.time()))
print(json.dumps(spans))
'''


def two_jobs_append(target: str, count: int = 25) -> list[list[tuple[float, float]]]:
    """Two processes append ``count`` runs each to ``target`` at the same moment; their spans."""
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, target, job, str(count)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for job in ("a", "b")]
    for proc in procs:  # both have opened the store and wait: then both go at once
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", proc.stderr
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    spans = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        spans.append([tuple(s) for s in json.loads(out)])
    return spans


def _check_nothing_lost(target: str, spans: list[list[tuple[float, float]]], count: int = 25) -> None:
    # the two jobs really overlapped: each began appending before the other had finished
    assert spans[0][0][0] < spans[1][-1][1] and spans[1][0][0] < spans[0][-1][1]
    store = open_store(parse_target(target), create=False)
    assert store.count_runs() == 2 * count
    rows = store.series_rows()
    assert len(rows) == 2 * count * 40
    per_run: dict[str, int] = {}
    for row in rows:
        per_run[row["uid"]] = per_run.get(row["uid"], 0) + 1
    assert sorted(per_run) == sorted(f"{j}-{n}" for j in "ab" for n in range(count))
    assert set(per_run.values()) == {40}  # every run whole: its figures all there, no run half-written


def test_two_jobs_append_to_one_sqlite_file_at_once(tmp_path: Path) -> None:
    target = str(tmp_path / "shared" / "history.db")
    _check_nothing_lost(target, two_jobs_append(target))


@pytest.mark.slow
def test_two_jobs_append_to_one_postgres_at_once(pg_database: str) -> None:
    _check_nothing_lost(pg_database, two_jobs_append(pg_database))


# ----------------------------------------------------------------------- the plugin in real runs

PERF_TEST = """
import json, hashlib
from pathlib import Path
import pytest

@pytest.mark.agentmem_perf(rounds=2)
async def test_hash(perf):
    async def one(i):
        hashlib.sha256(b"x" * 20000).digest()
    await perf.run(one, duration=0.3, name="op")

@pytest.mark.agentmem_perf(reference=False)
def test_quality(perf):
    perf.record("quality", recall=json.loads(Path("recall.json").read_text()))

@pytest.mark.agentmem_perf
def test_skipped(perf):
    pytest.skip("no data set here")
"""


def _project(pytester: pytest.Pytester, recall: float = 0.9) -> None:
    pytester.makepyfile(test_perf=PERF_TEST)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    (pytester.path / "recall.json").write_text(json.dumps(recall))
    for args in (["init", "-q", "-b", "main"], ["-c", "user.email=a@b.invalid", "-c", "user.name=a", "add", "-A"],
                 ["-c", "user.email=a@b.invalid", "-c", "user.name=a", "commit", "-qm", "first"]):
        subprocess.run(["git", *args], cwd=pytester.path, check=True, capture_output=True)


def _run_perf(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--agentmem-perf", "-p", "no:cacheprovider", "-p", "no:randomly", *args)


def test_a_perf_run_appends_every_figure(pytester: pytest.Pytester) -> None:
    _project(pytester)
    result = _run_perf(pytester, "--agentmem-history=hist/h.db", "--agentmem-report=r.json")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["agentmem: history: * figures of * (main) appended to *h.db"])
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=pytester.path, capture_output=True, text=True).stdout.strip()
    rows = open_store(parse_target(str(pytester.path / "hist" / "h.db")), create=False).series_rows()
    assert {r["commit_sha"] for r in rows} == {commit} and {r["branch"] for r in rows} == {"main"}
    by = {(r["test"].split("::")[1], r["measurement"], r["metric"]): r for r in rows}
    assert not any(t == "test_skipped" for t, _, _ in by)  # a skipped test has no figure
    qps = by[("test_hash", "op", "qps")]
    assert qps["value"] > 0 and qps["samples_n"] == 2 and qps["samples_median"] > 0
    assert qps["machine"]["cpu_count"]  # the fingerprint
    # the gate's verdict on the figure, with its reason when the gate gives one (no baseline yet)
    assert qps["verdict"] in ("new", "not-judged") and (qps["verdict"] == "new" or qps["reason"])
    assert by[("test_quality", "quality", "recall")]["value"] == 0.9
    report = json.loads((pytester.path / "r.json").read_text())
    # the JSON report of the same run names the commit, so it can be imported later
    assert report["run"]["git"]["commit"] == commit
    # the workload, as the record names it (None where the gate records none)
    measured = next(m for t in report["tests"] if t["nodeid"].endswith("test_hash") for m in t["measurements"])
    assert qps["workload"] == (measured.get("workload") or None)


def test_under_xdist_the_controller_appends_once_for_all_workers(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    _project(pytester)
    result = _run_perf(pytester, "-n", "2", "-p", "no:benchmark", "--agentmem-history=h.db")
    result.assert_outcomes(passed=2, skipped=1)
    store = open_store(parse_target(str(pytester.path / "h.db")), create=False)
    assert store.count_runs() == 1
    assert {r["test"].split("::")[1] for r in store.series_rows()} == {"test_hash", "test_quality"}


def test_an_unreachable_store_warns_and_keeps_the_verdict(pytester: pytest.Pytester) -> None:
    _project(pytester)
    result = _run_perf(pytester, "--agentmem-history=postgresql://bench:pw-never-shown@127.0.0.1:1/history")
    result.assert_outcomes(passed=2, skipped=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["agentmem: WARNING: history not appended: history store "
                                 "postgresql://bench:***@127.0.0.1:1/history: cannot connect*"
                                 "(the run's verdict is unchanged)"])
    assert "pw-never-shown" not in result.stdout.str()


def test_a_store_that_cannot_be_written_warns(pytester: pytest.Pytester) -> None:
    _project(pytester)
    (pytester.path / "junk.db").write_bytes(b"not a database at all" * 200)
    result = _run_perf(pytester, "--agentmem-history=junk.db")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["agentmem: WARNING: history not appended: *junk.db: append failed*"])


def test_bad_history_options_are_usage_errors(pytester: pytest.Pytester) -> None:
    result = _run_perf(pytester, "--agentmem-history=mysql://h/db")
    result.stderr.fnmatch_lines(["*--agentmem-history: unknown store*postgresql://*"])
    result = _run_perf(pytester, "--agentmem-history=h.db", "--agentmem-history-baseline=2")
    result.stderr.fnmatch_lines(["*expected at least 3 runs*"])


def test_history_baseline_judges_against_the_last_runs(pytester: pytest.Pytester) -> None:
    _project(pytester)
    store = "--agentmem-history=h.db"
    # not enough history yet: not judged, passes
    first = _run_perf(pytester, store, "--agentmem-history-baseline=3", "-k", "quality", "--agentmem-report=r.json")
    first.assert_outcomes(passed=1)
    assert re.search(r"quality\.recall.*(warn|not judged)", first.stdout.str())  # shown, not judged
    checks = json.loads((pytester.path / "r.json").read_text())["tests"][0]["checks"]
    history = [c for c in checks if c["kind"] == "history"]
    assert len(history) == 1 and not history[0]["judged"]
    assert "only 0 of 3 runs of this machine and workload on main" in history[0]["message"]
    for recall in (0.951, 0.949, 0.95):
        (pytester.path / "recall.json").write_text(json.dumps(recall))
        _run_perf(pytester, store, "-k", "quality").assert_outcomes(passed=1)
    (pytester.path / "recall.json").write_text(json.dumps(0.948))
    _run_perf(pytester, store, "--agentmem-history-baseline=3", "-k", "quality").assert_outcomes(passed=1)
    (pytester.path / "recall.json").write_text(json.dumps(0.70))
    failed = _run_perf(pytester, store, "--agentmem-history-baseline=3", "-k", "quality")
    failed.assert_outcomes(failed=1)
    failed.stdout.fnmatch_lines(["*quality.recall 0.7 vs the last 3 runs on main*worse than the history*"])


# ----------------------------------------------------------------------- command line


def _stepped_store(path: Path) -> str:
    store = open_store(parse_target(str(path)))
    values = _steps(3)
    for i, value in enumerate(values):
        run = _run(f"r{i}", when=f"2026-11-{i + 1:02d}T10:00:00+00:00", commit_sha=f"{i:02d}" + "c" * 38,
                   branch="main")
        store.append(run, [FigureRow("t.py::test_search", "search", "p95_ms", value, (value,))])
    return str(path)


def test_cli_changes_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = _stepped_store(tmp_path / "h.db")
    assert history_main(["changes", "--store", target]) == 0
    out = capsys.readouterr().out
    assert "1 series, 2 change points" in out and "regression" in out and "10cccccccc..11cccccccc" in out
    assert history_main(["changes", "--store", target, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [c["index"] for c in data["changes"]] == [21, 11]  # newest first
    assert data["changes"][1]["commit"].startswith("11") and data["changes"][1]["regression"] is True
    assert 0.999 < data["changes"][1]["confidence"] <= 1
    assert history_main(["changes", "--store", target, "--branch", "other"]) == 0
    assert "0 series, 0 change points" in capsys.readouterr().out
    for option in (["--statistic", "best"], ["--significance", "ranks"]):
        assert history_main(["changes", "--store", target, *option]) == 0
        assert "1 series, 2 change points" in capsys.readouterr().out


def test_cli_trends_pages(tmp_path: Path) -> None:
    target = _stepped_store(tmp_path / "h.db")
    out = tmp_path / "site"
    assert history_main(["trends", "--store", target, "--out", str(out),
                         "--commit-url", "https://github.com/o/r/commit/{commit}"]) == 0
    index = (out / "index.html").read_text()
    page = next(p for p in out.glob("*.html") if p.name != "index.html").read_text()
    assert "t.py::test_search" in index and "<svg" in page and "stroke-dasharray" in page
    assert page.count("stroke-dasharray") == 2 and "+9.9%" in page and "+5.7%" in page
    assert 'href="https://github.com/o/r/commit/11' in page and "<script" not in page


def test_cli_import_backfills_once(pytester: pytest.Pytester, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    _project(pytester)
    _run_perf(pytester, "--agentmem-report=r.json", "-k", "quality").assert_outcomes(passed=1)
    target = str(tmp_path / "h.db")
    report = str(pytester.path / "r.json")
    assert history_main(["import", "--store", target, report, report]) == 0
    out = capsys.readouterr().out
    assert "imported (1 figures)" in out and "already in the store" in out
    rows = open_store(parse_target(target), create=False).series_rows()
    assert len(rows) == 1 and rows[0]["branch"] == "main" and rows[0]["value"] == 0.9
    (tmp_path / "bad.json").write_text("{}")
    assert history_main(["import", "--store", target, str(tmp_path / "bad.json")]) == 2
    assert "not a pytest-agentmem JSON report" in capsys.readouterr().err


def test_cli_without_a_store_says_how(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("AGENTMEM_HISTORY", raising=False)
    assert history_main(["changes"]) == 2
    assert "pass --store TARGET" in capsys.readouterr().err


def test_module_runs_as_a_program(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pytest_agentmem.history", "changes", "--store",
                           _stepped_store(tmp_path / "h.db")], capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 0 and "2 change points" in done.stdout


@pytest.mark.slow
def test_a_perf_run_appends_to_postgres_and_the_cli_reads_it(pytester: pytest.Pytester, pg_database: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    _project(pytester)
    for _ in range(2):
        _run_perf(pytester, f"--agentmem-history={pg_database}", "-k", "quality").assert_outcomes(passed=1)
    rows = open_store(parse_target(pg_database), create=False).series_rows()
    assert len(rows) == 2 and {r["branch"] for r in rows} == {"main"} and rows[0]["started_at"].endswith("+00:00")
    assert history_main(["changes", "--store", pg_database]) == 0
    assert "1 series, 0 change points" in capsys.readouterr().out


@pytest.mark.slow
def test_a_read_only_postgres_warns_and_keeps_the_verdict(pytester: pytest.Pytester, pg_database: str) -> None:
    import asyncio

    import asyncpg

    async def read_only() -> None:
        conn = await asyncpg.connect(pg_database)
        try:
            name = await conn.fetchval("SELECT current_database()")
            await conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        finally:
            await conn.close()

    asyncio.run(read_only())  # as a read replica, or a database the CI user may only read
    _project(pytester)
    result = _run_perf(pytester, f"--agentmem-history={pg_database}", "-k", "quality")
    result.assert_outcomes(passed=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["agentmem: WARNING: history not appended: history store postgresql://*"
                                 "append failed: ReadOnlySQLTransactionError: *read-only transaction; grant "
                                 "this user INSERT*(the run's verdict is unchanged)"])
