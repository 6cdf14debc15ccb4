"""Where the time went (issue 23): the evidence collectors on real services, and the options and
reports end to end (pytester).

The collectors run against the servers this session provisions (local or docker:
pg_stat_statements preloaded), and against a real local server started without the
library, which must say so rather than show nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_agentmem.config import EVIDENCE_KINDS, parse_evidence
from pytest_agentmem.evidence.flame import functions_grown, read_folded, render_diff, render_flame, shares
from pytest_agentmem.evidence.io import IOReader, io_delta
from pytest_agentmem.evidence.pool import pool_state
from pytest_agentmem.evidence.profile import py_spy_path
from pytest_agentmem.evidence.redis_stats import commandstats_delta, read_commandstats
from pytest_agentmem.evidence.statements import StatementReader, statement_delta, statements_grown
from pytest_agentmem.gate.baseline import MACHINES_DIR, machine_key
from pytest_agentmem.gate.fingerprint import machine_fingerprint
from pytest_agentmem.load.fixtures import PROFILED_RERUN
from pytest_agentmem.report.evidence import evidence_html, failing_lines

pytest_plugins = "pytester"


# --------------------------------------------------------------------------- pure functions


def test_evidence_option_parses_lists_and_names_the_fix() -> None:
    assert parse_evidence("all") == EVIDENCE_KINDS
    assert parse_evidence("none") == ()
    assert parse_evidence("io, statements") == ("io", "statements")
    with pytest.raises(pytest.UsageError, match="use all, none or a comma list"):
        parse_evidence("statements,disk")


def test_statement_deltas_rank_by_time_and_growth() -> None:
    before = {"1": {"query": "SELECT a", "calls": 10, "total_ms": 5.0, "rows": 10,
                    "shared_blks_hit": 1, "shared_blks_read": 0}}
    after = {"1": {"query": "SELECT a", "calls": 110, "total_ms": 55.0, "rows": 110,
                   "shared_blks_hit": 3, "shared_blks_read": 0},
             "2": {"query": "SELECT b", "calls": 100, "total_ms": 200.0, "rows": 0,
                   "shared_blks_hit": 0, "shared_blks_read": 7}}
    rows = statement_delta(before, after, ops=100)
    assert [r["query"] for r in rows] == ["SELECT b", "SELECT a"]
    assert rows[1]["calls"] == 100 and rows[1]["ms_per_op"] == pytest.approx(0.5)
    grown = statements_grown(rows, [{"query": "SELECT a", "ms_per_op": 0.5}])
    assert grown[0]["query"] == "SELECT b" and grown[0]["ref_ms_per_op"] is None
    assert grown[0]["grew_ms_per_op"] == pytest.approx(2.0)
    assert grown[1]["grew_ms_per_op"] == pytest.approx(0.0)


def test_flame_graphs_and_the_function_that_grew(tmp_path: Path) -> None:
    ref = {"main (app.py);search (app.py);embed (app.py)": 60, "main (app.py);search (app.py);sql (app.py)": 40}
    now = {"main (app.py);search (app.py);embed (app.py)": 60, "main (app.py);search (app.py);sql (app.py)": 40,
           "main (app.py);search (app.py);slow_rerank (app.py)": 100}
    own, inclusive = shares(now)
    assert own["slow_rerank (app.py)"] == pytest.approx(0.5) and inclusive["main (app.py)"] == pytest.approx(1.0)
    assert functions_grown(now, ref)[0]["function"] == "slow_rerank (app.py)"
    svg = render_flame(now, "t")
    assert svg.startswith("<svg") and "slow_rerank" in svg and "200 samples" in svg
    assert "rgb(255,50,50)" in render_diff(now, ref, "t")  # the new frame: full red
    path = tmp_path / "p.folded"
    path.write_text("a;b 3\na;c 2\nbroken line\n")
    assert read_folded(path) == {"a;b": 3, "a;c": 2}


def test_commandstats_delta_leaves_out_the_readings_own_info() -> None:
    before = {"get": {"calls": 5, "usec": 50, "failed": 0}, "info": {"calls": 1, "usec": 10, "failed": 0}}
    after = {"get": {"calls": 15, "usec": 150, "failed": 1}, "info": {"calls": 2, "usec": 20, "failed": 0}}
    rows = commandstats_delta(before, after, ops=10)
    assert rows == [{"command": "get", "calls": 10, "total_ms": 0.1, "mean_us": 10.0, "failed": 1,
                     "calls_per_op": 1.0}]


def test_the_terminal_names_three_statements_and_three_functions() -> None:
    grown = [{"query": f"SELECT {i}", "grew_ms_per_op": 4.0 - i, "calls_per_op": 1, "mean_ms": 1}
             for i in range(5)]
    functions = [{"function": f"f{i}", "grew": 0.3 - i / 10} for i in range(5)]
    record = {"nodeid": "t.py::test", "outcome": "failed", "measurements": [{"name": "search", "evidence": {
        "statements": grown, "statements_grown": grown, "reference": "baseline",
        "profile": {"grown": functions, "reference": "the baseline's profile", "diff_svg": "d.svg"}}}]}
    lines = failing_lines([record, {**record, "outcome": "passed"}])
    assert sum(1 for line in lines if "SELECT" in line) == 3
    assert sum(1 for line in lines if line.strip().split()[-1].startswith("f")) == 3
    assert "SELECT 0" in lines[1] and "d.svg" in lines[-1]
    assert "Where the time went" in evidence_html(record["measurements"][0])


# --------------------------------------------------------------------------- real services


@pytest.mark.asyncio
async def test_statements_of_the_test_database_are_read(pg_pool: Any, agentmem_services: Any) -> None:
    reader = StatementReader(pg_pool)
    before = await reader.read()
    assert reader.status == "ok", reader.detail
    for i in range(7):
        await pg_pool.fetchval("SELECT count(*) FROM generate_series(1, $1)", 100 + i)
    rows = statement_delta(before, await reader.read(), ops=7)
    mine = [r for r in rows if "generate_series" in r["query"]]
    assert len(mine) == 1 and mine[0]["calls"] == 7 and mine[0]["calls_per_op"] == 1.0
    assert mine[0]["total_ms"] > 0 and "$1" in mine[0]["query"]  # normalised
    assert not any("pg_stat_statements" in r["query"] for r in rows)  # not the readings themselves


@pytest.mark.asyncio
async def test_a_server_without_the_library_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    agentmem_services: Any) -> None:
    if agentmem_services.mode != "local":
        pytest.skip("starts a second local server; this run's servers are not local")
    import asyncpg

    from pytest_agentmem.services import local_postgres

    monkeypatch.setattr(local_postgres, "statement_settings", lambda bindir: {})
    server = local_postgres.start_local_postgres(timeout=60)
    try:
        pool = await asyncpg.create_pool(server.url, min_size=1, max_size=2)
        try:
            reader = StatementReader(pool)
            assert await reader.read() == {}
            assert reader.status == "not loaded"
            assert "shared_preload_libraries" in reader.detail
        finally:
            await pool.close()
    finally:
        server.stop()


@pytest.mark.asyncio
async def test_pool_state_and_io_bytes_of_real_queries(pg_pool: Any, agentmem_services: Any) -> None:
    state = pool_state(pg_pool)
    assert state["in_use"] == 0 and state["waiting"] == 0 and state["open"] >= 1
    reader = IOReader(lambda: list(agentmem_services.postgres.pids))
    before = reader.read()
    async with pg_pool.acquire() as conn:
        assert pool_state(pg_pool)["in_use"] == 1
        await conn.fetch("SELECT repeat('x', 1000) FROM generate_series(1, 200)")
    moved = io_delta(before, reader.read())
    assert moved["process_net_received"] > 200_000  # 200 rows of 1000 characters came over TCP
    assert moved["process_net_sent"] > 0
    if agentmem_services.postgres.pids:
        assert "services_disk_write" in moved


@pytest.mark.asyncio
async def test_redis_commandstats_count_real_commands(redis_client: Any) -> None:
    before = await read_commandstats(redis_client)
    for i in range(5):
        await redis_client.set(f"k{i}", "v")
    rows = commandstats_delta(before, await read_commandstats(redis_client), ops=5)
    sets = [r for r in rows if r["command"] == "set"]
    assert sets and sets[0]["calls"] >= 5 and sets[0]["calls_per_op"] >= 1


# --------------------------------------------------------------------------- the options end to end

EXTRA_QUERY_TESTS = '''
import os
import pytest

@pytest.mark.agentmem_perf
async def test_lookup(perf, pg_pool):
    await pg_pool.execute("CREATE TABLE items (id int PRIMARY KEY, body text)")
    await pg_pool.execute("INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
    await pg_pool.execute("ANALYZE items")
    slow = os.environ.get("SLOW_PLAN") == "1"

    async def op(i):
        await pg_pool.fetchval("SELECT body FROM items WHERE id = $1", i % 20000 + 1)
        if slow:  # one extra real query per operation, with a slower plan: a sequential scan
            await pg_pool.fetchval("SELECT count(*) FROM items WHERE body LIKE $1", "%ab%")

    await perf.run(op, concurrency=2, duration=0.6, warmup=10, rounds=3, name="lookup")
'''


@pytest.mark.slow
def test_an_extra_query_fails_the_gate_and_tops_the_statements_that_grew(
        pytester: pytest.Pytester, service_urls: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(EXTRA_QUERY_TESTS)
    # this test is about the evidence, not the busy rule: on a shared machine (the suite's own
    # servers, other jobs) the run could count as busy and leave its speed not judged
    monkeypatch.setenv("AGENTMEM_BUSY_CORES", "inf")
    common = ["--agentmem-perf", "-p", "no:cacheprovider", *service_urls, "--agentmem-profile-dir",
              str(pytester.path / "profiles")]
    pytester.runpytest(*common, "--update-baselines").assert_outcomes(passed=1)
    stored = list((pytester.path / "perf_baselines" / "evidence").glob("*.json"))
    assert len(stored) == 1
    monkeypatch.setenv("SLOW_PLAN", "1")
    result = pytester.runpytest(*common, "--agentmem-report", "r.json", "--agentmem-html", "r.html")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "where the time went" in text
    result.stdout.fnmatch_lines(["*statements that grew against the baseline:",
                                 "*ms/op*SELECT count(*) FROM items WHERE body LIKE $1*"])
    record = json.loads((pytester.path / "r.json").read_text())["tests"][0]
    evidence = record["measurements"][0]["evidence"]
    assert evidence["statements_status"] == "ok" and evidence["reference"] == "baseline"
    top = evidence["statements_grown"][0]
    assert "LIKE" in top["query"] and top["ref_ms_per_op"] is None and top["calls_per_op"] == pytest.approx(1.0)
    assert evidence["pool"]["in_use_max"] >= 1 and evidence["io"]["process_net_sent"] > 0
    page = (pytester.path / "r.html").read_text()
    assert "Where the time went" in page and "body LIKE $1" in page
    if py_spy_path() is not None:  # no --agentmem-profile: a suspect's re-run was profiled, not gated
        profile = evidence["profile"]
        assert profile["scope"] == PROFILED_RERUN
        assert "problem" in profile or Path(profile["svg"]).exists()


def test_evidence_none_records_nothing_and_a_bad_list_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile('''
        import asyncio, pytest

        @pytest.mark.agentmem_perf(reference=False)
        async def test_sleep(perf):
            async def op(i):
                await asyncio.sleep(0.001)
            await perf.run(op, concurrency=1, total=20)
    ''')
    result = pytester.runpytest("--agentmem-perf", "-p", "no:cacheprovider", "--agentmem-evidence", "pool,disk")
    result.stderr.fnmatch_lines(["*unknown evidence disk*use all, none or a comma list*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result = pytester.runpytest("--agentmem-perf", "-p", "no:cacheprovider", "--agentmem-evidence", "none",
                                "--agentmem-report", "r.json")
    result.assert_outcomes(passed=1)
    record = json.loads((pytester.path / "r.json").read_text())["tests"][0]
    assert "evidence" not in record["measurements"][0]
    result = pytester.runpytest("--agentmem-perf", "-p", "no:cacheprovider", "--agentmem-report", "r.json")
    record = json.loads((pytester.path / "r.json").read_text())["tests"][0]
    assert record["measurements"][0]["evidence"]["io"]["process_disk_write"] >= 0


CPU_TESTS = '''
import os
import pytest

def work(n):
    return sum(i * i for i in range(n))

def extra_work(n):
    total = 0
    for i in range(n):
        total += i % 7
    return total

@pytest.mark.agentmem_perf
async def test_cpu(perf):
    extra = os.environ.get("EXTRA_WORK") == "1"

    async def op(i):
        work(2000)
        if extra:
            extra_work(6000)

    await perf.run(op, concurrency=1, duration=0.6, warmup=5, rounds=2, name="cpu")
'''


@pytest.mark.skipif(py_spy_path() is None, reason="py-spy is not installed (pip install 'pytest-agentmem[profile]')")
def test_the_profile_shows_the_function_that_grew(pytester: pytest.Pytester,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(CPU_TESTS)
    # about the profile, not the busy rule: a busy machine (a parallel job) would rightly leave
    # the regression "not judged: machine busy" instead of failing it
    monkeypatch.setenv("AGENTMEM_BUSY_CORES", "inf")
    common = ["--agentmem-perf", "-p", "no:cacheprovider", "--agentmem-profile",
              "--agentmem-profile-dir", "profiles", "--agentmem-report", "r.json"]
    pytester.runpytest(*common, "--update-baselines").assert_outcomes(passed=1)
    first = json.loads((pytester.path / "r.json").read_text())["tests"][0]["measurements"][0]["evidence"]
    if "problem" in first["profile"]:
        pytest.skip(f"py-spy cannot attach here: {first['profile']['problem']}")
    assert first["profile"]["scope"] == "measured rounds" and Path(first["profile"]["svg"]).exists()
    monkeypatch.setenv("EXTRA_WORK", "1")
    result = pytester.runpytest(*common)
    result.assert_outcomes(failed=1)
    profile = json.loads((pytester.path / "r.json").read_text())["tests"][0]["measurements"][0]["evidence"]["profile"]
    assert profile["grown"][0]["function"].startswith("extra_work")
    assert "extra_work" in Path(profile["diff_svg"]).read_text()
    result.stdout.fnmatch_lines(["*functions whose share of samples grew*", "*pt  extra_work*"])


AB_WORK = '''
import hashlib

def op(i):
    h = hashlib.sha256()
    for u in range(30):
        h.update(("%d-%d" % (i, u)).encode() * 40)
    {extra}
    return h.digest()

def extra_work(i):
    total = 0
    for u in range(3000):
        total += (i * u) % 7
    return total
'''

AB_TEST = '''
import pytest

import work


@pytest.mark.agentmem_perf
async def test_op(perf):
    async def one(i):
        work.op(i)

    await perf.run(one, duration=0.6, warmup=5, name="op")
'''


@pytest.mark.slow
@pytest.mark.skipif(py_spy_path() is None, reason="py-spy is not installed (pip install 'pytest-agentmem[profile]')")
def test_ab_profiles_show_the_function_that_grew_against_the_base(pytester: pytest.Pytester) -> None:
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=pytester.path, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("config", "user.email", "t@example.invalid")
    git("config", "user.name", "t")
    pytester.makefile(".ini", pytest="[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(work=AB_WORK.format(extra="pass"), test_op=AB_TEST)
    git("add", "-A")
    git("commit", "-qm", "base")
    pytester.makepyfile(work=AB_WORK.format(extra="extra_work(i)"))
    git("commit", "-qam", "extra work")
    result = pytester.runpytest_subprocess("--agentmem-compare", "HEAD~1", "--agentmem-profile",
                                           "--agentmem-profile-dir", str(pytester.path / "profiles"),
                                           "--agentmem-report", str(pytester.path / "r.json"))
    result.assert_outcomes(failed=1)
    evidence = json.loads((pytester.path / "r.json").read_text())["tests"][0]["measurements"][0]["evidence"]
    profile = evidence["profile"]
    if "problem" in profile:
        pytest.skip(f"py-spy cannot attach here: {profile['problem']}")
    assert evidence["reference"] == "base" and profile["reference"] == "the base (A/B)"
    assert profile["grown"][0]["function"].startswith("extra_work")
    for key in ("svg", "diff_svg", "reference_svg"):
        assert Path(profile[key]).exists()
    result.stdout.fnmatch_lines(["*functions whose share of samples grew (the base (A/B)):*", "*pt  extra_work*"])


def test_the_readings_own_pool_reset_is_taken_out() -> None:
    from pytest_agentmem.evidence.statements import without_own_reset

    rows = [{"query": "RESET ALL", "calls": 1.0, "total_ms": 0.01, "rows": 0.0},
            {"query": "CLOSE ALL", "calls": 5.0, "total_ms": 0.05, "rows": 0.0},
            {"query": "SELECT 1", "calls": 3.0, "total_ms": 0.3, "rows": 3.0}]
    out = without_own_reset(rows, ops=4)
    assert [r["query"] for r in out] == ["CLOSE ALL", "SELECT 1"]
    assert out[0]["calls"] == 4 and out[0]["calls_per_op"] == 1.0 and out[0]["total_ms"] == pytest.approx(0.04)


@pytest.mark.slow
def test_a_machines_own_set_keeps_its_own_evidence(pytester: pytest.Pytester, service_urls: list[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The evidence goes beside the baseline it was recorded with: a second machine's
    --update-baselines writes its set and its evidence in machines/<key>/, leaves the primary
    set's evidence alone, and later runs on it compare with that evidence."""
    pytester.makepyfile(EXTRA_QUERY_TESTS)
    monkeypatch.setenv("AGENTMEM_BUSY_CORES", "inf")
    common = ["--agentmem-perf", "-p", "no:cacheprovider", *service_urls, "--agentmem-profile-dir",
              str(pytester.path / "profiles")]
    pytester.runpytest(*common, "--update-baselines").assert_outcomes(passed=1)
    primary_dir = pytester.path / "perf_baselines"
    (primary,) = primary_dir.glob("*.json")
    (primary_evidence,) = (primary_dir / "evidence").glob("*.json")
    data = json.loads(primary.read_text())  # the primary set becomes another machine's
    data["fingerprint"]["machine"].update(cpu_model="Fast CPU 9000", cpu_count=64)
    primary.write_text(json.dumps(data))
    before = primary_evidence.read_text()

    pytester.runpytest(*common, "--update-baselines").assert_outcomes(passed=1)
    assert primary_evidence.read_text() == before
    own_dir = primary_dir / MACHINES_DIR / machine_key(machine_fingerprint())
    assert [p.name for p in own_dir.glob("*.json")] == [primary.name]
    assert [p.name for p in (own_dir / "evidence").glob("*.json")] == [primary_evidence.name]

    primary_evidence.unlink()  # what the next run compares with can only be this machine's
    monkeypatch.setenv("SLOW_PLAN", "1")
    result = pytester.runpytest(*common, "--agentmem-report", "r.json")
    result.assert_outcomes(failed=1)
    evidence = json.loads((pytester.path / "r.json").read_text())["tests"][0]["measurements"][0]["evidence"]
    assert evidence["reference"] == "baseline"
    assert "LIKE" in evidence["statements_grown"][0]["query"]
