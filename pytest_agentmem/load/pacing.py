"""When the rounds of a ``perf.run`` are measured, and how many.

A :class:`RoundPacer` is asked around every round. The plain pacer measures the
rounds back to back and, at the end, lets the gate ask for confirmation rounds
(``pytest_agentmem_confirm_rounds``). Another plugin can hand the ``perf`` fixture
its own pacer through ``pytest_agentmem_round_pacer``: the A/B mode's pacer waits
for its turn so that the base's and the candidate's rounds alternate.
"""

from __future__ import annotations

from typing import Any, Protocol

import pytest

from ..errors import ConfigurationError
from ..measurement import Measurement
from .spec import LoadSpec


class RoundPacer(Protocol):
    """The schedule of one ``perf.run``'s rounds.

    A pacer with a true ``warmup_first`` attribute gets the run's warm-up
    operations done before :meth:`plan` (so that waiting for another party
    overlaps it); otherwise they run at the start of the first round. A pacer
    with a ``paired(name)`` method answering True measures rounds that are
    compared pair by pair with another side's: the calibration probe after each
    round is then skipped (the pairing already cancels the machine's speed).
    """

    async def plan(self, name: str, rounds: int, spec: LoadSpec | None = None) -> int:
        """The number of rounds to measure (``rounds`` asked; more splits the run's length).

        ``spec``: what one of the ``rounds`` asked measures (its duration, total,
        rate, users...), from which a pacer may size shorter rounds.
        """

    async def before_round(self, name: str, number: int) -> None:
        """Wait until round ``number`` (from 0) may start."""

    async def after_round(self, name: str, number: int, metrics: dict[str, float]) -> None:
        """Round ``number`` was measured."""

    async def extra_rounds(self, measurement: Measurement) -> int:
        """Rounds to add before the gate decides (0: none)."""

    async def finish(self, measurement: Measurement) -> None:
        """The run is complete (``measurement`` holds every round)."""


class PlainPacer:
    """Rounds back to back; the gate's confirmation hook decides on extra rounds."""

    def __init__(self, item: pytest.Item) -> None:
        self._item = item

    async def plan(self, name: str, rounds: int, spec: LoadSpec | None = None) -> int:
        return rounds

    async def before_round(self, name: str, number: int) -> None:
        return None

    async def after_round(self, name: str, number: int, metrics: dict[str, float]) -> None:
        return None

    async def extra_rounds(self, measurement: Measurement) -> int:
        extra = self._item.ihook.pytest_agentmem_confirm_rounds(item=self._item, measurement=measurement)
        return checked_extra(extra, "pytest_agentmem_confirm_rounds")

    async def finish(self, measurement: Measurement) -> None:
        return None


def checked_extra(extra: Any, source: str) -> int:
    """``extra`` as a count of rounds (None: 0); a ConfigurationError if it is not one."""
    if not extra:
        return 0
    if not isinstance(extra, int) or isinstance(extra, bool) or extra < 0:
        raise ConfigurationError(f"{source} returned {extra!r}; expected an int >= 0")
    return extra


def pacer_for(item: pytest.Item) -> RoundPacer:
    """The pacer another plugin provides for ``item``, else the plain one."""
    pacer = item.ihook.pytest_agentmem_round_pacer(item=item)
    return pacer if pacer is not None else PlainPacer(item)
