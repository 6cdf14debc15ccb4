"""Service fixtures: the provisioned servers, an isolated database, pools and clients.

Fixtures are built by factories (as pytest-postgresql does), so a conftest can
make its own variants, e.g. a pool with a bigger ``max_size`` or a template
database with a schema::

    from pytest_agentmem.services.fixtures import pg_database_fixture, pg_pool_fixture

    schema_db = pg_database_fixture(setup_sql=("CREATE EXTENSION vector", "CREATE TABLE t (...)"))
    big_pool = pg_pool_fixture(database="schema_db", max_size=64)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from ..errors import ServiceStartError
from ..evidence.sources import watch_pool, watch_redis
from .base import RunningService
from .janitor import with_database
from .manager import ServiceManager
from .plugin import service_manager, stop_run_message
from .redis_lease import preferred_db, with_db

DEFAULT_SETUP_SQL = ("CREATE EXTENSION IF NOT EXISTS vector",)
#: Seconds a ``redis_client`` waits to connect and for each reply before it raises
#: ``redis.exceptions.TimeoutError``: a stalled Redis fails operations, it never hangs a run.
REDIS_CONNECT_TIMEOUT_S = 2.0
REDIS_SOCKET_TIMEOUT_S = 2.0
#: Retries of a command whose connection failed or timed out (redis-py's own default is 10,
#: which would make a stalled server cost each operation eleven timeouts).
REDIS_RETRIES = 1


@pytest.fixture(scope="session")
def agentmem_services(pytestconfig: pytest.Config) -> ServiceManager:
    """The run's services: ``.postgres`` and ``.redis`` start on first access."""
    return service_manager(pytestconfig)


@pytest.fixture(scope="session")
def agentmem_postgres(agentmem_services: ServiceManager) -> RunningService:
    """The running PostgreSQL with pgvector (``.dsn``, ``.version``, ``.mode``)."""
    return _provisioned(agentmem_services, "postgres")


@pytest.fixture(scope="session")
def agentmem_redis(agentmem_services: ServiceManager) -> RunningService:
    """The running Redis (``.url``, ``.version``, ``.mode``)."""
    return _provisioned(agentmem_services, "redis")


def _provisioned(services: ServiceManager, name: str) -> RunningService:
    """The service, or a test error that shows the message and hint, not our internals

    (a traceback would print the URL, password included, as a frame argument)."""
    try:
        return services.get(name)
    except ServiceStartError as exc:
        failure = exc
    # Raised outside the except block: no "during handling of the above exception" twin.
    if getattr(failure, "fatal", False):
        _stop_run(services, failure)
    pytest.fail(f"{type(failure).__name__}: {failure}", pytrace=False)


def _stop_run(services: ServiceManager, exc: ServiceStartError) -> None:
    """The run cannot measure anything: stop it with this one error.

    A pytest-xdist worker cannot stop the run (the controller would start a
    new worker, and a new server, in its place): there the first test fails
    with the whole message and later ones point back to it.
    """
    if not services.worker_id:
        pytest.exit(stop_run_message(exc), returncode=pytest.ExitCode.INTERRUPTED)
    if getattr(exc, "reported", False):
        pytest.fail(f"{type(exc).__name__} (see the first error of worker {services.worker_id}): "
                    f"{str(exc).splitlines()[0]}", pytrace=False)
    exc.reported = True  # type: ignore[attr-defined]
    pytest.fail(f"{type(exc).__name__}: {exc}", pytrace=False)


def pg_database_fixture(*, setup_sql: tuple[str, ...] = DEFAULT_SETUP_SQL,
                        scope: str = "function") -> Callable[..., Any]:
    """Make a fixture giving the DSN of a fresh database cloned from a template.

    The template is built once per session from ``setup_sql``; each test gets
    its own clone, dropped after the test.
    """

    @pytest.fixture(scope=scope)  # type: ignore[call-overload]
    def database(agentmem_postgres: RunningService, agentmem_services: ServiceManager) -> Iterator[str]:
        keeper = agentmem_services.janitor(setup_sql)
        name = keeper.create_database()
        try:
            yield with_database(agentmem_postgres.dsn, name)
        finally:
            keeper.drop_database(name)

    return database


def pg_pool_fixture(*, database: str = "pg_database", min_size: int = 1, max_size: int = 16,
                    command_timeout: float = 60.0) -> Callable[..., Any]:
    """Make an async fixture giving an asyncpg pool with the pgvector codec registered.

    numpy arrays bind directly to ``vector`` parameters. ``max_size`` 16 suits a
    2-core machine: more Postgres backends than a few per core only add context
    switches; raise it for load tests against bigger servers.
    """

    @pytest_asyncio.fixture
    async def pool(request: pytest.FixtureRequest, agentmem_postgres: RunningService) -> AsyncIterator[Any]:
        import asyncpg
        from pgvector.asyncpg import register_vector

        dsn: str = request.getfixturevalue(database)
        created = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size,
                                            command_timeout=command_timeout, init=register_vector)
        watch_pool(request.node, created, request.fixturename or "pg_pool")  # statements, connections
        try:
            yield created
        finally:
            await created.close()

    return pool


def redis_client_fixture(*, decode_responses: bool = False,
                         socket_timeout: float | None = REDIS_SOCKET_TIMEOUT_S,
                         connect_timeout: float | None = REDIS_CONNECT_TIMEOUT_S,
                         retries: int = REDIS_RETRIES) -> Callable[..., Any]:
    """Make an async fixture giving a ``redis.asyncio`` client on an emptied database.

    ``connect_timeout`` and ``socket_timeout`` (seconds, default
    :data:`REDIS_CONNECT_TIMEOUT_S` and :data:`REDIS_SOCKET_TIMEOUT_S`) bound the wait
    for a connection and for each reply: an operation on a stalled server raises
    ``redis.exceptions.TimeoutError`` and counts as an error instead of hanging the
    run. ``None`` waits for ever (not advised). A command whose connection fails or
    times out is retried ``retries`` times on a new connection (a restarted server
    is reached again at once), so a stalled server fails an operation after at most
    about ``(retries + 1) * socket_timeout`` seconds.
    """

    @pytest_asyncio.fixture
    async def client(request: pytest.FixtureRequest, agentmem_redis: RunningService,
                     pytestconfig: pytest.Config) -> AsyncIterator[Any]:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        url = service_manager(pytestconfig).redis_test_url()
        created = aioredis.Redis.from_url(url, decode_responses=decode_responses,
                                          socket_timeout=socket_timeout,
                                          socket_connect_timeout=connect_timeout,
                                          retry=Retry(NoBackoff(), retries))
        await created.flushdb()
        watch_redis(request.node, created, request.fixturename or "redis_client")  # INFO commandstats
        try:
            yield created
        finally:
            await created.aclose()

    return client


def isolated_redis_url(service: RunningService, worker_id: str) -> str:
    """The database this process would prefer to empty and use.

    Servers we start belong to this process alone: database 0. On an external
    server each pytest-xdist worker prefers the URL's database plus its index;
    the database it actually uses is leased for the run (see
    :mod:`.redis_lease` and :meth:`ServiceManager.redis_test_url`).
    """
    if service.mode != "external" or not worker_id:
        return service.url
    return with_db(service.url, preferred_db(service.url, worker_id))


# --------------------------------------------------------------------------- defaults

pg_database = pg_database_fixture()
pg_pool = pg_pool_fixture()
redis_client = redis_client_fixture()
