"""No server outlives the run: normal end, Ctrl-C, SIGTERM, and a killed pytest (integration)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from interrupts import sigint_as_default

RECORD_AND_WAIT = """
    import asyncio, json, os

    async def test_hold_servers(pg_pool, redis_client, agentmem_services):
        pids = agentmem_services.postgres.process_ids() + agentmem_services.redis.process_ids()
        dirs = [agentmem_services.postgres.workdir, agentmem_services.redis.workdir]
        with open(os.environ["AGENTMEM_TEST_RECORD"] + ".tmp", "w") as f:
            json.dump({"pids": pids, "dirs": dirs}, f)
        os.replace(os.environ["AGENTMEM_TEST_RECORD"] + ".tmp", os.environ["AGENTMEM_TEST_RECORD"])
        await asyncio.sleep(float(os.environ.get("AGENTMEM_TEST_HOLD", "0")))
"""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def _start_run(pytester: pytest.Pytester, hold: float) -> tuple[subprocess.Popen[bytes], Path]:
    pytester.makepyfile(RECORD_AND_WAIT)
    record = pytester.path / "record.json"
    env = dict(os.environ, AGENTMEM_TEST_RECORD=str(record), AGENTMEM_TEST_HOLD=str(hold))
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                             "--agentmem-services=local", "-q"], cwd=pytester.path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=sigint_as_default)
    deadline = time.monotonic() + 90
    while not record.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            out = proc.communicate(timeout=10)[0].decode(errors="replace") if proc.poll() is not None else ""
            proc.kill()
            pytest.fail(f"the inner run never reached its test body:\n{out}")
        time.sleep(0.05)
    return proc, record


def _check_everything_gone(record: Path, timeout: float = 15) -> None:
    data = json.loads(record.read_text())
    assert len(data["pids"]) >= 2
    left = _wait_gone(data["pids"], timeout)
    assert not left, f"server processes still alive: {left}"
    for directory in data["dirs"]:
        assert not Path(directory).exists(), f"temp dir left behind: {directory}"


def test_servers_stop_when_the_run_ends(pytester: pytest.Pytester) -> None:
    proc, record = _start_run(pytester, hold=0)
    out = proc.communicate(timeout=120)[0].decode(errors="replace")
    assert proc.returncode == 0, out
    _check_everything_gone(record, timeout=5)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_servers_stop_when_the_run_is_interrupted_mid_test(pytester: pytest.Pytester, signum: int) -> None:
    proc, record = _start_run(pytester, hold=120)
    proc.send_signal(signum)
    out = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "KeyboardInterrupt" in out
    _check_everything_gone(record)


def test_servers_die_with_a_killed_pytest_and_leftovers_are_swept(pytester: pytest.Pytester) -> None:
    proc, record = _start_run(pytester, hold=120)
    proc.kill()  # SIGKILL: no cleanup code of ours runs; the kernel's parent-death signal does
    proc.communicate(timeout=10)
    data = json.loads(record.read_text())
    left = _wait_gone(data["pids"], 15)
    assert not left, f"server processes outlived a killed pytest: {left}"
    # Their temp dirs remain until the next run's sweep removes them.
    from pytest_agentmem.services.procs import sweep_stale_workdirs

    sweep_stale_workdirs()
    for directory in data["dirs"]:
        assert not Path(directory).exists()


def _hold_lock(path: Path) -> subprocess.Popen[bytes]:
    """Another process (as a run in another pid namespace would) holding the work dir's lock."""
    code = ("import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
    return holder


def test_the_sweep_keeps_a_live_run_whose_pid_is_not_visible() -> None:
    """/tmp shared across pid namespaces: a run's pid may mean nothing here; its lock does."""
    import tempfile

    from pytest_agentmem.services.procs import LOCK_NAME, TEMP_PREFIX, sweep_stale_workdirs

    workdir = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}test-"))
    invisible = 4_194_000  # a pid from another namespace: no such process here
    assert not psutil.pid_exists(invisible)
    (workdir / "owner.pid").write_text(str(invisible))
    (workdir / LOCK_NAME).write_text(str(invisible))
    holder = _hold_lock(workdir / LOCK_NAME)
    try:
        sweep_stale_workdirs()
        assert workdir.exists(), "the sweep deleted the data of a live run"
    finally:
        holder.kill()
        holder.communicate()
    sweep_stale_workdirs()  # the run has ended: its lock is free, its dir goes
    assert not workdir.exists()


def test_our_own_work_dirs_survive_a_sweep_and_are_removed_with_their_lock() -> None:
    from pytest_agentmem.services.procs import make_workdir, remove_workdir, sweep_stale_workdirs

    workdir = make_workdir("test")
    try:
        sweep_stale_workdirs()
        assert workdir.exists()
    finally:
        remove_workdir(workdir)
    assert not workdir.exists()
