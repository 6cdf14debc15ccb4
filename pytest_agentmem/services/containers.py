"""Postgres and Redis in containers via Testcontainers, when a Docker engine answers.

Images: ``$AGENTMEM_POSTGRES_IMAGE`` (default ``pgvector/pgvector:pg17``) and
``$AGENTMEM_REDIS_IMAGE`` (default ``redis:7-alpine``), read when a container
starts. Where no registry is reachable, build local ones with
``python -m pytest_agentmem.services.images ensure`` (see ``images.py``).

The Postgres container gets a random password per run; with a local engine both
containers publish their port on 127.0.0.1 only and we connect there (with a
remote engine, or ``TC_HOST`` set, Testcontainers' own host and port are used).

Cleanup without Ryuk (its image cannot be pulled everywhere, so it is disabled
unless ``TESTCONTAINERS_RYUK_DISABLED`` says otherwise): every container carries
the labels of its run (:data:`LABEL_RUN`, the owner's pid and host), and

1. the run removes its containers when it ends: normally, on failure, on Ctrl-C
   and on SIGTERM (the plugin turns it into KeyboardInterrupt), and at exit;
2. a reaper process (``python -m pytest_agentmem.services.reaper``) waits on a
   pipe from pytest and removes the run's containers when the pipe closes, which
   also happens when pytest is killed outright (SIGKILL);
3. the next run sweeps labelled containers whose run is gone.

"Gone" is judged by a heartbeat, the one signal every run sharing an engine can
read: the reaper writes the time into each of the run's containers
(:data:`HEARTBEAT_PATH`) every :data:`HEARTBEAT_S` seconds while the run lives.
A container whose heartbeat (or, before the first, its creation) is older than
:data:`STALE_S` belongs to a dead run. Host names and pids cannot say it: two
jobs in containers that share a Docker socket may have the same host name and
their pids live in separate namespaces.
"""

from __future__ import annotations

import atexit
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ..config import env_default, env_value
from ..errors import ServiceStartError, ServiceUnavailableError
from .base import POSTGRES_TEST_SETTINGS, STATEMENT_SETTINGS, RunningService
from .pg_cluster import new_secret, scram_verifier
from .readiness import wait_until_ready

DEFAULT_POSTGRES_IMAGE: str = env_default("AGENTMEM_POSTGRES_IMAGE")
DEFAULT_REDIS_IMAGE: str = env_default("AGENTMEM_REDIS_IMAGE")
HINT = ('install the extra: pip install "pytest-agentmem[containers]", and make sure a Docker '
        "engine runs; or use --agentmem-services=local")
HINT_IMAGE = ("no registry reachable? build local images with `python -m pytest_agentmem.services.images "
              "ensure` and set AGENTMEM_POSTGRES_IMAGE / AGENTMEM_REDIS_IMAGE as it prints; "
              "or use --agentmem-services=local")

LABEL_RUN = "org.pytest-agentmem.run"
LABEL_PID = "org.pytest-agentmem.pid"
LABEL_PID_STARTED = "org.pytest-agentmem.pid-started"
LABEL_HOST = "org.pytest-agentmem.host"
#: Marks containers kept alive by a heartbeat (containers of older versions have none).
LABEL_HEARTBEAT = "org.pytest-agentmem.heartbeat"
HEARTBEAT_PATH = "/tmp/agentmem-heartbeat"
HEARTBEAT_S = 5.0
#: A heartbeat older than this: the run is dead (a busy machine may delay a few beats).
STALE_S = 90.0
#: Containers of older versions (no heartbeat) are swept only when this old.
LEGACY_MAX_AGE_S = 24 * 3600.0
#: What pytest writes to the reaper's pipe when it removed every container itself.
REAPER_ALL_CLEAN = b"clean\n"

#: Server settings for a test Postgres (as the local mode's): durability off, fast.
POSTGRES_SETTINGS = {**POSTGRES_TEST_SETTINGS, **STATEMENT_SETTINGS}  # the image ships the library
REDIS_ARGS = ["--save", "", "--appendonly", "no", "--bind", "0.0.0.0", "--databases", "64"]
#: The container's variable that carries Redis's password to the shell that starts it.
REDIS_SECRET_ENV = "AGENTMEM_REDIS_SECRET"
#: Disabled in the container as in local mode: commands that reach beyond the data.
REDIS_DISABLED_COMMANDS = ("CONFIG", "MODULE", "DEBUG")


def redis_container_command() -> list[str]:
    """The Redis container's command: a password and no admin commands, neither on a command line.

    Publishing on 127.0.0.1 does not keep other local users or containers off the
    container's bridge address, so the server needs a password. The shell reads it
    from the container's environment, drops the variable, and hands it to
    ``redis-server`` as its config on stdin (a here-document, expanded by the shell
    itself): it appears in no process's command line or environment.
    """
    config = "\n".join(["requirepass ${secret}",
                         *(f'rename-command {name} ""' for name in REDIS_DISABLED_COMMANDS)])
    script = (f'secret="${REDIS_SECRET_ENV}"; unset {REDIS_SECRET_ENV}; '
              f'exec redis-server - {" ".join(_sh_quote(a) for a in REDIS_ARGS)} <<EOF\n{config}\nEOF\n')
    return ["sh", "-c", script.replace("\\n", "\n")]


def _sh_quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


def postgres_image() -> str:
    return str(env_value("AGENTMEM_POSTGRES_IMAGE"))


def redis_image() -> str:
    return str(env_value("AGENTMEM_REDIS_IMAGE"))


def docker_engine_answers(timeout: float = 0.5, host: str | None = None) -> bool:
    """Ping the Docker engine at ``host`` (default ``$DOCKER_HOST``) with ``GET /_ping``; ~2 ms."""
    host = host or os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    parts = urlsplit(host)
    try:
        if parts.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: str | tuple[str, int] = parts.path
        elif parts.scheme in ("tcp", "http"):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (parts.hostname or "127.0.0.1", parts.port or 2375)
        else:
            return False
        with sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(512)
    except OSError:
        return False
    return reply.startswith(b"HTTP/") and b" 200 " in reply.split(b"\r\n", 1)[0]


def _require_testcontainers() -> None:
    if not docker_engine_answers():
        raise ServiceStartError("--agentmem-services=docker but no Docker engine answers",
                                hint="start Docker (or set DOCKER_HOST), or use --agentmem-services=local")
    try:
        import testcontainers  # noqa: F401
    except ImportError:
        raise ServiceStartError("Testcontainers is not installed", hint=HINT) from None
    _disable_ryuk()


def _disable_ryuk() -> None:
    """No Ryuk unless the user asked for it: we clean up ourselves (see the module doc)."""
    if "TESTCONTAINERS_RYUK_DISABLED" in os.environ:
        return
    try:
        from testcontainers.core.config import testcontainers_config

        testcontainers_config.ryuk_disabled = True
    except (ImportError, AttributeError):  # older 4.x read the variable when starting
        os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"


# --------------------------------------------------------------------------- the run's containers


class _Run:
    """This process's containers: labels, the reaper, the sweep of dead runs."""

    def __init__(self) -> None:
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.containers: dict[str, Any] = {}
        self.reaper: subprocess.Popen[bytes] | None = None
        self.swept = False
        self.failed_removals = 0
        self.lock = threading.Lock()

    def labels(self) -> dict[str, str]:
        # pid and host are for people reading `docker ps`; the heartbeat decides liveness
        return {LABEL_RUN: self.id, LABEL_PID: str(os.getpid()), LABEL_HEARTBEAT: "1",
                LABEL_PID_STARTED: _process_started(os.getpid()), LABEL_HOST: socket.gethostname()}

    def prepare(self, client: Any) -> None:
        """Once per process: sweep dead runs' containers, start the reaper."""
        with self.lock:
            if not self.swept:
                self.swept = True
                sweep_dead_runs(client)
            if self.reaper is None or self.reaper.poll() is not None:
                self.reaper = subprocess.Popen(
                    [sys.executable, "-m", "pytest_agentmem.services.reaper", self.id],
                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    start_new_session=True, close_fds=True)

    def remove(self, container: Any) -> None:
        """Remove a container (and its volumes) now; never raises."""
        key = str(id(container))
        self.containers.pop(key, None)
        try:
            container.stop()  # Testcontainers: remove(force=True, v=True)
        except Exception as exc:  # noqa: BLE001 - already gone, or the engine went away
            if "404" not in str(exc) and "No such container" not in str(exc):
                self.failed_removals += 1

    def close(self) -> None:
        """At exit: remove what is left, then let the reaper go.

        When every removal succeeded the reaper is told so (``clean``) and ends at
        once; otherwise it looks for the run's containers itself.
        """
        for container in list(self.containers.values()):
            self.remove(container)
        reaper, self.reaper = self.reaper, None
        if reaper is not None and reaper.stdin is not None:
            try:
                if not self.failed_removals:
                    reaper.stdin.write(REAPER_ALL_CLEAN)
                reaper.stdin.close()
                reaper.wait(15)
            except Exception:  # noqa: BLE001 - best effort at interpreter exit
                pass


_RUN = _Run()
atexit.register(_RUN.close)


def run_id() -> str:
    """The label value that marks this process's containers (:data:`LABEL_RUN`)."""
    return _RUN.id


def _process_started(pid: int) -> str:
    import psutil

    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except psutil.Error:
        return ""


def write_heartbeat(container: Any, now: float | None = None) -> bool:
    """Write the time (``now``, default the current one) into ``container``; False if it failed."""
    import io
    import tarfile

    now = time.time() if now is None else now
    data = f"{now:.3f}\n".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(os.path.basename(HEARTBEAT_PATH))
        info.size, info.mtime, info.mode = len(data), int(now), 0o644
        tar.addfile(info, io.BytesIO(data))
    try:
        return bool(container.put_archive(os.path.dirname(HEARTBEAT_PATH), buffer.getvalue()))
    except Exception:  # noqa: BLE001 - removed meanwhile, or the engine went away
        return False


def last_sign_of_life(container: Any) -> float | None:
    """The container's heartbeat, else its creation time (seconds since the epoch); None if unknown."""
    import io
    import tarfile

    try:
        stream, _ = container.get_archive(HEARTBEAT_PATH)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.extractfile(os.path.basename(HEARTBEAT_PATH))
            if member is not None:
                return float(member.read().decode().strip())
    except Exception:  # noqa: BLE001 - no heartbeat yet (NotFound), or a damaged one
        pass
    return _created(container)


def _created(container: Any) -> float | None:
    from datetime import datetime

    text = str((container.attrs or {}).get("Created", ""))
    if not text:
        return None
    # "2026-12-06T08:40:00.123456789Z": at most microseconds for fromisoformat
    head, _, frac = text.rstrip("Z").partition(".")
    try:
        stamp = datetime.fromisoformat(head + "+00:00").timestamp()
    except ValueError:
        return None
    return stamp + (float("0." + frac[:6]) if frac[:6].isdigit() else 0.0)


def run_is_dead(container: Any, now: float | None = None) -> bool:
    """Whether the run ``container`` belongs to has stopped beating (see the module doc)."""
    now = time.time() if now is None else now
    labels = container.labels or {}
    if labels.get(LABEL_RUN) == _RUN.id:
        return False
    if labels.get(LABEL_HEARTBEAT) != "1":  # an older version's: no heartbeat to judge by
        created = _created(container)
        return created is not None and now - created > LEGACY_MAX_AGE_S
    last = last_sign_of_life(container)
    return last is not None and now - last > STALE_S


def sweep_dead_runs(client: Any) -> int:
    """Remove our labelled containers whose run stopped beating; return how many."""
    removed = 0
    try:
        found = client.containers.list(all=True, filters={"label": LABEL_RUN}, ignore_removed=True)
    except Exception:  # noqa: BLE001
        return 0
    for container in found:
        if not run_is_dead(container):
            continue
        try:
            container.remove(force=True, v=True)
            removed += 1
        except Exception:  # noqa: BLE001 - removed meanwhile by its own reaper
            pass
    return removed


# --------------------------------------------------------------------------- starting


def _engine_is_local(client: Any) -> bool:
    """True when the engine runs on this host, in our network namespace: publish on loopback."""
    if os.environ.get("TC_HOST") or os.environ.get("TESTCONTAINERS_HOST_OVERRIDE"):
        return False
    parts = urlsplit(os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
    if parts.scheme not in ("unix", "") and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        return False
    try:
        return str(client.info().get("Name", "")) == socket.gethostname()
    except Exception:  # noqa: BLE001
        return False


def _hint_broken(image: str) -> str:
    return (f"the image {image} did not run the server (see its log above): check "
            "AGENTMEM_POSTGRES_IMAGE / AGENTMEM_REDIS_IMAGE, rebuild the local images with "
            "`python -m pytest_agentmem.services.images build`, or use --agentmem-services=local")


def _image_user(client: Any, image: str) -> str:
    """The account ``image`` runs its command as ("" for root, or when unknown)."""
    try:
        return str(client.images.get(image).attrs.get("Config", {}).get("User") or "")
    except Exception:  # noqa: BLE001 - not pulled yet: the start says what is missing
        return ""


def _image_present(client: Any, image: str) -> bool:
    try:
        client.images.get(image)
    except Exception:  # noqa: BLE001 - ImageNotFound, or the engine went away
        return False
    return True


def _log_tail(container: Any, lines: int = 30) -> str:
    try:
        return str(container.get_wrapped_container().logs(tail=lines).decode(errors="replace"))
    except Exception:  # noqa: BLE001
        return ""


def _running(container: Any) -> bool:
    try:
        wrapped = container.get_wrapped_container()
        wrapped.reload()
        return wrapped.status in ("created", "running")
    except Exception:  # noqa: BLE001
        return False


class _Started:
    """A started container: how to reach its port, and its main process if we can see it."""

    def __init__(self, container: Any, host: str, port: int, pid: int | None) -> None:
        self.container, self.host, self.port, self.pid = container, host, port, pid


def _start(image: str, port: int, *, command: list[str], env: dict[str, str],
           default_user: str | None = None) -> _Started:
    """Start ``image`` labelled with this run, publishing ``port``.

    ``default_user``: the account to run as when the image names none (it would run as root).
    """
    from testcontainers.core.container import DockerContainer

    # The builder methods, not constructor keywords: testcontainers 4.4 passes those to
    # docker as extra keywords, which with_kwargs below then replaces (the container ran
    # the image's default command with no environment).
    container = DockerContainer(image).with_command(command)  # type: ignore[arg-type]
    for key, value in env.items():
        container.with_env(key, value)
    client = container.get_docker_client().client
    _RUN.prepare(client)
    local = _engine_is_local(client)
    extra: dict[str, Any] = {}
    if default_user and not _image_user(client, image):
        extra["user"] = default_user
    container.with_kwargs(labels=_RUN.labels(), shm_size="256m", **extra)
    # Loopback only with a local engine; else the engine's default (Testcontainers connects to its host).
    container.ports[f"{port}/tcp"] = ("127.0.0.1",) if local else None  # type: ignore[assignment]
    key = str(id(container))
    _RUN.containers[key] = container
    try:
        container.start()
        write_heartbeat(container.get_wrapped_container())  # the reaper beats from now on
    except Exception as exc:  # noqa: BLE001 - the docker SDK raises many kinds
        tail = _log_tail(container)
        _RUN.remove(container)
        hint = HINT if _image_present(client, image) else HINT_IMAGE
        raise ServiceStartError(f"could not start container {image}: {exc}", hint=hint, log_tail=tail) from None
    try:
        wrapped = container.get_wrapped_container()
        wrapped.reload()
        if wrapped.status != "running":
            tail = _log_tail(container)
            code = wrapped.attrs["State"].get("ExitCode")
            _RUN.remove(container)
            raise ServiceStartError(f"container {image} did not become ready: it exited (code {code})",
                                    hint=_hint_broken(image), log_tail=tail)
        if local:
            binding = wrapped.attrs["NetworkSettings"]["Ports"][f"{port}/tcp"][0]
            host, host_port = "127.0.0.1", int(binding["HostPort"])
        else:
            host, host_port = container.get_container_host_ip(), int(container.get_exposed_port(port))
        pid = int(wrapped.attrs["State"].get("Pid") or 0) if local else 0
    except ServiceStartError:
        raise
    except Exception as exc:  # noqa: BLE001
        tail = _log_tail(container)
        _RUN.remove(container)
        raise ServiceStartError(f"container {image} started but its port {port} is not published: {exc}",
                                hint=HINT, log_tail=tail) from None
    return _Started(container, host, host_port, pid if pid and _visible(pid) else None)


def _visible(pid: int) -> bool:
    """The container's process is in our pid namespace (so the CPU sampler can read it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ready(started: _Started, image: str, attach: Callable[[], RunningService], timeout: float,
           began: float) -> RunningService:
    """Wait for the server in ``started`` to answer; describe it, or remove it and say why."""
    try:
        attached = wait_until_ready(attach, timeout=timeout, transient=(ServiceUnavailableError,),
                                    still_alive=lambda: _running(started.container),
                                    interval=0.1, max_interval=0.5)
    except (TimeoutError, ChildProcessError) as exc:
        tail = _log_tail(started.container)
        _RUN.remove(started.container)
        cause = exc.__cause__ or exc
        raise ServiceStartError(f"container {image} did not become ready: {cause}",
                                hint=_hint_broken(image), log_tail=tail) from None
    attached.mode = "docker"
    attached.stop = lambda: _RUN.remove(started.container)
    attached.pids = (started.pid,) if started.pid else ()
    attached.startup_s = time.perf_counter() - began
    return attached


def start_postgres_container(*, timeout: float = 60.0) -> RunningService:
    """A Postgres+pgvector container; removed at the end of the run."""
    _require_testcontainers()
    from .external import attach_postgres

    image = postgres_image()
    began = time.perf_counter()
    # The image's entrypoint wants the password in the container's environment, which its
    # server processes keep (readable on this host by any process of the same uid). So
    # that one only lets us in once: the first connection replaces it with the secret of
    # the run, sent as a SCRAM verifier (as for local servers, see pg_cluster).
    initial = secrets.token_hex(12)
    command = ["postgres"] + [arg for key, value in POSTGRES_SETTINGS.items() for arg in ("-c", f"{key}={value}")]
    started = _start(image, 5432, command=command,
                     env={"POSTGRES_USER": "postgres", "POSTGRES_PASSWORD": initial, "POSTGRES_DB": "postgres"})
    where = f"{started.host}:{started.port}/postgres"
    initial_url = f"postgresql://postgres:{initial}@{where}"
    secret = new_secret()
    url = f"postgresql://postgres:{secret}@{where}"
    replaced: list[bool] = []

    def attach() -> RunningService:
        if not replaced:
            attach_postgres(initial_url, timeout=5.0)  # answers, with pgvector
            _replace_password(initial_url, secret)
            replaced.append(True)
        return attach_postgres(url, timeout=5.0)

    return _ready(started, image, attach, timeout, began)


def _replace_password(url: str, secret: str) -> None:
    """Give the server's ``postgres`` role the password ``secret`` (only its SCRAM verifier is sent)."""
    import asyncpg

    from ._sync import run_sync

    async def replace() -> None:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            verifier = scram_verifier(secret).replace("'", "")
            await conn.execute(f"ALTER ROLE postgres PASSWORD '{verifier}'")
        finally:
            await conn.close()

    try:
        run_sync(replace())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ServiceUnavailableError(f"could not set the server's password: {type(exc).__name__}") from None


def start_redis_container(*, timeout: float = 60.0) -> RunningService:
    """A Redis container; removed at the end of the run."""
    _require_testcontainers()
    from .external import attach_redis

    image = redis_image()
    began = time.perf_counter()
    secret = secrets.token_urlsafe(24)
    # Not as root: the official image's entrypoint drops to its redis account only for a
    # command that starts with redis-server, and ours starts with sh (our local image
    # names its account itself).
    started = _start(image, 6379, command=redis_container_command(), env={REDIS_SECRET_ENV: secret},
                     default_user="redis")
    url = f"redis://:{secret}@{started.host}:{started.port}/0"
    return _ready(started, image, lambda: attach_redis(url, timeout=2.0), timeout, began)
