"""Locked-down local servers, private caches, run ids on shared servers (integration)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

from pytest_agentmem.services.cache_dirs import is_trusted, user_cache_root
from pytest_agentmem.services.janitor import PostgresJanitor
from pytest_agentmem.services.pg_install import installation_for, locate_postgres
from pytest_agentmem.services.redis_lease import RedisLease, with_db

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second local account")


def _local(service):  # type: ignore[no-untyped-def]
    if service.mode != "local":
        pytest.skip(f"the {service.name} of this run is {service.mode}, not started by the plugin")
    return service


def _as_nobody(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    nobody = pwd.getpwnam("nobody")

    def drop() -> None:
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    return subprocess.run(argv, capture_output=True, text=True, preexec_fn=drop, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/"}, cwd="/", **kwargs)  # type: ignore[call-overload]


def _secret(url: str) -> str:
    secret = urlsplit(url).password
    assert secret and len(secret) >= 32
    return secret


def _command_lines(service) -> list[str]:  # type: ignore[no-untyped-def]
    return [" ".join(argv) for argv in _each_process(service, psutil.Process.cmdline)]


def _each_process(service, read):  # type: ignore[no-untyped-def]
    """``read(process)`` of each of the service's processes that still runs when read.

    A Postgres backend of a connection just closed is listed, then exits before its
    command line is read (psutil.NoSuchProcess): it has nothing left to show.
    """
    values = []
    for pid in service.process_ids():
        try:
            values.append(read(psutil.Process(pid)))
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return values


def test_a_process_that_exits_between_listing_and_reading_is_left_out() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    with subprocess.Popen(["sleep", "30"]) as live:
        try:
            # a child just started may still be in exec: its command line reads empty for a
            # moment (seen once in a full run); wait until it is sleep's
            deadline = time.monotonic() + 10
            while psutil.Process(live.pid).cmdline() != ["sleep", "30"] and time.monotonic() < deadline:
                time.sleep(0.01)

            class Listed:
                def process_ids(self) -> list[int]:
                    return [gone.pid, live.pid]

            assert _command_lines(Listed()) == ["sleep 30"]
        finally:
            live.kill()


# ----------------------------------------------------------------------------- Postgres


def test_postgres_refuses_a_login_without_its_secret(agentmem_services) -> None:  # type: ignore[no-untyped-def]
    import asyncpg

    postgres = _local(agentmem_services.postgres)
    port = urlsplit(postgres.dsn).port

    async def attempts() -> None:
        conn = await asyncpg.connect(postgres.dsn)
        assert await conn.fetchval("SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid "
                                   "WHERE rolname = 'postgres'")
        hba = await conn.fetch("SELECT type, auth_method FROM pg_hba_file_rules")
        await conn.close()
        assert {r["auth_method"] for r in hba} == {"scram-sha-256"}
        for dsn in (f"postgresql://postgres@127.0.0.1:{port}/postgres",
                    f"postgresql://postgres:wrong@127.0.0.1:{port}/postgres"):
            with pytest.raises(asyncpg.InvalidPasswordError):
                await asyncpg.connect(dsn)

    asyncio.run(attempts())
    secret = _secret(postgres.dsn)
    assert all(secret not in line for line in _command_lines(postgres))
    assert secret not in postgres.safe_url and secret not in postgres.describe()


@root_only
def test_another_local_account_cannot_log_in_to_postgres(agentmem_services) -> None:  # type: ignore[no-untyped-def]
    postgres = _local(agentmem_services.postgres)
    install = installation_for(locate_postgres(), True, user_cache_root())  # a psql nobody can run
    port = str(urlsplit(postgres.dsn).port)
    ran = _as_nobody([str(install.bindir / "psql"), "-h", "127.0.0.1", "-p", port, "-U", "postgres",
                      "-w", "-d", "postgres", "-c", "SELECT 1"])
    assert ran.returncode != 0, ran.stdout
    assert "password" in ran.stderr, ran.stderr


def test_each_server_gets_its_own_secret(agentmem_services) -> None:  # type: ignore[no-untyped-def]
    from pytest_agentmem.services.local_postgres import start_local_postgres

    first = _local(agentmem_services.postgres)
    second = start_local_postgres()
    try:
        assert _secret(second.dsn) != _secret(first.dsn)
    finally:
        second.stop()


# ----------------------------------------------------------------------------- Redis


def test_redis_refuses_without_its_secret_and_disables_admin_commands(agentmem_services) -> None:  # type: ignore[no-untyped-def]
    import redis

    service = _local(agentmem_services.redis)
    parts = urlsplit(service.url)
    anonymous = redis.Redis(host="127.0.0.1", port=parts.port, protocol=2)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    client = redis.Redis.from_url(with_db(service.url, 63))
    try:
        assert client.ping()
        for command in (("CONFIG", "SET", "dir", "/tmp"), ("MODULE", "LIST"), ("DEBUG", "SLEEP", "0")):
            with pytest.raises(redis.ResponseError, match="unknown command"):
                client.execute_command(*command)
    finally:
        client.close()
    secret = _secret(service.url)
    assert all(secret not in line for line in _command_lines(service))
    config = Path(service.workdir) / "redis.conf"
    server_uid = psutil.Process(service.pids[0]).uids().effective
    assert stat.S_IMODE(config.stat().st_mode) == 0o600 and config.stat().st_uid == server_uid


@root_only
def test_another_local_account_cannot_use_redis(agentmem_services) -> None:  # type: ignore[no-untyped-def]
    service = _local(agentmem_services.redis)
    port = urlsplit(service.url).port
    script = (f"exec 3<>/dev/tcp/127.0.0.1/{port}; printf 'PING\\r\\nCONFIG GET dir\\r\\n' >&3; "
              "read -t 2 a <&3; read -t 2 b <&3; echo \"$a\"; echo \"$b\"")
    ran = _as_nobody(["bash", "-c", script])
    assert ran.stdout.startswith("-NOAUTH"), ran.stdout + ran.stderr
    assert "PONG" not in ran.stdout


# ----------------------------------------------------------------------------- caches


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="agentmem-test-base-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_cache_root_is_per_user_and_private(base: Path) -> None:
    root = user_cache_root(base)
    assert root == base / f"agentmem-cache-{os.geteuid()}"
    info = os.lstat(root)
    assert info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) == 0o711
    assert user_cache_root(base) == root  # reused when it passes the checks


@root_only
def test_a_cache_root_planted_by_another_user_is_not_used(base: Path) -> None:
    planted = base / f"agentmem-cache-{os.geteuid()}"
    planted.mkdir()
    nobody = pwd.getpwnam("nobody")
    os.chown(planted, nobody.pw_uid, nobody.pw_gid)
    root = user_cache_root(base)
    assert root != planted and is_trusted(root)


def test_a_symlinked_or_writable_cache_root_is_not_used(base: Path) -> None:
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    (base / f"agentmem-cache-{os.geteuid()}").symlink_to(elsewhere)
    root = user_cache_root(base)
    assert root != base / f"agentmem-cache-{os.geteuid()}" and not root.is_symlink()
    writable = user_cache_root(base)
    writable.chmod(0o777)
    assert not is_trusted(writable)


@root_only
def test_a_planted_installation_is_never_run(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another account plants a cache root with a trojan 'postgres': the start ignores it."""
    from pytest_agentmem.services.local_postgres import start_local_postgres
    from pytest_agentmem.services.pg_install import copy_installation

    monkeypatch.setattr(tempfile, "tempdir", str(base))
    monkeypatch.delenv("AGENTMEM_PG_BINDIR", raising=False)
    planted = base / f"agentmem-cache-{os.geteuid()}"
    planted.mkdir()
    decoy = copy_installation(locate_postgres(), planted)  # the layout a real cache has
    marker = base / "trojan-ran"
    for name in ("postgres", "initdb"):
        trojan = decoy.bindir / name
        trojan.unlink()
        trojan.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
        trojan.chmod(0o755)
    nobody = pwd.getpwnam("nobody")
    for path in (planted, *planted.rglob("*")):
        os.lchown(path, nobody.pw_uid, nobody.pw_gid)
    service = start_local_postgres()
    try:
        assert not marker.exists()
        exes = _each_process(service, psutil.Process.exe)
        assert exes and not [e for e in exes if e.startswith(str(planted) + os.sep)]
    finally:
        service.stop()


# ----------------------------------------------------------------------------- run ids


def test_two_runs_with_the_same_pid_keep_their_own_databases(agentmem_services) -> None:  # type: ignore[no-untyped-def]
    """Janitor names carry a random run id: two runs in containers with the same pid don't collide."""
    dsn = agentmem_services.postgres.dsn
    first = PostgresJanitor(dsn, tag="j0")
    second = PostgresJanitor(dsn, tag="j0")  # same pid, same tag: a second run on the same server
    try:
        assert first.template != second.template
        name = first.create_database()  # the first run's template survived the second's start
        first.drop_database(name)
    finally:
        second.close()
        first.close()


def test_runs_sharing_a_redis_lease_different_databases(agentmem_services) -> None:  # type: ignore[no-untyped-def]
    url = with_db(agentmem_services.redis.url, 40)
    first = RedisLease(url, "run-a", first_db=40)
    second = RedisLease(url, "run-b", first_db=40)
    try:
        assert first.acquire() == 40
        assert second.acquire() == 41
        first.release()  # a run that ends (or dies) frees its database
        third = RedisLease(url, "run-c", first_db=40)
        assert third.acquire() == 40
        third.release()
    finally:
        first.release()
        second.release()


def test_an_external_redis_database_is_leased_by_the_fixture(
        pytester: pytest.Pytester, service_urls: list[str]) -> None:
    pytester.makepyfile("""
        async def test_db(redis_client, agentmem_services):
            names = [c["name"] for c in await redis_client.client_list()]
            assert "agentmem-lease-" + agentmem_services.run_id in names
    """)
    result = pytester.runpytest(*service_urls)
    result.assert_outcomes(passed=1)
