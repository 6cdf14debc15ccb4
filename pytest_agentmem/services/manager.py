"""Choose how each service is provisioned, start it on first use, stop it at the end."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from ..config import ServiceMode, Settings
from ..errors import ServiceStartError
from .base import RunningService
from .janitor import PostgresJanitor, new_run_id
from .redis_lease import RedisLease, preferred_db, with_db

SERVICES = ("postgres", "redis")

#: The internal session fixtures through which every fixture reaches a service;
#: a test whose fixture closure holds one of them needs that service.
SERVICE_FIXTURES = {"postgres": "agentmem_postgres", "redis": "agentmem_redis"}


class ServiceManager:
    """Provisions Postgres and Redis lazily, once per process, and stops them.

    Mode per service: ``external`` when its URL is given (or the mode says so),
    ``docker`` when the mode says so or (``auto``) a Docker engine answers a
    ping, else ``local`` (servers launched from the embedded binaries). A
    failure to start is remembered and raised again for every test that needs
    the service, instead of being retried for each.
    """

    def __init__(self, settings: Settings, *, worker_id: str = "") -> None:
        self.settings = settings
        self.worker_id = worker_id
        self._running: dict[str, RunningService] = {}
        self._failed: dict[str, ServiceStartError] = {}
        self._lock = threading.RLock()
        self._docker: bool | None = None
        self._janitors: dict[tuple[str, ...], PostgresJanitor] = {}
        #: Names this run's databases (and Redis lease) on shared servers; random, not the pid.
        self.run_id = new_run_id()
        self._redis_lease: RedisLease | None = None

    # ------------------------------------------------------------------ queries

    @staticmethod
    def needs_of(fixturenames: Iterable[str]) -> set[str]:
        """The services a test with these fixtures needs."""
        names = set(fixturenames)
        return {svc for svc, fixture in SERVICE_FIXTURES.items() if fixture in names}

    @property
    def running(self) -> dict[str, RunningService]:
        """The services started (or attached) so far, by name."""
        return dict(self._running)

    def mode_for(self, name: str) -> str:
        """The way ``name`` is (or would be) provisioned: local, docker or external."""
        mode = self.settings.services
        url = self._url_of(name)
        if mode == ServiceMode.EXTERNAL or (mode == ServiceMode.AUTO and url):
            return ServiceMode.EXTERNAL.value
        if mode == ServiceMode.DOCKER or (mode == ServiceMode.AUTO and self._docker_answers()):
            return ServiceMode.DOCKER.value
        return ServiceMode.LOCAL.value

    @property
    def mode(self) -> str:
        """How the services run: ``local``, or ``postgres=external, redis=local`` when mixed."""
        modes = {name: self.mode_for(name) for name in SERVICES}
        if len(set(modes.values())) == 1:
            return next(iter(modes.values()))
        return ", ".join(f"{name}={mode}" for name, mode in modes.items())

    def describe(self) -> str:
        """One line for the terminal: what runs, how, and how long it took to start."""
        parts = [svc.describe() for svc in self._running.values()]
        parts += [f"{name} FAILED to start ({self.mode_for(name)})" for name in self._failed]
        return "agentmem: " + (", ".join(parts) if parts else "no services started")

    # ------------------------------------------------------------------ lifecycle

    def get(self, name: str) -> RunningService:
        """The running service ``name``, started now if needed."""
        __tracebackhide__ = True
        if name not in SERVICES:
            raise ValueError(f"unknown service {name!r}; known: {', '.join(SERVICES)}")
        with self._lock:
            if name in self._running:
                return self._running[name]
            if name in self._failed:
                raise self._failed[name]
            try:
                service = self._start(name)
                if name == "postgres":
                    self._check_pgvector(service)
            except ServiceStartError as exc:
                self._failed[name] = exc
                raise
            self._running[name] = service
            return service

    @property
    def postgres(self) -> RunningService:
        return self.get("postgres")

    @property
    def redis(self) -> RunningService:
        return self.get("redis")

    def prestart(self, names: Iterable[str]) -> None:
        """Start ``names`` now; failures are kept and raised by the fixtures later."""
        for name in sorted(names):
            try:
                self.get(name)
            except ServiceStartError:
                pass

    def redis_test_url(self) -> str:
        """URL of the Redis database this process's tests use (and empty).

        A server we started is ours alone (database 0). On an external server the
        database is leased for the run, so that other runs sharing the server
        never empty it (see :mod:`.redis_lease`).
        """
        service = self.redis
        if service.mode != "external":
            return service.url
        with self._lock:
            if self._redis_lease is None:
                self._redis_lease = RedisLease(service.url, self.run_id,
                                               first_db=preferred_db(service.url, self.worker_id))
            return with_db(service.url, self._redis_lease.acquire())

    def fatal_error(self) -> ServiceStartError | None:
        """A start failure that makes the whole run pointless (pgvector crashes), if any."""
        return next((exc for exc in self._failed.values() if getattr(exc, "fatal", False)), None)

    def janitor(self, setup_sql: tuple[str, ...]) -> PostgresJanitor:
        """The template-database keeper for ``setup_sql`` (built on first use)."""
        with self._lock:
            if setup_sql not in self._janitors:
                self._janitors[setup_sql] = PostgresJanitor(
                    self.postgres.dsn, setup_sql=setup_sql, tag=f"j{len(self._janitors)}",
                    run_id=self.run_id, lease=self.postgres.mode == "external")
            return self._janitors[setup_sql]

    def stop_all(self) -> None:
        """Drop our databases, then stop every service we started; never raises."""
        with self._lock:
            for keeper in self._janitors.values():
                keeper.close()
            self._janitors.clear()
            if self._redis_lease is not None:
                try:
                    self._redis_lease.release()
                except Exception:  # noqa: BLE001 - the server may be gone already
                    pass
                self._redis_lease = None
            for name in list(self._running):
                service = self._running.pop(name)
                try:
                    service.stop()
                except Exception:  # noqa: BLE001 - teardown must reach every service
                    pass

    # ------------------------------------------------------------------ internals

    def _url_of(self, name: str) -> str | None:
        return self.settings.postgres_url if name == "postgres" else self.settings.redis_url

    @staticmethod
    def _check_pgvector(service: RunningService) -> None:
        """Run pgvector's self-check once on a new server; stop the server if it fails."""
        __tracebackhide__ = True
        from .pgvector_check import check_pgvector

        where = f"postgres {service.version} ({', '.join(filter(None, (service.mode, service.source)))})"
        try:
            check_pgvector(service.dsn, where=where, library=service.vector_library,
                           server_log=service.logs)
        except ServiceStartError:
            service.stop()
            raise

    def _docker_answers(self) -> bool:
        if self._docker is None:
            from .containers import docker_engine_answers

            self._docker = docker_engine_answers()
        return self._docker

    def _start(self, name: str) -> RunningService:
        __tracebackhide__ = True
        mode = self.mode_for(name)
        timeout = float(self.settings.service_timeout)
        if mode == ServiceMode.EXTERNAL:
            from .external import attach_postgres, attach_redis

            url = self._url_of(name)
            if not url:
                flag = f"--agentmem-{name}-url"
                raise ServiceStartError(
                    f"--agentmem-services=external but no URL for {name}",
                    hint=f"pass {flag} URL (or set AGENTMEM_{name.upper()}_URL), "
                         "or use --agentmem-services=auto",
                )
            attach = attach_postgres if name == "postgres" else attach_redis
            return attach(url, timeout=timeout)
        if mode == ServiceMode.DOCKER:
            from .containers import start_postgres_container, start_redis_container

            start = start_postgres_container if name == "postgres" else start_redis_container
            return start(timeout=timeout)
        from .local_postgres import start_local_postgres
        from .local_redis import start_local_redis

        start = start_local_postgres if name == "postgres" else start_local_redis
        return start(timeout=timeout)
