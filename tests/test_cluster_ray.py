"""perf.run(processes=N) over a REAL two-node Ray cluster on this machine (issue 19).

One local cluster (a head and one added node, started by the plugin's own
:class:`RayCluster` as ``--agentmem-load-cluster ray`` does) serves the whole
module; the last test checks that nothing of it is left running once it is shut
down. Every run's merged figures are checked against the workers' own.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

pytest.importorskip("ray", reason="the [cluster] extra (ray) is not installed")

from pytest_agentmem.cluster.ray_cluster import ClusterError, RayCluster  # noqa: E402
from pytest_agentmem.load import histogram as hdr  # noqa: E402
from pytest_agentmem.load import run_load, validate  # noqa: E402
from pytest_agentmem.load.worker_op import WorkerInfo, WorkerOp  # noqa: E402

pytestmark = pytest.mark.slow


async def sleep_2ms(index: int) -> None:
    """Module level, so the workers can import it."""
    await asyncio.sleep(0.002)


class Tally:
    """A worker's clients: counts the operations it ran (its own figure, beside the runner's)."""

    def __init__(self, worker: WorkerInfo) -> None:
        self.worker = worker
        self.calls = 0


async def open_tally(worker: WorkerInfo) -> Tally:
    return Tally(worker)


async def tally_op(tally: Tally, index: int) -> None:
    tally.calls += 1
    await asyncio.sleep(0.001 if index % 7 else 0.004)  # two latency groups: a histogram with a shape
    if index % 97 == 5:
        raise ValueError(f"planned failure of op {index}")


async def report_tally(tally: Tally) -> dict[str, int]:
    return {"index": tally.worker.index, "calls": tally.calls, "node": tally.worker.node}


async def dying_op(tally: Tally, index: int) -> None:
    """Worker 1 dies (SIGKILL, as the OOM killer would) after some operations; its last words first."""
    tally.calls += 1
    if tally.worker.index == 1 and tally.calls == 40:
        print("worker 1: my last words before the kill", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    await asyncio.sleep(0.002)


@pytest.fixture(scope="module")
def shared_cluster():
    created = RayCluster("ray:2", timeout=120)
    try:
        yield created
    finally:
        created.shutdown()


@pytest.fixture
def cluster(shared_cluster):
    """The module's local cluster, connected: started again if a test before (in a shuffled
    order, test_nothing_of_ray_is_left_after_shutdown) shut it down."""
    shared_cluster.connect()
    return shared_cluster


def _run(cluster: RayCluster, op, **kwargs):
    kwargs.setdefault("name", "t")
    return asyncio.run(run_load(op, validate(op, **kwargs), cluster=cluster))


def _check_exact(result, workers: int) -> None:
    per_worker = result.placement["per_worker"]
    assert len(per_worker) == workers
    assert sum(w["ops"] for w in per_worker) == result.ops
    assert sum(w["errors"] for w in per_worker) == result.errors
    merged = hdr.merge(hdr.decode(w["histogram"]) for w in per_worker)
    assert (hdr.counts_view(merged) == hdr.counts_view(result.histogram)).all()
    assert result.histogram.get_total_count() == result.ops - result.errors


def test_the_workers_spread_over_both_nodes(cluster) -> None:
    nodes = cluster.nodes()
    assert len(nodes) == 2
    result = _run(cluster, sleep_2ms, concurrency=4, total=200, processes=4)
    assert result.placement["backend"] == "ray" and result.placement["workers"] == 4
    assert sorted(result.placement["nodes"].values()) == [2, 2], result.placement["nodes"]
    assert {w["node"] for w in result.placement["per_worker"]} == {n.node_id for n in nodes}
    assert "4 Ray workers on 2 node(s)" in result.describe()
    assert result.loop.startswith("uvloop") or result.loop.startswith("asyncio")
    _check_exact(result, 4)


def test_closed_loop_merge_is_exact(cluster) -> None:
    op = WorkerOp(tally_op, setup=open_tally, teardown=report_tally)
    result = _run(cluster, op, concurrency=6, total=1000, warmup=12, processes=2)
    assert result.ops == 1000 and result.mode == "closed" and result.processes == 2
    tallies = sorted(result.worker_returns, key=lambda t: t["index"])
    # each worker's own count of calls (warm-up included) is what the runner counted for it
    assert [t["calls"] for t in tallies] == [w["ops"] + 6 for w in result.placement["per_worker"]]
    assert sum(t["calls"] for t in tallies) == 1000 + 12
    assert result.errors == sum(w["errors"] for w in result.placement["per_worker"]) > 0
    assert result.errors_by_type["ValueError"]["count"] == result.errors
    _check_exact(result, 2)
    assert result.resources["process_cpu_s"] > 0
    assert sum(e["ops"] for e in result.timeline) == result.ops


def test_open_loop_keeps_the_intended_schedule(cluster) -> None:
    result = _run(cluster, sleep_2ms, rate=300, duration=2.0, processes=2)
    # the union of the two shares is the whole schedule: every operation due in 2 s, once
    assert result.ops == 600, result.describe()
    assert result.mode == "open" and result.rate == 300
    assert [w["ops"] for w in result.placement["per_worker"]] == [300, 300]
    assert result.missed_schedule["threshold_ms"] > 0
    _check_exact(result, 2)


def test_open_loop_total_is_split_exactly(cluster) -> None:
    result = _run(cluster, sleep_2ms, rate=500, total=301, processes=2)
    assert result.ops == 301
    assert [w["ops"] for w in result.placement["per_worker"]] == [151, 150]


QUESTIONS = ("what does the user like to eat", "where did they travel last summer",
             "which sport do they play", "what is their job")


async def search_memories(service, index: int) -> None:
    """A search of the real memory service, in a worker (its own pool and model)."""
    found = await service.search(QUESTIONS[index % len(QUESTIONS)], user_id="u1", limit=3)
    if not found:
        raise AssertionError("a search over stored memories found nothing")


@pytest.mark.asyncio
async def test_the_memory_service_searched_from_workers_on_both_nodes(cluster, memory_service,
                                                                      pg_database) -> None:
    from pytest_agentmem.memory.worker import memory_service_setup

    await memory_service.add_batch(["I love sushi and ramen", "We went to Lisbon in July",
                                    "I play tennis on Sundays", "I work as a nurse"], user_id="u1")
    op = WorkerOp(search_memories, setup=memory_service_setup(pg_database, pool_size=2))
    result = await run_load(op, validate(op, concurrency=4, total=40, processes=2, name="search"),
                            cluster=cluster)
    assert result.errors == 0, result.errors_by_type
    assert result.ops == 40 and len(result.placement["nodes"]) == 2
    _check_exact(result, 2)


def test_a_killed_worker_fails_the_run_naming_its_node(cluster) -> None:
    op = WorkerOp(dying_op, setup=open_tally)
    started = time.monotonic()
    with pytest.raises(ClusterError) as info:
        _run(cluster, op, concurrency=4, duration=300.0, processes=2)
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert elapsed < 150.0, "the run waited for its whole duration instead of failing"
    assert "load worker 1 on node " in message and "failed while measuring its share" in message
    assert "no partial result" in message
    second = sorted(n.node_id for n in cluster.nodes())[1]  # worker k runs on node k (round robin)
    assert f"node {second[:8]}" in message
    assert "my last words before the kill" in message, message
    # the cluster still serves a new run afterwards (new workers replace the dead one)
    again = _run(cluster, sleep_2ms, concurrency=2, total=40, processes=2)
    assert again.ops == 40


async def pid_op(tally: Tally, index: int) -> None:
    await asyncio.sleep(0.002)


async def open_and_tell(folder: str, worker: WorkerInfo) -> Tally:
    Path(folder, str(worker.index)).write_text(str(os.getpid()))
    return Tally(worker)


def test_a_hung_worker_fails_the_run_at_its_heartbeat_deadline(cluster, monkeypatch, tmp_path) -> None:
    from pytest_agentmem.cluster import coordinator

    monkeypatch.setattr(coordinator, "HEARTBEAT_TIMEOUT_S", 3.0)

    async def main() -> None:
        op = WorkerOp(pid_op, setup=functools.partial(open_and_tell, str(tmp_path)))
        run = asyncio.ensure_future(run_load(op, validate(op, concurrency=2, duration=300.0, processes=2,
                                                          name="t"), cluster=cluster))
        while not (tmp_path / "1").exists() and not run.done():
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        os.kill(int((tmp_path / "1").read_text()), signal.SIGSTOP)  # hung: alive, silent
        await run

    started = time.monotonic()
    with pytest.raises(ClusterError) as info:
        asyncio.run(main())
    assert time.monotonic() - started < 150.0  # well before the run's 300 s
    message = str(info.value)
    assert "load worker 1 on node " in message and "did not answer for " in message, message
    assert "(hung, or its node is unreachable)" in message


def test_a_node_that_dies_fails_the_run_naming_it(cluster, monkeypatch) -> None:
    from pytest_agentmem.cluster import coordinator

    monkeypatch.setattr(coordinator, "HEARTBEAT_TIMEOUT_S", 10.0)  # a slow machine's Ray may say it late
    node = next(iter(cluster._local.worker_nodes))  # the added node (not the head)
    victim = node.node_id
    worker = sorted(n.node_id for n in cluster.nodes()).index(victim)  # worker k on node k (sorted)
    _run(cluster, sleep_2ms, concurrency=2, total=10, processes=2)  # the workers are up

    async def main() -> None:
        run = asyncio.ensure_future(run_load(sleep_2ms, validate(sleep_2ms, concurrency=2, duration=300.0,
                                                                 processes=2, name="t"), cluster=cluster))
        await asyncio.sleep(3.0)
        if not run.done():
            cluster._local.remove_node(node)  # its raylet and its workers die
        await run

    started = time.monotonic()
    with pytest.raises(ClusterError) as info:
        asyncio.run(main())
    assert time.monotonic() - started < 150.0  # well before the run's 300 s
    assert f"load worker {worker} on node {victim[:8]}" in str(info.value), str(info.value)
    cluster._local.add_node(num_cpus=1, object_store_memory=100 * 1024 * 1024)  # back to two nodes
    cluster._local.wait_for_nodes()


def test_nothing_of_ray_is_left_after_shutdown(cluster) -> None:
    """The shared cluster's shutdown leaves no process of it (a later test starts it again)."""
    result = _run(cluster, sleep_2ms, concurrency=2, total=20, processes=2)
    assert result.ops == 20
    children = {p.pid for p in psutil.Process().children(recursive=True) if _is_ray(p)}
    names = " ".join(" ".join(psutil.Process(pid).cmdline()[:1]) for pid in children if psutil.pid_exists(pid))
    assert "raylet" in names and "gcs_server" in names, names
    session = cluster._session_dir
    assert session and Path(session).is_dir()
    cluster.shutdown()
    assert not Path(session).exists(), "the local cluster's session folder (its logs) was left behind"
    deadline = time.monotonic() + 30
    left = _alive(children)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _alive(left)
    assert not left, f"Ray processes left after shutdown: {[psutil.Process(p).cmdline()[:2] for p in left]}"


def _is_ray(proc: psutil.Process) -> bool:
    try:
        command = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return "raylet" in command or "gcs_server" in command or command.startswith("ray::") or "/ray/" in command


def _alive(pids) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.Error:
            continue
    return out


def test_an_unreachable_address_is_a_clear_error() -> None:
    unreachable = RayCluster("127.0.0.1:9", timeout=5)
    with pytest.raises(ClusterError, match="cannot be reached"):
        unreachable.connect()
