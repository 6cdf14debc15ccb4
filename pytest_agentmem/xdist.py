"""pytest-xdist: which process this is, and the one hand-over from workers to the controller.

A worker's plugins each put a JSON-ready part into the :class:`WorkerChannel`
(``channel.add(key, send, receive)``): at the end of the worker's session the
channel sends every part in one ``config.workeroutput`` entry; on the
controller, as each worker goes down, it hands each part back to the plugin
that sent it (``receive(worker_id, part)``). One channel, one encoding, one
pair of hooks, whatever the number of plugins that use it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

#: The ``workeroutput`` key of the channel.
WORKEROUTPUT_KEY = "agentmem"


def worker_id(config: pytest.Config) -> str:
    """The pytest-xdist worker id (``gw0``...), or ``""`` in the main (controller) process."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput:
        return str(workerinput.get("workerid", ""))
    return os.environ.get("PYTEST_XDIST_WORKER", "")


def run_number(config: pytest.Config, now: float) -> float:
    """A number naming this pytest run, the same in each of its xdist workers: the first 48 bits
    of xdist's test run uid in a worker, else ``now`` (the run's start, epoch seconds)."""
    uid = str((getattr(config, "workerinput", None) or {}).get("testrunuid", ""))
    try:
        return float(int(uid[:12], 16))
    except ValueError:
        return round(now, 3)


def is_worker(config: pytest.Config) -> bool:
    """True in a pytest-xdist worker process."""
    return getattr(config, "workerinput", None) is not None


def _plain(value: Any) -> Any:
    """A JSON type for what ``json`` cannot encode: numpy scalars, objects with ``to_dict``, sets."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


Send = Callable[[], Any]
Receive = Callable[[str, Any], None]


class WorkerChannel:
    """Hands the plugins' parts from each pytest-xdist worker to the controller."""

    NAME = "agentmem-xdist"

    def __init__(self) -> None:
        self._parts: dict[str, tuple[Send, Receive]] = {}

    def add(self, key: str, send: Send, receive: Receive) -> None:
        """On a worker, ``send()`` gives the part (JSON-ready; ``None``: nothing to send);
        on the controller ``receive(worker_id, part)`` takes it back."""
        self._parts[key] = (send, receive)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        config = session.config
        if not is_worker(config):
            return
        payload = {}
        for key, (send, _) in self._parts.items():
            part = send()
            if part is not None:
                payload[key] = part
        config.workeroutput[WORKEROUTPUT_KEY] = json.dumps(payload, default=_plain)  # type: ignore[attr-defined]

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        raw = getattr(node, "workeroutput", {}).get(WORKEROUTPUT_KEY)
        if not raw:
            return
        workerid = str(getattr(getattr(node, "gateway", None), "id", "?"))
        payload = json.loads(raw)
        for key, (_, receive) in self._parts.items():
            if key in payload:
                receive(workerid, payload[key])
