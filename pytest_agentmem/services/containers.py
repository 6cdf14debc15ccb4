"""Postgres and Redis in containers via Testcontainers, when a Docker engine answers."""

from __future__ import annotations

import os
import socket
import time
from urllib.parse import urlsplit

from ..errors import ServiceStartError
from .base import RunningService

POSTGRES_IMAGE = os.environ.get("AGENTMEM_POSTGRES_IMAGE", "pgvector/pgvector:pg17")
REDIS_IMAGE = os.environ.get("AGENTMEM_REDIS_IMAGE", "redis:7-alpine")
HINT = ('install the extra: pip install "pytest-agentmem[containers]", and make sure a Docker '
        "engine runs; or use --agentmem-services=local")


def docker_engine_answers(timeout: float = 0.5) -> bool:
    """Ping the Docker engine (``GET /_ping``) without any client library; ~2 ms."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
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


def start_postgres_container(*, timeout: float = 60.0) -> RunningService:
    """A pgvector/pgvector container; stopped and removed at the end of the run."""
    _require_testcontainers()
    from testcontainers.postgres import PostgresContainer

    started = time.perf_counter()
    container = PostgresContainer(POSTGRES_IMAGE, username="postgres", password="agentmem",
                                  dbname="postgres", driver=None)
    try:
        container.start()
    except Exception as exc:  # noqa: BLE001 - the docker SDK raises many kinds
        raise ServiceStartError(f"could not start container {POSTGRES_IMAGE}: {exc}", hint=HINT) from None
    url = container.get_connection_url()
    from .external import attach_postgres

    try:
        attached = attach_postgres(url, timeout=timeout)
    except ServiceStartError:
        container.stop()
        raise
    attached.mode, attached.stop = "docker", container.stop
    attached.startup_s = time.perf_counter() - started
    return attached


def start_redis_container(*, timeout: float = 60.0) -> RunningService:
    """A redis container; stopped and removed at the end of the run."""
    _require_testcontainers()
    from testcontainers.redis import RedisContainer

    started = time.perf_counter()
    container = RedisContainer(REDIS_IMAGE)
    try:
        container.start()
    except Exception as exc:  # noqa: BLE001
        raise ServiceStartError(f"could not start container {REDIS_IMAGE}: {exc}", hint=HINT) from None
    host = container.get_container_host_ip()
    port = container.get_exposed_port(6379)
    from .external import attach_redis

    try:
        attached = attach_redis(f"redis://{host}:{port}/0", timeout=timeout)
    except ServiceStartError:
        container.stop()
        raise
    attached.mode, attached.stop = "docker", container.stop
    attached.startup_s = time.perf_counter() - started
    return attached
