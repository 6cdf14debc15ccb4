"""Wait for a service to become ready: a probe retried until a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until_ready(
    probe: Callable[[], T],
    *,
    timeout: float,
    transient: tuple[type[BaseException], ...],
    still_alive: Callable[[], bool] = lambda: True,
    interval: float = 0.02,
    max_interval: float = 0.25,
) -> T:
    """Call ``probe`` until it returns, retrying on ``transient`` errors.

    Raises :class:`TimeoutError` after ``timeout`` seconds (chained to the last
    transient error) and :class:`ChildProcessError` as soon as ``still_alive``
    says the server process has died: no point waiting for a corpse.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        if not still_alive():
            raise ChildProcessError("the server process exited while we waited for it") from last
        try:
            return probe()
        except transient as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not ready after {timeout:.0f} s: {last}") from last
        time.sleep(interval)
        interval = min(interval * 1.5, max_interval)
