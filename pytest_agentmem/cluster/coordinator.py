"""One ``perf.run(..., processes=N)`` over a Ray cluster: place, open, start together, watch, merge.

1. ``N`` :class:`~.actor.LoadWorker` actors are spread over the live nodes
   (worker ``k`` on node ``k mod nodes``, pinned: an exact spread where Ray's
   ``SPREAD`` is best effort; ``num_cpus=0``: a worker never waits for a free
   CPU slot) and open the op (a :class:`~pytest_agentmem.load.worker_op.WorkerOp`
   builds its clients there); each says where it runs. Workers are kept for
   the next run while their node lives (a new worker process takes seconds).
2. The barrier: no worker is asked to measure before every worker is open; then
   all are asked at once (the coordinator's messages, not the clocks of
   different machines, start them). Each measures its share
   (:func:`~pytest_agentmem.load.workers.share_specs`: users, or the open loop's
   schedule) on its own uvloop with the project's runner.
3. While they run, every worker is asked for its progress once a second (which
   also drives the progress line); a worker that dies fails the run at once, and
   one that does not answer for :data:`HEARTBEAT_TIMEOUT_S` fails it then: never
   a hang, never a partial result. The error names the worker's node and host
   and gives its last words (Ray's exit detail, the tail of its log when this
   machine can read it, its last progress).
4. Their figures merge exactly as ``processes=`` merges them
   (:func:`~pytest_agentmem.load.workers.merge_parts`), and
   ``LoadResult.placement`` says how many workers ran on which node.

A run that fails (or is interrupted) kills its workers; the others go when the
cluster is shut down at the end of the session.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from ..load.resources import ResourceSampler
from ..load.result import LoadResult
from ..load.runner import TickCallback
from ..load.spec import LoadSpec, Op
from ..load.workers import merge_parts, share_specs
from .ray_cluster import ClusterError, RayCluster

#: Seconds a worker has to start, import and open the op (build its clients).
OPEN_TIMEOUT_S = 120.0
#: A worker that has not answered a progress call for this long fails the run.
HEARTBEAT_TIMEOUT_S = 60.0
#: Seconds between two progress calls.
POLL_S = 1.0
#: Seconds the workers' teardown gets.
CLOSE_TIMEOUT_S = 60.0
#: Lines of a dead worker's log quoted in the error.
LAST_WORDS_LINES = 8


async def run_on_cluster(cluster: RayCluster, op: Op, spec: LoadSpec, *,
                         on_tick: TickCallback | None = None,
                         service_pids: Callable[[], Any] | None = None) -> LoadResult:
    """Run ``spec`` (``processes=N`` > 1) with its N workers on ``cluster``; see the module docstring."""
    cluster.connect()  # blocking, once per run: Ray installs signal handlers (main thread only)
    n = int(spec.processes or 1)
    shares = share_specs(spec, n)
    actors, nodes = _workers(cluster, n)
    where: list[dict[str, Any]] = [{"index": k, "node": nodes[k]} for k in range(n)]
    ok = False
    try:
        where = list(await _gather([actors[k].hello.remote(k) for k in range(n)], actors, where,
                                   "starting", OPEN_TIMEOUT_S))
        with _shipping(op, ship=not cluster.local):
            opens = [actors[k].open.remote(op, k, n) for k in range(n)]
        await _gather(opens, actors, where, "opening the op (its setup)", OPEN_TIMEOUT_S)
        sampler = ResourceSampler(service_pids)
        sampler.start()
        # the barrier: every worker is open; all start measuring now
        runs = [actors[k].measure.remote(shares[k]) for k in range(n)]
        parts = await _watch(runs, actors, where, on_tick, sampler)
        returned = await _gather([a.close.remote() for a in actors], actors, where,
                                 "closing the op (its teardown)", CLOSE_TIMEOUT_S)
        ok = True
    finally:
        if not ok:  # a failed or interrupted run: its workers go, the next run starts new ones
            _discard_workers(cluster)
    for k, part in enumerate(parts):
        part["returned"] = returned[k]
    return merge_parts(parts, spec, sampler, placement=_placement(cluster, where, parts))


def _workers(cluster: RayCluster, n: int) -> tuple[list[Any], list[str]]:
    """``n`` workers, worker ``k`` on the ``k``-th alive node round robin (kept for the next runs).

    Ray's ``SPREAD`` strategy is best effort (two actors that need no CPU may
    land on one node); pinning each worker to a node (node affinity, not soft)
    spreads them exactly. Workers of earlier runs are reused while their node
    lives: a worker process starts in seconds, a reused one at once.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = sorted(node.node_id for node in cluster.nodes())
    if not nodes:
        raise ClusterError(f"the {cluster.describe()} has no live node to run load workers on")
    pool: list[tuple[str, Any]] = cluster.__dict__.setdefault("_pool", [])
    remote_class = _remote_class()
    for k in range(n):
        node = nodes[k % len(nodes)]
        if k < len(pool) and pool[k][0] == node:
            continue
        actor = remote_class.options(
            num_cpus=0, max_restarts=0, max_task_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
        if k < len(pool):
            _kill(pool[k][1])
            pool[k] = (node, actor)
        else:
            pool.append((node, actor))
    return [actor for _, actor in pool[:n]], [node for node, _ in pool[:n]]


def _discard_workers(cluster: RayCluster) -> None:
    pool: list[tuple[str, Any]] = cluster.__dict__.setdefault("_pool", [])
    for _, actor in pool:
        _kill(actor)
    pool.clear()


def _kill(actor: Any) -> None:
    import ray

    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # noqa: BLE001 - already dead
        pass


_REMOTE: Any = None


def _remote_class() -> Any:
    global _REMOTE
    if _REMOTE is None:
        import ray

        from .actor import LoadWorker

        _REMOTE = ray.remote(LoadWorker)
    return _REMOTE


@contextmanager
def _shipping(op: Any, *, ship: bool) -> Any:
    """Pickle the op's own modules by value (test files are not installed on remote nodes)."""
    modules = _op_modules(op) if ship else []
    import ray.cloudpickle as cloudpickle

    registered = []
    for module in modules:
        try:
            cloudpickle.register_pickle_by_value(module)
            registered.append(module)
        except (ValueError, TypeError):
            continue
    try:
        yield
    finally:
        for module in registered:
            try:
                cloudpickle.unregister_pickle_by_value(module)
            except (ValueError, TypeError):
                pass


def _op_modules(op: Any) -> list[Any]:
    """The modules of the functions ``op`` is made of that are not installed packages."""
    fns = [op]
    for attr in ("op", "setup", "teardown", "func"):
        inner = getattr(op, attr, None)
        if inner is not None:
            fns.append(inner)
            fns.append(getattr(inner, "func", None))
    found = []
    for fn in fns:
        name = getattr(fn, "__module__", None)
        module = sys.modules.get(name or "")
        path = getattr(module, "__file__", "") or ""
        if (module is not None and name and not name.startswith(("pytest_agentmem", "functools"))
                and "-packages" not in path and module not in found and path):
            found.append(module)
    return found


async def _await(ref: Any) -> Any:
    return await asyncio.wrap_future(ref.future())


async def _gather(refs: list[Any], actors: list[Any], where: list[dict[str, Any]], stage: str,
                  timeout: float) -> list[Any]:
    """Every ref's value; a worker's failure or the deadline is a :class:`ClusterError`."""
    tasks = [asyncio.ensure_future(_await(ref)) for ref in refs]
    try:
        done, pending = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_EXCEPTION)
        for k, task in enumerate(tasks):
            if task.done() and task.exception() is not None:
                raise ClusterError(_failure(k, where, task.exception(), stage)) from None
        if pending:
            late = [k for k, task in enumerate(tasks) if not task.done()]
            raise ClusterError(
                f"load workers {late} did not finish {stage} within {timeout:g} s "
                f"({_where_text(where, late[0])}); a worker that cannot be placed (no live node) "
                "or whose setup hangs (an unreachable service?) ends here")
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()


async def _watch(runs: list[Any], actors: list[Any], where: list[dict[str, Any]],
                 on_tick: TickCallback | None, sampler: ResourceSampler) -> list[dict[str, Any]]:
    """Wait for the workers' figures; poll their progress; fail at the first dead or silent worker."""
    tasks = [asyncio.ensure_future(_await(ref)) for ref in runs]
    heard = [time.monotonic()] * len(runs)
    last: list[dict[str, Any]] = [{} for _ in runs]
    started = time.monotonic()
    try:
        while True:
            done, _ = await asyncio.wait(tasks, timeout=POLL_S, return_when=asyncio.FIRST_EXCEPTION)
            for k, task in enumerate(tasks):
                if task.done() and task.exception() is not None:
                    raise ClusterError(_failure(k, where, task.exception(), "measuring its share",
                                                last[k], time.monotonic() - started))
            if len(done) == len(tasks):
                return [dict(task.result()) for task in tasks]
            sampler.sample()
            await _poll(actors, tasks, heard, last, where, started)
            if on_tick is not None:
                _tick(on_tick, last, time.monotonic() - started)
    finally:
        for task in tasks:
            task.cancel()


async def _poll(actors: list[Any], tasks: list[Any], heard: list[float], last: list[dict[str, Any]],
                where: list[dict[str, Any]], started: float) -> None:
    pending = [k for k, task in enumerate(tasks) if not task.done()]
    polls = {k: asyncio.ensure_future(_await(actors[k].progress.remote())) for k in pending}
    try:
        await asyncio.wait(list(polls.values()), timeout=POLL_S)
        now = time.monotonic()
        for k, poll in polls.items():
            if poll.done() and poll.exception() is None:
                heard[k] = now
                last[k] = poll.result()
            elif poll.done() and tasks[k].done() is False:
                # the progress call failed: the worker is gone; its run's error says more
                done, _ = await asyncio.wait([tasks[k]], timeout=5.0)
                exc = tasks[k].exception() if done else poll.exception()
                raise ClusterError(_failure(k, where, exc, "measuring its share", last[k], now - started))
            if now - heard[k] > HEARTBEAT_TIMEOUT_S:
                raise ClusterError(_failure(k, where, None, "measuring its share", last[k], now - started,
                                            silent_s=now - heard[k]))
    finally:
        for poll in polls.values():
            poll.cancel()


def _tick(on_tick: TickCallback, last: list[dict[str, Any]], elapsed: float) -> None:
    try:
        on_tick(elapsed, sum(p.get("qps", 0.0) for p in last), max((p.get("p95_ms", 0.0) for p in last),
                                                                   default=0.0),
                int(sum(p.get("errors", 0) for p in last)), int(sum(p.get("ops", 0) for p in last)))
    except Exception:  # noqa: BLE001 - a display problem must not stop a run
        pass


# --------------------------------------------------------------------------- messages


def _where_text(where: list[dict[str, Any]], k: int) -> str:
    info = where[k] if k < len(where) else {}
    node = info.get("node")
    if not node:
        return f"worker {k}"
    if "host" not in info:  # placed there, had not reported yet
        return f"worker {k} on node {node[:8]} (starting)"
    return f"worker {k} on node {node[:8]} (host {info.get('host')}, {info.get('ip')}, pid {info.get('pid')})"


def _failure(k: int, where: list[dict[str, Any]], exc: BaseException | None, stage: str,
             last: dict[str, Any] | None = None, elapsed: float | None = None,
             silent_s: float | None = None) -> str:
    """The message of a failed worker: which, where, when, and its last words."""
    head = f"load {_where_text(where, k)} failed while {stage}"
    if elapsed is not None:
        head += f", {elapsed:.1f} s into the run"
    lines = [head + ": the run is void (no partial result)"]
    if silent_s is not None:
        lines.append(f"  it did not answer for {silent_s:.0f} s (hung, or its node is unreachable)")
    if exc is not None:
        lines.append(f"  {_exit_detail(exc)}")
    if last:
        lines.append(f"  its last progress: {int(last.get('ops', 0))} ops, {int(last.get('errors', 0))} "
                     f"errors at {last.get('elapsed_s', 0.0):.1f} s ({last.get('state', '?')})")
    words = _last_words(where[k] if k < len(where) else {})
    if words:
        lines.append("  its last words:\n" + "\n".join(f"    | {line}" for line in words))
    return "\n".join(lines)


def _exit_detail(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Worker exit detail:", "The actor is dead because"):
        at = text.find(marker)
        if at >= 0:
            detail = text[at:].split(". Some common causes", 1)[0]
            return f"{type(exc).__name__}: {detail[:400]}"
    cause = getattr(exc, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {str(cause)[:400]}"
    return f"{type(exc).__name__}: {text[-600:]}"


def _last_words(info: dict[str, Any]) -> list[str]:
    """The tail of a worker's log files, when they are on this machine."""
    out: list[str] = []
    for path in info.get("logs", ()):
        try:
            with open(path, "rb") as fh:
                fh.seek(0, 2)
                fh.seek(max(0, fh.tell() - 8192))
                tail = fh.read().decode("utf-8", "replace").splitlines()
        except OSError:
            if info.get("host"):
                out.append(f"(log {path} on host {info['host']})")
            continue
        tail = [line for line in tail if line.strip() and not line.startswith(":job_id:")
                and not line.startswith(":actor_name:") and not line.startswith(":task_name:")]
        out.extend(tail[-LAST_WORDS_LINES:])
    return out[-2 * LAST_WORDS_LINES:]


def _placement(cluster: RayCluster, where: list[dict[str, Any]], parts: list[dict[str, Any]]) -> dict[str, Any]:
    nodes: dict[str, int] = {}
    hosts: dict[str, int] = {}
    for info in where:
        nodes[info["node"][:8]] = nodes.get(info["node"][:8], 0) + 1
        hosts[info["host"]] = hosts.get(info["host"], 0) + 1
    return {
        "backend": "ray", "address": cluster.address or cluster.target, "workers": len(where),
        "nodes": nodes, "hosts": hosts,
        "per_worker": [{"index": info["index"], "node": info["node"], "host": info["host"],
                        "ip": info["ip"], "pid": info["pid"], "ops": part["ops"],
                        "errors": part["errors"], "histogram": part["histogram"]}
                       for info, part in zip(where, parts)],
    }


__all__ = ["run_on_cluster"]
