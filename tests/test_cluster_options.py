"""--agentmem-load-cluster: parsing, usage errors, what it refuses, the split of a run (issue 19).

The runs on a real Ray cluster are in tests/test_cluster_ray.py (the engine) and
in :func:`test_a_perf_test_runs_over_a_local_two_node_cluster_and_is_gated`
(the plugin, end to end, in a pytest process of its own).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from interrupts import sigint_as_default

from pytest_agentmem.cluster.plugin import check_services_reachable
from pytest_agentmem.cluster.ray_cluster import NodeInfo, remote_of
from pytest_agentmem.config import Settings, parse_load_cluster
from pytest_agentmem.errors import ConfigurationError
from pytest_agentmem.load import validate
from pytest_agentmem.load.workers import share_specs

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="the [cluster] extra (ray) is not installed")

SHOW = """
    from pytest_agentmem.session import get_session
    def pytest_report_header(config):
        return [f"CLUSTER {get_session(config).settings.load_cluster}"]
"""


# --------------------------------------------------------------------------- parsing


@needs_ray
@pytest.mark.parametrize(("value", "parsed"), [
    ("local", "local"), ("", "local"), ("ray", "ray:2"), ("RAY:3", "ray:3"), ("ray:1", "ray:1"),
    ("auto", "auto"), ("ray://head.example:10001", "ray://head.example:10001"),
    ("10.0.0.5:6379", "10.0.0.5:6379"),
])
def test_values_parse(value: str, parsed: str) -> None:
    assert parse_load_cluster(value) == parsed


@needs_ray
@pytest.mark.parametrize(("args", "message"), [
    (["--agentmem-load-cluster=ray:0"], "*expected ray or ray:N with N from 1 to 16*"),
    (["--agentmem-load-cluster=kubernetes"], "*'kubernetes' is not local, ray, ray:N or a Ray address*"),
    (["--agentmem-load-cluster=http://head:8265"], "*is not local, ray, ray:N or a Ray address*"),
    (["--agentmem-load-cluster=ray://head"], "*is not local, ray, ray:N or a Ray address*"),
])
def test_bad_values_are_usage_errors(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


@needs_ray
def test_command_line_beats_ini_beats_environment(pytester: pytest.Pytester,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest(SHOW)
    monkeypatch.setenv("AGENTMEM_LOAD_CLUSTER", "ray:3")
    pytester.runpytest().stdout.fnmatch_lines(["CLUSTER ray:3"])
    pytester.makeini("[pytest]\nagentmem_load_cluster = ray\n")
    pytester.runpytest().stdout.fnmatch_lines(["CLUSTER ray:2"])
    result = pytester.runpytest("--agentmem-load-cluster=local")
    result.stdout.fnmatch_lines(["CLUSTER local"])
    assert "load workers on the" not in result.stdout.str()


@needs_ray
def test_the_header_says_where_load_workers_run(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--agentmem-load-cluster=ray")
    result.stdout.fnmatch_lines(["agentmem: perf.run(processes=N) load workers on the local Ray "
                                 "cluster of 2 node(s) at ray:2 (started on first use, stopped at the end)"])


def test_without_ray_a_usage_error_names_the_extra(pytester: pytest.Pytester,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))
    result = pytester.runpytest("--agentmem-load-cluster=ray")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--agentmem-load-cluster ray:2: Ray is not installed; "
                                 "pip install 'pytest-agentmem[[]cluster[]]' (or use local)*"])
    monkeypatch.setenv("AGENTMEM_LOAD_CLUSTER", "auto")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*environment variable AGENTMEM_LOAD_CLUSTER*pytest-agentmem[[]cluster[]]*"])


@needs_ray
def test_ab_mode_refuses_a_cluster(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--agentmem-compare=HEAD", "--agentmem-load-cluster=ray", "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--agentmem-compare cannot be combined with --agentmem-load-cluster ray:2:"
                                 " A/B mode pairs each round*"])


# --------------------------------------------------------------------------- the split


async def op(index: int) -> None:
    """Module level: picklable, as processes=N needs."""
    return None


def test_an_open_loop_schedule_splits_into_shares_whose_union_is_the_schedule() -> None:
    spec = validate(op, rate=1000, duration=2.0, processes=3, concurrency=7)
    shares = share_specs(spec, 3)
    assert [s.rate for s in shares] == pytest.approx([1000 / 3] * 3)
    assert [s.concurrency for s in shares] == [3, 2, 2]  # the cap on operations in flight, split
    due = sorted(s.schedule_offset_s + m / s.rate for s in shares for m in range(700)
                 if s.schedule_offset_s + m / s.rate < 2.0)
    assert due == pytest.approx([j / 1000 for j in range(2000)])


def test_a_closed_loop_splits_users_total_and_warmup() -> None:
    shares = share_specs(validate(op, concurrency=5, total=11, warmup=3, processes=2), 2)
    assert [(s.concurrency, s.total, s.warmup) for s in shares] == [(3, 6, 2), (2, 5, 1)]
    assert all(s.processes is None and s.schedule_offset_s == 0 for s in shares)


def test_open_loop_processes_need_one_slot_of_the_cap_each() -> None:
    with pytest.raises(ConfigurationError, match="splits the cap on operations in flight"):
        validate(op, rate=10, total=5, processes=3, concurrency=2)


# --------------------------------------------------------------------------- services


class _Cluster:
    def __init__(self, remote: list[NodeInfo]) -> None:
        self._remote = remote

    def remote_nodes(self) -> list[NodeInfo]:
        return self._remote

    def describe(self) -> str:
        return "Ray cluster at ray://head:10001"


class _Item:
    fixturenames = ("perf", "memory_service", "agentmem_postgres", "agentmem_redis")


class _Running:
    def __init__(self, url: str) -> None:
        self.url = url


class _Services:
    def __init__(self, **urls: str) -> None:
        self.running = {name: _Running(url) for name, url in urls.items()}


def test_loopback_services_with_remote_nodes_are_refused() -> None:
    remote = [NodeInfo("ab" * 28, "10.0.0.7", "loadgen-2", True)]
    services = _Services(postgres="postgresql://u:p@127.0.0.1:5432/db", redis="redis://10.0.0.2:6379/0")
    with pytest.raises(ConfigurationError) as info:
        check_services_reachable(_Item(), _Cluster(remote), Settings(), services)  # type: ignore[arg-type]
    message = str(info.value)
    assert "postgres run on this machine's loopback address" in message
    assert "(loadgen-2)" in message and "--agentmem-postgres-url" in message
    assert "--agentmem-redis-url" not in message  # Redis is on a reachable address
    # no remote node (a cluster on this machine): fine
    check_services_reachable(_Item(), _Cluster([]), Settings(), services)  # type: ignore[arg-type]
    # services reachable from the nodes: fine
    check_services_reachable(_Item(), _Cluster(remote), Settings(),  # type: ignore[arg-type]
                             _Services(postgres="postgresql://db.internal/x", redis="redis://10.0.0.2/0"))


def test_remote_nodes_are_those_on_other_addresses() -> None:
    nodes = [NodeInfo("a" * 56, "192.0.2.2", "vm", True), NodeInfo("b" * 56, "10.1.1.1", "other", True)]
    assert [n.hostname for n in remote_of(nodes, {"192.0.2.2", "127.0.0.1"})] == ["other"]


# --------------------------------------------------------------------------- end to end

PERF_TEST = """
    import asyncio, json, os
    import pytest

    async def sleep_op(index):
        await asyncio.sleep(0.002)

    @pytest.mark.agentmem_perf(max_error_rate=0.0, reference=False)
    async def test_over_the_cluster(perf):
        result = await perf.run(sleep_op, concurrency=4, duration=1.5, processes=2)
        with open("placement.json", "w") as fh:
            json.dump({"placement": result.to_dict()["placement"], "ops": result.ops}, fh)
        assert sum(w["ops"] for w in result.placement["per_worker"]) == result.ops

    @pytest.mark.agentmem_perf(min_qps=10**9, reference=False)
    async def test_gated_over_the_cluster(perf):
        await perf.run(sleep_op, rate=200, duration=1.0, processes=2)
"""


def _session_processes(pid: int) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()


def _alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.Error:
            continue
    return out


def _wait_gone(pids: set[int], seconds: float = 30.0) -> set[int]:
    deadline = time.monotonic() + seconds
    left = _alive(pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _alive(left)
    return left


def _pytest_child(path: Path, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    env.pop("AGENTMEM_LOAD_CLUSTER", None)
    return subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
                            cwd=path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=sigint_as_default)


@needs_ray
@pytest.mark.slow
def test_a_perf_test_runs_over_a_local_two_node_cluster_and_is_gated(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cluster_run=PERF_TEST)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    child = _pytest_child(pytester.path, "--agentmem-perf", "--agentmem-load-cluster=ray",
                          "-p", "pytester")
    seen: set[int] = set()
    commands: set[str] = set()
    while child.poll() is None:  # the session's processes, as they come
        new = _session_processes(child.pid) - seen
        commands |= {" ".join(_cmd(pid)[:1]) for pid in new}
        seen |= new
        time.sleep(0.3)
    out = child.communicate()[0].decode()
    assert child.returncode == 1, out
    assert "1 failed, 1 passed" in out, out
    assert "qps" in out and "min_qps" in out, out  # the gate judged the cluster run's merged figures
    doc = json.loads((pytester.path / "placement.json").read_text())
    placement = doc["placement"]
    assert placement["backend"] == "ray" and placement["workers"] == 2
    assert len(placement["nodes"]) == 2, placement  # one worker on each of the two nodes
    assert sum(w["ops"] for w in placement["per_worker"]) == doc["ops"] > 0
    assert all("histogram" not in w for w in placement["per_worker"])  # memory only, not the report
    assert any("raylet" in cmd for cmd in commands), commands  # the local cluster ran under it
    assert not _wait_gone(seen), "Ray processes outlived the pytest session"


def _cmd(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


SLOW_TEST = """
    import asyncio
    import pytest

    async def sleep_op(index):
        await asyncio.sleep(0.01)

    @pytest.mark.agentmem_perf(reference=False)
    async def test_long(perf):
        await perf.run(sleep_op, concurrency=2, duration=600, processes=2)
"""


@needs_ray
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT], ids=["ctrl-c"])  # SIGTERM passes too (60 s more)
def test_an_interrupt_leaves_nothing_of_ray_running(pytester: pytest.Pytester, signum: int) -> None:
    pytester.makepyfile(test_slow=SLOW_TEST)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    child = _pytest_child(pytester.path, "--agentmem-perf", "--agentmem-load-cluster=ray")
    seen: set[int] = set()
    deadline = time.monotonic() + 240
    workers = False
    while child.poll() is None and time.monotonic() < deadline and not workers:
        seen |= _session_processes(child.pid)
        workers = sum("LoadWorker" in " ".join(_cmd(pid)) for pid in seen) >= 2
        time.sleep(0.3)
    assert workers, "the load workers never started"
    time.sleep(1.0)  # measuring now
    seen |= _session_processes(child.pid)
    child.send_signal(signum)
    try:
        child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    out = child.communicate()[0].decode()
    assert child.returncode == pytest.ExitCode.INTERRUPTED, out
    left = _wait_gone(seen)
    assert not left, f"left running after Ctrl-C: {[_cmd(pid)[:2] for pid in left]}"


JOIN_TEST = """
    import asyncio
    import pytest

    async def sleep_op(index):
        await asyncio.sleep(0.002)

    @pytest.mark.agentmem_perf(reference=False)
    async def test_join(perf):
        result = await perf.run(sleep_op, concurrency=4, total=200, processes=2)
        assert result.ops == 200 and len(result.placement["nodes"]) == 2, result.placement
        print("JOINED", result.describe())
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _kill_tree_of(marker: str) -> None:
    """Kill the processes whose command line holds ``marker`` (our own Ray cluster's temp dir)
    and their descendants (Ray's agents show only a process title)."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if marker in " ".join(proc.info["cmdline"] or []):
                found[proc.pid] = proc
                found.update((child.pid, child) for child in proc.children(recursive=True))
        except psutil.Error:
            continue
    for proc in found.values():
        try:
            proc.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(list(found.values()), timeout=10)


@needs_ray
@pytest.mark.slow
def test_a_running_cluster_is_joined_by_address_and_left_running(pytester: pytest.Pytester) -> None:
    """`ray start --head` + `ray start --address`: a cluster that runs; the plugin joins it by
    its address (the test module shipped by value), runs over both nodes, and leaves it running."""
    import shutil
    import tempfile

    # the ray of this interpreter (another on PATH, of another version, is refused by the cluster)
    own = Path(sys.executable).with_name("ray")
    ray_bin = str(own) if own.exists() else (shutil.which("ray") or str(own))
    temp = tempfile.mkdtemp(prefix="amray", dir="/tmp")  # short: Ray's socket paths must be
    port = _free_port()
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    try:
        subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=1",
                        "--include-dashboard=false", f"--temp-dir={temp}"], env=env, check=True,
                       capture_output=True, timeout=180)
        subprocess.run([ray_bin, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1"], env=env,
                       check=True, capture_output=True, timeout=180)
        pytester.makepyfile(test_join=JOIN_TEST)
        pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
        done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s",
                               "--agentmem-perf", f"--agentmem-load-cluster=127.0.0.1:{port}"],
                              cwd=pytester.path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "[2 Ray workers on 2 node(s)" in done.stdout, done.stdout
        assert f"load workers on the Ray cluster at 127.0.0.1:{port}" in done.stdout
        raylets = [p for p in psutil.process_iter(["cmdline"])
                   if temp in " ".join(p.info["cmdline"] or []) and "raylet" in " ".join(p.info["cmdline"] or [])]
        assert raylets, "a cluster that was running before the session must be left running"
    finally:
        _kill_tree_of(temp)
        shutil.rmtree(temp, ignore_errors=True)
