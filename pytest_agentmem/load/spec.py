"""What one run of the load engine is asked to do: :class:`LoadSpec`, checked by :func:`validate`.

``op`` is an async callable taking the operation's index; :func:`validate`
checks the arguments of ``perf.run`` (or of a direct :func:`~.engine.run_load`)
and raises :class:`ConfigurationError` saying what to fix.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError
from .result import is_number

Op = Callable[[int], Awaitable[Any]]


@dataclass(frozen=True)
class LoadSpec:
    """The validated parameters of one run."""

    concurrency: int | None = 1
    rate: float | None = None
    duration: float | None = None
    total: int | None = None
    warmup: int = 0
    timeout: float | None = None
    name: str = "load"
    processes: int | None = None
    tick_s: float = 1.0
    think: float | None = None  # closed loop: mean think time (s) before each user's operation
    #: Open loop, a worker's share of a split schedule: its first operation is due this long
    #: after the phase starts (see :func:`.workers.share_specs`); 0 for a whole schedule.
    schedule_offset_s: float = 0.0

    @property
    def mode(self) -> str:
        return "closed" if self.rate is None else "open"

    def offered_ops(self) -> float | None:
        """Operations one round offers at most, when its parameters say (else None).

        A ``total``; in open loop ``rate x duration``; in closed loop with think
        time ``concurrency x duration / think``. A closed loop without think time
        offers as many as the operation allows: unknown before it runs.
        """
        known: list[float] = []
        if self.total is not None:
            known.append(float(self.total))
        if self.duration is not None:
            if self.rate is not None:
                known.append(self.rate * self.duration)
            elif self.think:
                known.append((self.concurrency or 1) * self.duration / self.think)
        return min(known) if known else None


def validate(op: Any, *, concurrency: int | None = None, rate: float | None = None,
             duration: float | None = None, total: int | None = None, warmup: int = 0,
             timeout: float | None = None, name: str = "load",
             processes: int | None = None, think: float | None = None) -> LoadSpec:
    """Check the arguments of a run; raise :class:`ConfigurationError` saying what to fix."""
    if not callable(op):
        raise ConfigurationError(f"perf.run: op must be an async callable taking the op index, got {op!r}")
    if concurrency is not None and (not _is_int(concurrency) or concurrency < 1):
        raise ConfigurationError(f"perf.run: concurrency must be an int >= 1, got {concurrency!r}")
    if rate is not None and (not is_number(rate) or not 0 < rate < math.inf):
        raise ConfigurationError(f"perf.run: rate must be a number of ops per second > 0, got {rate!r}")
    if duration is not None and (not is_number(duration) or not 0 < duration < math.inf):
        raise ConfigurationError(f"perf.run: duration must be a number of seconds > 0, got {duration!r}")
    if total is not None and (not _is_int(total) or total < 1):
        raise ConfigurationError(f"perf.run: total must be an int >= 1, got {total!r}")
    if duration is None and total is None:
        raise ConfigurationError("perf.run: give duration= (seconds) or total= (operations), or both")
    if not _is_int(warmup) or warmup < 0:
        raise ConfigurationError(f"perf.run: warmup must be an int >= 0 (operations), got {warmup!r}")
    if timeout is not None and (not is_number(timeout) or not 0 < timeout < math.inf):
        raise ConfigurationError(f"perf.run: timeout must be a number of seconds > 0, got {timeout!r}")
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"perf.run: name must be a non-empty string, got {name!r}")
    if processes is not None:
        if not _is_int(processes) or processes < 1:
            raise ConfigurationError(f"perf.run: processes must be an int >= 1, got {processes!r}")
        if rate is None and processes > (concurrency or 1):
            raise ConfigurationError(f"perf.run: processes={processes} needs at least as many users "
                                     f"(concurrency={concurrency or 1})")
        if rate is not None and concurrency is not None and processes > concurrency:
            raise ConfigurationError(f"perf.run: processes={processes} splits the cap on operations "
                                     f"in flight (concurrency={concurrency}); give at least one per "
                                     "process, or no cap")
        if processes > 1:
            _check_picklable(op)
    if think is not None:
        if not is_number(think) or not 0 < think < math.inf:
            raise ConfigurationError(f"perf.run: think must be a number of seconds > 0 (the users' "
                                     f"mean think time), got {think!r}")
        if rate is not None:
            raise ConfigurationError("perf.run: think= paces closed-loop users (concurrency=N); "
                                     "an open loop (rate=) has its own schedule: give one of them")
    if rate is None:
        concurrency = concurrency or 1
    return LoadSpec(concurrency=concurrency, rate=None if rate is None else float(rate),
                    duration=None if duration is None else float(duration), total=total,
                    warmup=warmup, timeout=None if timeout is None else float(timeout),
                    name=name, processes=processes, think=None if think is None else float(think))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_picklable(op: Any) -> None:
    try:
        pickle.dumps(op)
    except Exception as exc:  # noqa: BLE001 - any pickling failure means the same thing
        raise ConfigurationError(
            f"perf.run(processes=N): op {op!r} cannot be sent to worker processes ({exc}); "
            "use a module-level async function (or functools.partial of one) that opens "
            "its own connections inside the worker") from None
