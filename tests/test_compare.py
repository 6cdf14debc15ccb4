"""Same-run A/B (``--agentmem-compare REF``) on temporary git repositories.

Each test makes a small repository whose perf test measures a real CPU-bound
operation, commits a base and a candidate, and runs pytest in a subprocess as a
user would. The slowdowns used are large (3x): these tests check the mechanics
(pairing, messages, cleanup), the gate-quality benchmark
(tests/quality/test_gate_quality_ab.py) measures how small a change is caught.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from interrupts import sigint_as_default

pytestmark = pytest.mark.slow

WORK = '''
import hashlib
VERSION = "{version}"
UNITS = {units}


def op(i):
    h = hashlib.sha256()
    for u in range(UNITS):
        h.update(("%d-%d" % (i, u)).encode() * 40)
    return h.digest()
'''

PERF_TEST = '''
import os

import pytest

import work

if os.environ.get("AB_WHERE_FILE"):
    with open(os.environ["AB_WHERE_FILE"], "a") as fh:
        fh.write(f"{{work.VERSION}} {{work.__file__}}\\n")


@pytest.mark.agentmem_perf({marker})
async def {name}(perf):
    async def one(i):
        work.op(i)

    await perf.run(one, duration=0.6, warmup=5, name="op")
'''

INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(pytester: pytest.Pytester) -> Path:
    path = pytester.path
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "t@example.invalid")
    git(path, "config", "user.name", "t")
    return path


def test_a_slower_candidate_fails_naming_ref_commit_change_and_p(pytester: pytest.Pytester, repo: Path) -> None:
    base = commit(repo, {"pytest.ini": INI, "work.py": WORK.format(version="base", units=40),
                         "test_op.py": PERF_TEST.format(marker="", name="test_op")}, "base")
    commit(repo, {"work.py": WORK.format(version="cand", units=120)}, "3x the work")
    result = pytester.runpytest_subprocess("--agentmem-compare", "HEAD~1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"*agentmem A/B: base HEAD~1 ({base[:12]}) in a worktree*",
        f"*PerformanceRegression: op.* vs * at HEAD~1 ({base[:12]}): +*% [[]*] worse over * pairs*p=*",
        "*gate: 1 failed*",
    ])


def test_a_a_passes_and_reports_the_paired_change(pytester: pytest.Pytester, repo: Path) -> None:
    commit(repo, {"pytest.ini": INI, "work.py": WORK.format(version="same", units=40),
                  "test_op.py": PERF_TEST.format(marker="tolerance=0.9, compare_tolerance=0.5",
                                                 name="test_op")}, "base")
    report = repo / "report.json"
    result = pytester.runpytest_subprocess("--agentmem-compare", "HEAD", f"--agentmem-report={report}")
    result.assert_outcomes(passed=1)
    # the paired change with its interval; CPU per op decides when a busy machine took unequal
    # CPU time from the two sides, and the wall-time figures then say so instead of passing
    result.stdout.fnmatch_lines(["*op.cpu_ms_per_op*base *[[]*p=*pass*"])
    assert "closed its connection" not in result.stdout.str()  # a base that finished said goodbye
    assert re.search(r"op\.qps +\S+ +base +\S+ .*\[.*\] p=\S+ +(pass|not judged: sides unequal)$",
                     result.stdout.str(), re.MULTILINE), result.stdout.str()
    import json

    record = json.loads(report.read_text())["tests"][0]
    paired = [c for c in record["checks"] if c["kind"] == "paired"]
    assert {c["metric"] for c in paired} >= {"qps", "p95_ms"}
    assert all(c["pairs"] >= 4 and c["interval"] is not None for c in paired)
    assert {c["tolerance"] for c in paired} == {0.5}  # the test's A/B tolerance, not its stored-mode one
    info = record["measurements"][0]["info"]
    # 0.6 s measured a side: automatic rounds of 50 ms (as many again if the screen asked)
    assert len(info["ab_base_rounds"]) == len(info["ab_candidate_rounds"]) in (12, 24)
    order = info["ab_order"]
    assert order[:4] == ["base", "candidate", "candidate", "base"]  # ABBA


def test_the_base_side_runs_the_base_code(pytester: pytest.Pytester, repo: Path) -> None:
    """Code on a ``pythonpath`` root (as an editable install puts it) comes from the worktree."""
    test = PERF_TEST.format(marker="tolerance=0.5", name="test_op")
    commit(repo, {"pytest.ini": INI + "pythonpath = src\n",
                  "src/work.py": WORK.format(version="base", units=30), "test_op.py": test}, "base")
    commit(repo, {"src/work.py": WORK.format(version="cand", units=30)}, "candidate")
    where = repo / "where.txt"
    os.environ["AB_WHERE_FILE"] = str(where)
    try:
        result = pytester.runpytest_subprocess("--agentmem-compare", "HEAD~1")
    finally:
        del os.environ["AB_WHERE_FILE"]
    result.assert_outcomes(passed=1)
    seen = dict(line.split(" ", 1) for line in where.read_text().splitlines())
    assert seen["cand"] == str(repo / "src" / "work.py")
    assert "agentmem-ab-" in seen["base"] and seen["base"].endswith("/base/src/work.py")


def test_several_processes_a_side_each_run_their_side_and_judge_against_their_spread(
        pytester: pytest.Pytester, repo: Path) -> None:
    """--agentmem-compare-processes 2: two base processes in the worktree, a second candidate
    process in the checkout; every one measures every run, and 3x the work still fails."""
    test = PERF_TEST.format(marker="", name="test_op")
    commit(repo, {"pytest.ini": INI + "pythonpath = src\n",
                  "src/work.py": WORK.format(version="base", units=40), "test_op.py": test}, "base")
    commit(repo, {"src/work.py": WORK.format(version="cand", units=120)}, "3x the work")
    where = repo / "where.txt"
    report = repo / "report.json"
    os.environ["AB_WHERE_FILE"] = str(where)
    try:
        result = pytester.runpytest_subprocess("--agentmem-compare", "HEAD~1", "--agentmem-compare-processes",
                                               "2", f"--agentmem-report={report}")
    finally:
        del os.environ["AB_WHERE_FILE"]
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*agentmem A/B: base HEAD~1 (*) in a worktree, 1 perf test(s), * a run, 2 processes a side*",
        "*PerformanceRegression: op.* worse over 2 processes a side (* blocks)*p=*",
    ])
    seen = [line.split(" ", 1) for line in where.read_text().splitlines()]
    assert sorted(v for v, _ in seen) == ["base", "base", "cand", "cand"]  # each process imported its tree
    assert all(p.endswith("/base/src/work.py") for v, p in seen if v == "base")
    import json

    info = json.loads(report.read_text())["tests"][0]["measurements"][0]["info"]
    rounds = info["ab_process_rounds"]
    assert set(rounds) == {"base", "base.2", "candidate", "candidate.2"}
    assert len({len(r) for r in rounds.values()}) == 1 and len(rounds["base"]) >= 10
    assert len(git(repo, "worktree", "list", "--porcelain").split("\n\n")) == 1  # the worktree is gone


def test_a_test_on_one_side_only_is_new_or_removed(pytester: pytest.Pytester, repo: Path) -> None:
    commit(repo, {"pytest.ini": INI, "work.py": WORK.format(version="v", units=30),
                  "test_old.py": PERF_TEST.format(marker="", name="test_old")}, "base")
    git(repo, "rm", "-q", "test_old.py")
    commit(repo, {"test_new.py": PERF_TEST.format(marker="", name="test_new")}, "renamed")
    result = pytester.runpytest_subprocess("--agentmem-compare", "HEAD~1")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "*new (not in HEAD~1): test_new.py::test_new*",
        "*removed (only in HEAD~1): test_old.py::test_old*",
    ])
    result.stdout.no_fnmatch_line("*FAIL*")


CAPACITY_TEST = '''
import os

import pytest

import work


@pytest.mark.agentmem_perf(reference=False, max_error_rate=0.0)
async def test_capacity(perf):
    with open(os.environ["AB_RAN_FILE"], "a") as fh:
        fh.write(work.__file__ + "\\n")

    async def one(i):
        work.op(i)

    await perf.run(one, duration=0.3, name="capacity")
'''


def test_a_test_with_baseline_false_is_not_compared(pytester: pytest.Pytester, repo: Path) -> None:
    """Nothing to compare with in either mode: the candidate runs it once, its thresholds gate."""
    commit(repo, {"pytest.ini": INI, "work.py": WORK.format(version="v", units=30),
                  "test_op.py": PERF_TEST.format(marker="tolerance=0.5", name="test_op"),
                  "test_capacity.py": CAPACITY_TEST}, "base")
    ran = repo / "ran.txt"
    report = repo / "report.json"
    os.environ["AB_RAN_FILE"] = str(ran)
    try:
        result = pytester.runpytest_subprocess("--agentmem-compare", "HEAD", f"--agentmem-report={report}")
    finally:
        del os.environ["AB_RAN_FILE"]
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*agentmem A/B: base HEAD * 1 perf test(s) (1 more not compared: reference=False)*"])
    result.stdout.no_fnmatch_line("*removed (only in HEAD)*")
    assert ran.read_text().splitlines() == [str(repo / "work.py")]  # the base never ran it
    import json

    records = {r["nodeid"]: r for r in json.loads(report.read_text())["tests"]}
    capacity = records["test_capacity.py::test_capacity"]
    assert not [c for c in capacity["checks"] if c["kind"] == "paired"]
    assert any(c["metric"] == "error_rate" and c["verdict"] == "pass" for c in capacity["checks"])
    assert [c for c in records["test_op.py::test_op"]["checks"] if c["kind"] == "paired"]


def test_an_unknown_ref_is_a_usage_error_with_a_hint(pytester: pytest.Pytester, repo: Path) -> None:
    commit(repo, {"pytest.ini": INI, "work.py": WORK.format(version="v", units=30),
                  "test_op.py": PERF_TEST.format(marker="", name="test_op")}, "base")
    result = pytester.runpytest_subprocess("--agentmem-compare", "no-such-branch")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--agentmem-compare no-such-branch: unknown revision*fetch-depth: 0*"])


def test_outside_a_git_repository_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_op=PERF_TEST.format(marker="", name="test_op"))
    env_ceiling = os.environ.get("GIT_CEILING_DIRECTORIES")
    os.environ["GIT_CEILING_DIRECTORIES"] = str(pytester.path.parent)
    try:
        result = pytester.runpytest_subprocess("--agentmem-compare", "main")
    finally:
        if env_ceiling is None:
            del os.environ["GIT_CEILING_DIRECTORIES"]
        else:
            os.environ["GIT_CEILING_DIRECTORIES"] = env_ceiling
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*is not inside a git repository*"])


def test_compare_cannot_be_combined_with_update_baselines(pytester: pytest.Pytester, repo: Path) -> None:
    commit(repo, {"pytest.ini": INI, "work.py": WORK.format(version="v", units=30),
                  "test_op.py": PERF_TEST.format(marker="", name="test_op")}, "base")
    result = pytester.runpytest_subprocess("--agentmem-compare", "HEAD", "--update-baselines")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*does not*record stored baselines*"])


def test_nothing_is_left_after_a_run_or_a_sigint(pytester: pytest.Pytester, repo: Path) -> None:
    slow = PERF_TEST.format(marker="", name="test_op").replace("duration=0.6", "duration=30")
    commit(repo, {"pytest.ini": INI, "work.py": WORK.format(version="v", units=30),
                  "test_op.py": slow}, "base")
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                             "--agentmem-compare", "HEAD"], cwd=repo, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=sigint_as_default)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()  # (iterating the pipe appends line by line)
    deadline = time.monotonic() + 120
    base_pid = None
    while time.monotonic() < deadline and (base_pid is None or not any("agentmem A/B:" in x for x in lines)):
        time.sleep(0.2)
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                if "pytest" in " ".join(child.cmdline()):
                    base_pid = child.pid
            except psutil.Error:
                continue
    assert base_pid is not None, "the base side's pytest did not start"
    assert any("agentmem A/B:" in x for x in lines), "".join(lines)[-2000:]
    time.sleep(2.0)  # inside the paired rounds
    worktrees = git(repo, "worktree", "list", "--porcelain").split("\n\n")
    assert len(worktrees) == 2
    worktree = Path(worktrees[1].splitlines()[0].split(" ", 1)[1])
    socket_dir = Path(psutil.Process(base_pid).environ()["AGENTMEM_AB_ADDRESS"]).parent
    assert worktree.exists() and socket_dir.exists()
    # both sides run with the layout fixed, one hash seed, and equally sized stacks
    for pid in (proc.pid, base_pid):
        assert int(Path(f"/proc/{pid}/personality").read_text(), 16) & 0x0040000
        assert psutil.Process(pid).environ()["PYTHONHASHSEED"] == psutil.Process(proc.pid).environ()["PYTHONHASHSEED"]
    sizes = {pid: len(Path(f"/proc/{pid}/cmdline").read_bytes()) + len(Path(f"/proc/{pid}/environ").read_bytes())
             for pid in (proc.pid, base_pid)}
    assert len(set(sizes.values())) == 1, sizes
    # the base was started before the candidate re-executed itself, and handed over
    assert "AGENTMEM_AB_HANDOVER" in psutil.Process(proc.pid).environ()
    assert "AGENTMEM_AB_HANDOVER" not in psutil.Process(base_pid).environ()
    assert psutil.Process(base_pid).ppid() == proc.pid
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=90)
    reader.join(10)
    assert proc.stdout is not None
    proc.stdout.close()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, "".join(lines)[-2000:]
    assert not psutil.pid_exists(base_pid) or psutil.Process(base_pid).status() == psutil.STATUS_ZOMBIE
    assert len(git(repo, "worktree", "list").splitlines()) == 1
    assert not worktree.parent.exists() and not socket_dir.exists()


SERVICES_TEST = '''
import os

import pytest


@pytest.mark.agentmem_perf(tolerance="500%")
async def test_shared(perf, pg_pool, redis_client):
    port = await pg_pool.fetchval("SELECT inet_server_port()")
    database = await pg_pool.fetchval("SELECT current_database()")
    db = redis_client.connection_pool.connection_kwargs.get("db")
    with open(os.environ["AB_WHERE_FILE"], "a") as fh:
        fh.write(f"{os.getcwd()} {port} {database} {db}\\n")

    async def one(i):
        await pg_pool.fetchval("SELECT $1::int + 1", i)
        await redis_client.incr("n")

    await perf.run(one, duration=0.5, name="op")
'''


def test_both_sides_share_the_servers_with_their_own_databases(pytester: pytest.Pytester, repo: Path) -> None:
    commit(repo, {"pytest.ini": INI, "test_shared.py": SERVICES_TEST}, "base")
    where = repo / "where.txt"
    os.environ["AB_WHERE_FILE"] = str(where)
    try:
        result = pytester.runpytest_subprocess("--agentmem-compare", "HEAD", "--agentmem-services=local")
    finally:
        del os.environ["AB_WHERE_FILE"]
    result.assert_outcomes(passed=1)
    rows = [line.split(" ") for line in where.read_text().splitlines()]
    assert len(rows) == 2
    (cwd_a, port_a, db_a, redis_a), (cwd_b, port_b, db_b, redis_b) = rows
    assert {cwd_a == str(repo), cwd_b == str(repo)} == {True, False}  # one side ran in the worktree
    assert port_a == port_b  # one Postgres server for both sides
    assert db_a != db_b and redis_a != redis_b  # each side its own database


def test_no_database_is_left_on_an_external_server(pytester: pytest.Pytester, repo: Path,
                                                   agentmem_services) -> None:
    """Both sides' databases on a server given by URL are dropped after the run."""
    import asyncpg

    from pytest_agentmem.services._sync import run_sync

    dsn = agentmem_services.postgres.dsn

    async def databases() -> set[str]:
        conn = await asyncpg.connect(dsn)
        try:
            return {r[0] for r in await conn.fetch("SELECT datname FROM pg_database")}
        finally:
            await conn.close()

    before = run_sync(databases())
    commit(repo, {"pytest.ini": INI, "test_shared.py": SERVICES_TEST}, "base")
    os.environ["AB_WHERE_FILE"] = str(repo / "where.txt")
    try:
        result = pytester.runpytest_subprocess("--agentmem-compare", "HEAD", f"--agentmem-postgres-url={dsn}")
    finally:
        del os.environ["AB_WHERE_FILE"]
    result.assert_outcomes(passed=1)
    used = {line.split(" ")[2] for line in (repo / "where.txt").read_text().splitlines()}
    assert len(used) == 2 and not used & before
    assert run_sync(databases()) - before == set()
