"""The reaper: removes a run's containers once its pytest process is gone.

Started by :mod:`.containers` with a pipe on its stdin whose other end only the
pytest process holds. It reads until end of file, which comes when pytest closes
the pipe at exit or dies in any way, SIGKILL included, then removes every
container labelled with the run id, unless pytest wrote ``clean`` first (it
removed them all itself). It runs in its own session, so a terminal's
Ctrl-C reaches pytest (which cleans up itself) and not the reaper.

While it waits it is also the run's heartbeat: every ``HEARTBEAT_S`` seconds it
writes the time into each of the run's containers, which tells other runs
sharing the engine that these containers are in use (see :mod:`.containers`).

Usage: ``python -m pytest_agentmem.services.reaper RUN_ID`` (the engine is the one
``DOCKER_HOST`` names, inherited from pytest).
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any


def run_containers(client: Any, run: str) -> list[Any]:
    """The containers labelled with ``run``, skipping any removed while they are listed
    (docker-py lists the ids, then inspects each: a container gone meanwhile, removed by a
    sweep or another reaper, would otherwise fail the whole listing)."""
    from .containers import LABEL_RUN

    return client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run}"},
                                  ignore_removed=True)


def beat(run: str, stop: threading.Event) -> None:
    """Write the heartbeat into the run's containers until ``stop`` is set."""
    import docker

    from .containers import HEARTBEAT_S, write_heartbeat

    client = None
    while not stop.is_set():
        try:
            client = client or docker.from_env(timeout=30)
            for container in run_containers(client, run):
                write_heartbeat(container)
        except Exception:  # noqa: BLE001 - the engine may be busy or gone; try again
            client = None
        stop.wait(HEARTBEAT_S)
    if client is not None:
        client.close()


def remove_run_containers(run: str) -> int:
    """Remove every container labelled with ``run``; return how many."""
    import docker

    client = docker.from_env(timeout=60)
    removed = 0
    try:
        for container in run_containers(client, run):
            try:
                container.remove(force=True, v=True)
                removed += 1
            except docker.errors.NotFound:
                pass
    finally:
        client.close()
    return removed


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m pytest_agentmem.services.reaper RUN_ID", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = threading.Event()
    heart = threading.Thread(target=beat, args=(argv[0], stop), daemon=True)
    heart.start()
    received = b""
    while chunk := sys.stdin.buffer.read(4096):
        received += chunk
    stop.set()
    if received.endswith(b"clean\n"):  # pytest removed them all itself (REAPER_ALL_CLEAN)
        return 0
    try:
        remove_run_containers(argv[0])
    except Exception as exc:  # noqa: BLE001 - nothing to report to; the next run sweeps
        print(f"reaper: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
