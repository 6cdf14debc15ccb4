"""Servers we start share nothing with other accounts of the machine (integration, real servers).

Run as root, each server runs as a uid of its own (no passwd entry, no other process),
with a minimal environment: another account can neither read its environment nor
write its data directory. Ports lost to another process between free_port() and the
server's bind are retried; a work dir is never sweepable while it is being made.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from pytest_agentmem.services import procs
from pytest_agentmem.services.base import RunningService
from pytest_agentmem.services.local_postgres import start_local_postgres
from pytest_agentmem.services.local_redis import start_local_redis

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another local account")
CANARY = "agentmem-canary-Secret-5f3b9c"
STARTERS: dict[str, Callable[[], RunningService]] = {"postgres": start_local_postgres,
                                                       "redis": start_local_redis}


def _as(account: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    entry = pwd.getpwnam(account)

    def drop() -> None:
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)

    return subprocess.run(argv, capture_output=True, text=True, preexec_fn=drop, timeout=30,
                          env={"PATH": "/usr/bin:/bin"}, cwd="/")


def _processes(service: RunningService) -> list[psutil.Process]:
    found = []
    for pid in service.process_ids():
        try:
            proc = psutil.Process(pid)
            proc.uids()
            found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture(params=sorted(STARTERS))
def started(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A fresh local server started while our environment holds a secret (as CI's does)."""
    monkeypatch.setenv("AGENTMEM_TEST_CI_TOKEN", CANARY)
    service = STARTERS[request.param]()
    try:
        yield service
    finally:
        service.stop()


@root_only
def test_another_account_finds_no_secret_of_ours_in_a_servers_environment(started: RunningService) -> None:
    procs_ = _processes(started)
    assert procs_
    for proc in procs_:
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().decode(errors="replace")
        assert CANARY not in environ
        assert {item.split("=", 1)[0] for item in environ.split("\0") if item} <= set(procs.SERVER_ENV)
        for account in ("nobody", "postgres"):
            try:
                pwd.getpwnam(account)
            except KeyError:
                continue
            ran = _as(account, ["cat", f"/proc/{proc.pid}/environ"])
            assert CANARY not in ran.stdout
            assert ran.returncode != 0, f"{account} read the server's environment"


@root_only
def test_a_server_runs_as_a_uid_of_its_own_that_no_other_account_shares(started: RunningService) -> None:
    uids = {proc.uids().effective for proc in _processes(started)}
    assert len(uids) == 1
    uid = uids.pop()
    assert uid != 0 and uid in procs.PRIVATE_UIDS
    with pytest.raises(KeyError):
        pwd.getpwuid(uid)  # no account: nothing else logs in or runs as it
    ours = {proc.pid for proc in _processes(started)}
    others = [p.pid for p in psutil.process_iter(["uids"])
              if p.info["uids"] and p.info["uids"].effective == uid and p.pid not in ours]
    assert not others
    workdir = Path(started.workdir or "")
    if started.name == "postgres":
        hba = workdir / "data" / "pg_hba.conf"
        assert hba.stat().st_uid == uid
        for account in ("nobody", "postgres"):
            ran = _as(account, ["sh", "-c", f"echo 'host all all 0.0.0.0/0 trust' >> {hba}"])
            assert ran.returncode != 0, f"{account} wrote pg_hba.conf"
        assert "trust" not in hba.read_text().split("scram-sha-256")[-1]


@pytest.fixture
def busy_port() -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock, sock.getsockname()[1]
    sock.close()


@pytest.mark.parametrize("kind", sorted(STARTERS))
def test_a_port_taken_before_the_server_binds_it_is_retried(
        kind: str, busy_port: tuple[socket.socket, int], monkeypatch: pytest.MonkeyPatch) -> None:
    _, taken = busy_port
    handed: list[int] = []
    real = procs.free_port

    def racing_free_port() -> int:
        # The first port was free when looked at, and another process bound it since.
        port = taken if not handed else real()
        handed.append(port)
        return port

    monkeypatch.setattr(procs, "free_port", racing_free_port)
    service = STARTERS[kind]()
    try:
        assert handed[0] == taken and len(handed) == 2
        from urllib.parse import urlsplit

        assert urlsplit(service.url).port == handed[1]
        if kind == "redis":
            import redis

            client = redis.Redis.from_url(service.url)
            assert client.ping()
            client.close()
    finally:
        service.stop()


def test_a_work_dir_is_never_sweepable_while_it_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    # Another run sweeps at the worst moment: between the lock file's creation and its lock.
    real_flock = procs.fcntl.flock
    swept: list[int] = []
    sweeping: list[bool] = []

    def flock(fd: int, operation: int) -> None:
        if not sweeping:  # once, and not for the sweep's own locks
            sweeping.append(True)
            swept.append(procs.sweep_stale_workdirs())
        real_flock(fd, operation)

    monkeypatch.setattr(procs.fcntl, "flock", flock)
    workdir = procs.make_workdir("test")
    try:
        assert swept and workdir.is_dir() and (workdir / procs.LOCK_NAME).exists()
        monkeypatch.setattr(procs.fcntl, "flock", real_flock)
        procs.sweep_stale_workdirs()
        assert workdir.is_dir()  # still locked by us
    finally:
        procs.remove_workdir(workdir)
