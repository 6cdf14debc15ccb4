"""Docker mode for real: containers provision, isolate per test and are removed (integration).

Runs where a Docker engine answers: ``$DOCKER_HOST``, else the private engine of
``.ci/docker-engine start`` (``/run/agentmem-docker/docker.sock``), else the default
socket; skips with the reason otherwise. The images are built locally once per
engine (``pytest_agentmem.services.images``), so no registry is needed. Inner runs
are pytest subprocesses that alone get ``DOCKER_HOST``: other test runs on this
machine keep their own mode.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from interrupts import sigint_as_default

from pytest_agentmem.services.containers import LABEL_PID, LABEL_RUN, docker_engine_answers

pytestmark = pytest.mark.slow

PRIVATE_SOCKET = os.environ.get("AGENTMEM_DOCKER_SOCKET", "/run/agentmem-docker/docker.sock")
CANDIDATES = [os.environ.get("DOCKER_HOST", ""), f"unix://{PRIVATE_SOCKET}", "unix:///var/run/docker.sock"]


@pytest.fixture(scope="session")
def docker_env() -> Iterator[dict[str, str]]:
    """The environment that points an inner run at an engine and at the local images."""
    pytest.importorskip("testcontainers", reason='docker mode needs pip install "pytest-agentmem[containers]"')
    host = next((h for h in CANDIDATES if h and docker_engine_answers(host=h)), None)
    if host is None:
        pytest.skip("no Docker engine answers at $DOCKER_HOST, " + PRIVATE_SOCKET + " or "
                    "/var/run/docker.sock (start a private one: .ci/docker-engine start)")
    from pytest_agentmem.services.images import POSTGRES_TAG, REDIS_TAG, ImageBuildError, ensure_images

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_HOST", host)
        try:
            ensure_images()  # cached in the engine: built once, rebuilt when an input changes
        except ImageBuildError as exc:
            pytest.skip(f"cannot build the local docker images: {exc}")
    yield {"DOCKER_HOST": host, "AGENTMEM_POSTGRES_IMAGE": POSTGRES_TAG, "AGENTMEM_REDIS_IMAGE": REDIS_TAG}


@pytest.fixture(scope="session")
def docker_client(docker_env: dict[str, str]) -> Iterator[object]:
    import docker

    client = docker.DockerClient(base_url=docker_env["DOCKER_HOST"])
    yield client
    client.close()


def _containers_of(client: object, pid: int) -> list[object]:
    return client.containers.list(  # type: ignore[attr-defined]
        all=True, filters={"label": f"{LABEL_PID}={pid}"}, ignore_removed=True)  # the reaper removes them meanwhile


def _wait_no_containers(client: object, pid: int, timeout: float) -> list[object]:
    deadline = time.monotonic() + timeout
    while True:
        left = _containers_of(client, pid)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _inner_env(docker_env: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTMEM_", "PYTEST_"))}
    return {**env, **docker_env, **extra}


PROVISION = """
    import asyncpg, pytest
    from pytest_agentmem.services.janitor import with_database

    async def test_docker_services(agentmem_services, pg_pool, redis_client):
        assert agentmem_services.postgres.mode == "docker"
        assert agentmem_services.redis.mode == "docker"
        assert agentmem_services.postgres.url.split("@")[1].startswith("127.0.0.1:")
        assert agentmem_services.postgres.process_ids(), "the CPU sampler needs the server's pids"
        async with pg_pool.acquire() as conn:
            await conn.execute("CREATE TABLE m (id int, e vector(3))")
            await conn.execute("CREATE INDEX ON m USING hnsw (e vector_cosine_ops)")
            await conn.execute("INSERT INTO m VALUES (1, '[1,0,0]'), (2, '[0,1,0]')")
            assert await conn.fetchval("SELECT id FROM m ORDER BY e <=> '[0.9,0.1,0]' LIMIT 1") == 1
        await redis_client.set("k", "v")
        assert await redis_client.get("k") == b"v"

    async def test_postgres_wants_the_password(agentmem_services):
        dsn = agentmem_services.postgres.dsn
        user, rest = dsn.split("://", 1)[1].split("@", 1)
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(f"postgresql://postgres:wrong@{rest}")
"""


@pytest.mark.parametrize("mode", ["docker", "auto"])
def test_docker_mode_provisions_postgres_with_pgvector_and_redis(
        pytester: pytest.Pytester, docker_env: dict[str, str], mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(PROVISION)
    for key, value in _inner_env(docker_env).items():
        monkeypatch.setenv(key, value)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--agentmem-services={mode}", timeout=300)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["agentmem: postgres * + pgvector * (docker, *), redis * (docker, *)"])


REDIS_LOCKED = """
    import os, pwd, subprocess
    from urllib.parse import urlsplit

    import docker, psutil, redis

    from pytest_agentmem.services.containers import LABEL_RUN, run_id

    def _as_nobody(argv):
        nobody = pwd.getpwnam("nobody")

        def drop():
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)

        return subprocess.run(argv, capture_output=True, text=True, preexec_fn=drop, timeout=30,
                              env={"PATH": "/usr/bin:/bin"}, cwd="/")

    def test_redis_container_refuses_a_local_account_on_its_bridge_address(agentmem_services):
        secret = urlsplit(agentmem_services.redis.url).password
        assert secret and len(secret) >= 32
        engine = docker.DockerClient(base_url=os.environ["DOCKER_HOST"])
        try:
            ours = engine.containers.list(filters={"label": f"{LABEL_RUN}={run_id()}"})
            [container] = [c for c in ours if "6379/tcp" in c.attrs["NetworkSettings"]["Ports"]]
            container.reload()
            addresses = [n["IPAddress"] for n in container.attrs["NetworkSettings"]["Networks"].values()
                         if n.get("IPAddress")]
            host_pid = container.attrs["State"]["Pid"]
        finally:
            engine.close()
        assert addresses
        for address in addresses:  # what another local account or container can reach
            script = (f"exec 3<>/dev/tcp/{address}/6379; printf 'PING\\r\\nINFO\\r\\n' >&3; "
                      "read -t 2 a <&3; read -t 2 b <&3; echo $a; echo $b")
            ran = _as_nobody(["bash", "-c", script])
            assert ran.stdout.startswith("-NOAUTH"), ran.stdout + ran.stderr
            assert "PONG" not in ran.stdout and "redis_version" not in ran.stdout
        client = redis.Redis.from_url(agentmem_services.redis.url)
        try:
            assert client.ping()
            for command in (("CONFIG", "GET", "dir"), ("MODULE", "LIST"), ("DEBUG", "SLEEP", "0")):
                try:
                    client.execute_command(*command)
                    raise AssertionError(f"{command[0]} is enabled")
                except redis.ResponseError as exc:
                    assert "unknown command" in str(exc)
        finally:
            client.close()
        # The password is in no command line or environment of the container's processes.
        server = psutil.Process(host_pid)
        for proc in [server, *server.children(recursive=True)]:
            assert secret not in " ".join(proc.cmdline())
            assert secret not in str(proc.environ())
        assert server.uids().effective != 0

    async def test_postgres_containers_environment_password_no_longer_logs_in(agentmem_services):
        import asyncpg

        dsn = agentmem_services.postgres.dsn  # started on first use
        engine = docker.DockerClient(base_url=os.environ["DOCKER_HOST"])
        try:
            ours = engine.containers.list(filters={"label": f"{LABEL_RUN}={run_id()}"})
            [container] = [c for c in ours if "5432/tcp" in c.attrs["NetworkSettings"]["Ports"]]
            env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
        finally:
            engine.close()
        assert env["POSTGRES_PASSWORD"] != urlsplit(dsn).password
        # ... and no server process keeps it in its environment (readable by its uid on this host)
        server = psutil.Process(int(container.attrs["State"]["Pid"]))
        for proc in [server, *server.children(recursive=True)]:
            try:
                assert env["POSTGRES_PASSWORD"] not in str(proc.environ()), proc.cmdline()
            except psutil.NoSuchProcess:
                pass
        rest = dsn.split("@", 1)[1]
        try:
            await asyncpg.connect(f"postgresql://postgres:{env['POSTGRES_PASSWORD']}@{rest}")
            raise AssertionError("the password in the container's environment still logs in")
        except asyncpg.InvalidPasswordError:
            pass
        conn = await asyncpg.connect(dsn)
        await conn.close()
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another local account")
def test_docker_modes_redis_refuses_an_unauthenticated_ping_on_its_bridge_address(
        pytester: pytest.Pytester, docker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(REDIS_LOCKED)
    for key, value in _inner_env(docker_env).items():
        monkeypatch.setenv(key, value)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--agentmem-services=docker", timeout=300)
    result.assert_outcomes(passed=2)


ISOLATION = """
    import os

    async def test_a_writes(pg_pool, redis_client):
        async with pg_pool.acquire() as conn:
            await conn.execute("CREATE TABLE left_behind (x int)")
            os.environ["FIRST_DB"] = await conn.fetchval("SELECT current_database()")
        await redis_client.set("left_behind", 1)

    async def test_b_sees_nothing(pg_pool, redis_client):
        async with pg_pool.acquire() as conn:
            assert await conn.fetchval("SELECT to_regclass('left_behind')") is None
            assert await conn.fetchval("SELECT current_database()") != os.environ["FIRST_DB"]
            assert await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        assert await redis_client.dbsize() == 0
"""


def test_each_test_gets_a_fresh_database_and_an_emptied_redis(
        pytester: pytest.Pytester, docker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(ISOLATION)
    for key, value in _inner_env(docker_env).items():
        monkeypatch.setenv(key, value)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--agentmem-services=docker", timeout=300)
    result.assert_outcomes(passed=2)


RECORD_AND_WAIT = """
    import asyncio, json, os
    from pytest_agentmem.services import containers

    async def test_hold(pg_pool, redis_client, agentmem_services):
        record = {"pid": os.getpid(), "run": containers.run_id(),
                  "reaper": containers._RUN.reaper.pid,
                  "servers": agentmem_services.postgres.process_ids() + agentmem_services.redis.process_ids()}
        with open(os.environ["AGENTMEM_TEST_RECORD"] + ".tmp", "w") as f:
            json.dump(record, f)
        os.replace(os.environ["AGENTMEM_TEST_RECORD"] + ".tmp", os.environ["AGENTMEM_TEST_RECORD"])
        await asyncio.sleep(float(os.environ.get("AGENTMEM_TEST_HOLD", "0")))
"""


def _start_run(pytester: pytest.Pytester, docker_env: dict[str, str],
               hold: float, wrap: tuple[str, ...] | list[str] = ()) -> tuple[subprocess.Popen[bytes], Path]:
    pytester.makepyfile(RECORD_AND_WAIT)
    record = pytester.path / "record.json"
    env = _inner_env(docker_env, AGENTMEM_TEST_RECORD=str(record), AGENTMEM_TEST_HOLD=str(hold))
    proc = subprocess.Popen([*wrap, sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                             "--agentmem-services=docker", "-q"], cwd=pytester.path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=sigint_as_default)
    deadline = time.monotonic() + 180
    while not record.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = proc.communicate(timeout=30)[0].decode(errors="replace")
            pytest.fail(f"the inner run never reached its test body:\n{out}")
        time.sleep(0.05)
    return proc, record


def _gone(pid: int, timeout: float) -> bool:
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_no_container_is_left_after_a_normal_end(
        pytester: pytest.Pytester, docker_env: dict[str, str], docker_client: object) -> None:
    proc, record = _start_run(pytester, docker_env, hold=0)
    out = proc.communicate(timeout=180)[0].decode(errors="replace")
    assert proc.returncode == 0, out
    data = json.loads(record.read_text())
    assert data["servers"], "container processes were not visible"
    assert not _containers_of(docker_client, data["pid"]), "containers outlived the run"
    assert _gone(data["reaper"], 15), "the reaper outlived the run"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_no_container_is_left_after_an_interrupt_mid_test(
        pytester: pytest.Pytester, docker_env: dict[str, str], docker_client: object, signum: int) -> None:
    proc, record = _start_run(pytester, docker_env, hold=300)
    data = json.loads(record.read_text())
    assert len(_containers_of(docker_client, data["pid"])) == 2
    proc.send_signal(signum)
    out = proc.communicate(timeout=120)[0].decode(errors="replace")
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    # pytest removed them itself, before it exited; the reaper had nothing left to do
    assert not _containers_of(docker_client, data["pid"]), out
    assert _gone(data["reaper"], 15)


def test_the_reaper_removes_the_containers_of_a_killed_pytest(
        pytester: pytest.Pytester, docker_env: dict[str, str], docker_client: object) -> None:
    proc, record = _start_run(pytester, docker_env, hold=300)
    data = json.loads(record.read_text())
    proc.kill()  # SIGKILL: no code of pytest's runs; the reaper sees its pipe close
    proc.communicate(timeout=30)
    left = _wait_no_containers(docker_client, data["pid"], 30)
    assert not left, f"containers outlived a killed pytest: {[c.name for c in left]}"  # type: ignore[attr-defined]
    assert _gone(data["reaper"], 15)


def test_the_next_run_sweeps_containers_of_dead_runs(docker_env: dict[str, str], docker_client: object) -> None:
    import time as clock

    from pytest_agentmem.services.containers import LABEL_HEARTBEAT, STALE_S, sweep_dead_runs, write_heartbeat

    beating = {LABEL_HEARTBEAT: "1"}
    labels = {"dead": {LABEL_RUN: "test-dead", **beating}, "alive": {LABEL_RUN: "test-alive", **beating},
              "new": {LABEL_RUN: "test-new", **beating},  # started, no beat yet: its creation counts
              "legacy": {LABEL_RUN: "test-legacy"}}  # an older version's, a minute old: not judged
    created = {name: docker_client.containers.create(  # type: ignore[attr-defined]
        docker_env["AGENTMEM_REDIS_IMAGE"], labels=value) for name, value in labels.items()}
    try:
        assert write_heartbeat(created["dead"], clock.time() - STALE_S - 60)  # stopped beating
        assert write_heartbeat(created["alive"])
        sweep_dead_runs(docker_client)
        left = {c.labels[LABEL_RUN] for c in docker_client.containers.list(  # type: ignore[attr-defined]
            all=True, filters={"label": LABEL_RUN}) if c.labels[LABEL_RUN].startswith("test-")}
        assert left == {"test-alive", "test-new", "test-legacy"}
    finally:
        for container in created.values():
            try:
                container.remove(force=True)
            except Exception:  # noqa: BLE001 - swept already
                pass


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root and unshare(1) to start a run in a pid namespace of its own")
def test_a_live_run_in_another_pid_namespace_with_the_same_host_name_keeps_its_containers(
        pytester: pytest.Pytester, docker_env: dict[str, str], docker_client: object) -> None:
    from pytest_agentmem.services.containers import LABEL_HOST, sweep_dead_runs

    # A second CI job on the same engine: same host name, its pids in a namespace of its own.
    proc, record = _start_run(pytester, docker_env, hold=300,
                              wrap=["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"])
    data = json.loads(record.read_text())
    mine = {"label": f"{LABEL_RUN}={data['run']}"}
    try:
        found = docker_client.containers.list(all=True, filters=mine)  # type: ignore[attr-defined]
        assert len(found) == 2
        assert {c.labels[LABEL_HOST] for c in found} == {__import__("socket").gethostname()}
        sweep_dead_runs(docker_client)  # this run's sweep, in the first namespace
        assert len(docker_client.containers.list(all=True, filters=mine)) == 2  # type: ignore[attr-defined]
    finally:
        proc.kill()
        proc.communicate(timeout=60)
        for container in docker_client.containers.list(all=True, filters=mine):  # type: ignore[attr-defined]
            container.remove(force=True, v=True)


def test_the_redis_image_run_bare_answers_no_one_outside_its_container(
        docker_env: dict[str, str], docker_client: object) -> None:
    """Run by hand with its default command (no password), it must not serve its bridge address."""
    import socket

    from pytest_agentmem.services.images import REDIS_TAG

    container = docker_client.containers.run(REDIS_TAG, detach=True, labels={"agentmem.test": "bare"})  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + 30
        while True:
            container.reload()
            address = next((n["IPAddress"] for n in container.attrs["NetworkSettings"]["Networks"].values()
                            if n.get("IPAddress")), None)
            try:
                assert address, "the container has no bridge address"
                with socket.create_connection((address, 6379), timeout=2) as conn:
                    conn.sendall(b"PING\r\n")
                    answer = conn.recv(200)
                break
            except (OSError, AssertionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert not answer.startswith(b"+PONG"), answer
        assert b"DENIED" in answer, answer  # protected mode: no password, so loopback only
    finally:
        container.remove(force=True)


NEEDS_BOTH = """
    async def test_needs_services(pg_pool, redis_client):
        pass
"""


def test_a_missing_image_names_the_local_build(
        pytester: pytest.Pytester, docker_env: dict[str, str], docker_client: object,
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(NEEDS_BOTH)
    for key, value in _inner_env(docker_env, AGENTMEM_POSTGRES_IMAGE="agentmem/no-such-image:0").items():
        monkeypatch.setenv(key, value)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--agentmem-services=docker", timeout=300)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*could not start container agentmem/no-such-image:0*",
                                 "*python -m pytest_agentmem.services.images ensure*"])


def test_a_container_that_dies_is_reported_with_its_log_and_removed(
        pytester: pytest.Pytester, docker_env: dict[str, str], docker_client: object,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The Postgres image cannot run redis-server: its entry point execs it and the container exits.
    pytester.makepyfile(NEEDS_BOTH + """
    import os

    def test_zz_record_pid():
        open("pid", "w").write(str(os.getpid()))
    """)
    for key, value in _inner_env(docker_env, AGENTMEM_REDIS_IMAGE=docker_env["AGENTMEM_POSTGRES_IMAGE"]).items():
        monkeypatch.setenv(key, value)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--agentmem-services=docker", timeout=300)
    result.assert_outcomes(errors=1, passed=1)
    result.stdout.fnmatch_lines(["*container agentmem/postgres-pgvector:18 did not become ready*",
                                 "*last lines of the server log*", "*redis-server*not found*"])
    assert not _containers_of(docker_client, int((pytester.path / "pid").read_text()))


STATEMENTS = """
    import json, pytest

    @pytest.mark.agentmem_perf(reference=False)
    async def test_lookup(perf, pg_pool, redis_client):
        await pg_pool.execute("CREATE TABLE items (id int PRIMARY KEY, body text)")
        await pg_pool.execute("INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 1000) g")

        async def op(i):
            await pg_pool.fetchval("SELECT body FROM items WHERE id = $1", i % 1000 + 1)
            await redis_client.get("k")

        await perf.run(op, concurrency=2, total=200, name="lookup")
"""


def test_docker_postgres_records_statements(pytester: pytest.Pytester, docker_env: dict[str, str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 23: the container preloads pg_stat_statements; a run's evidence has its statements."""
    import json

    pytester.makepyfile(STATEMENTS)
    for key, value in _inner_env(docker_env).items():
        monkeypatch.setenv(key, value)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--agentmem-services=docker",
                                           "--agentmem-perf", "--agentmem-report=r.json", timeout=300)
    result.assert_outcomes(passed=1)
    evidence = json.loads((pytester.path / "r.json").read_text())["tests"][0]["measurements"][0]["evidence"]
    assert evidence["statements_status"] == "ok"
    lookup = [s for s in evidence["statements"] if "FROM items WHERE id = $1" in s["query"]]
    assert lookup and lookup[0]["calls"] == 200 and lookup[0]["calls_per_op"] == 1.0
    assert any(r["command"] == "get" and r["calls"] >= 200 for r in evidence["redis"])
