"""Databases of runs killed outright are swept from a shared (external) server (integration).

The session's Postgres stands in for an external server: the runs below are separate
processes that lease it as an external run does.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from pytest_agentmem.services.janitor import PostgresJanitor, new_run_id

RUN = """
import sys, time
from pytest_agentmem.services.janitor import PostgresJanitor
janitor = PostgresJanitor(sys.argv[1], setup_sql=(), tag="j0", run_id=sys.argv[2], lease=sys.argv[3] == "1")
janitor.create_database()
print("READY", flush=True)
time.sleep(300)
"""


def _databases(dsn: str, run_id: str) -> set[str]:
    import asyncpg

    async def names() -> set[str]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1",
                                    f"agentmem_{run_id}_%")
            return {r["datname"] for r in rows}
        finally:
            await conn.close()

    return asyncio.run(names())


def _run(dsn: str, run_id: str, *, lease: bool = True) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", RUN, dsn, run_id, "1" if lease else "0"],
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
    return proc


def _cleanup(dsn: str, run_id: str) -> None:
    leftover = PostgresJanitor(dsn, setup_sql=(), run_id=run_id)
    leftover._created.update(_databases(dsn, run_id))
    leftover.close()


def test_a_killed_runs_databases_are_swept_and_a_live_runs_are_kept(agentmem_services) -> None:  # type: ignore[no-untyped-def]
    dsn = agentmem_services.postgres.dsn
    killed, alive, unleased = new_run_id(), new_run_id(), new_run_id()
    runs = {killed: _run(dsn, killed), alive: _run(dsn, alive), unleased: _run(dsn, unleased, lease=False)}
    try:
        assert len(_databases(dsn, killed)) == 2 and len(_databases(dsn, alive)) == 2
        runs[killed].send_signal(signal.SIGKILL)  # no teardown: its databases stay behind
        runs[unleased].send_signal(signal.SIGKILL)
        runs[killed].wait(30)
        runs[unleased].wait(30)
        for _ in range(50):  # the server ends the dead session as it sees the socket close
            if _databases(dsn, killed) and not _lease_open(dsn, killed):
                break
            asyncio.run(asyncio.sleep(0.1))
        later = PostgresJanitor(dsn, setup_sql=(), lease=True)  # the next run on the server
        try:
            assert not _databases(dsn, killed)
            assert set(later.swept) >= {f"agentmem_{killed}_j0_tpl", f"agentmem_{killed}_j0_t1"}
            assert len(_databases(dsn, alive)) == 2  # its lease connection is open
            assert len(_databases(dsn, unleased)) == 2  # no lease (an older version): not ours to judge
        finally:
            later.close()
    finally:
        for proc in runs.values():
            proc.kill()
            proc.wait(30)
            if proc.stdout is not None:
                proc.stdout.close()
        for run_id in runs:
            _cleanup(dsn, run_id)


def _lease_open(dsn: str, run_id: str) -> bool:
    import asyncpg

    async def look() -> bool:
        conn = await asyncpg.connect(dsn)
        try:
            return bool(await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                                            f"agentmem-run-{run_id}"))
        finally:
            await conn.close()

    return asyncio.run(look())


def test_a_lease_ends_with_the_janitor(agentmem_services) -> None:  # type: ignore[no-untyped-def]
    dsn = agentmem_services.postgres.dsn
    janitor = PostgresJanitor(dsn, setup_sql=(), lease=True)
    assert _lease_open(dsn, janitor.run_id)
    janitor.close()
    assert not _lease_open(dsn, janitor.run_id) and not _databases(dsn, janitor.run_id)


@pytest.mark.parametrize("name", ["agentmem_zz_x", "agentmem_0123abcd", "other_0123abcd_tpl"])
def test_only_our_names_are_read_as_runs(name: str) -> None:
    from pytest_agentmem.services.janitor import _OURS

    assert not _OURS.match(name)
