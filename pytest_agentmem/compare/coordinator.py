"""The turn-taking of an A/B run: which side measures which round when.

One :class:`Coordinator` lives in the candidate's pytest process. Both sides call
it: the candidate directly (from a worker thread, so its event loop is never
blocked), the base through :class:`~pytest_agentmem.compare.channel.PeerClient`
over a private, authenticated socket served by a thread of ours. Every call
blocks until the run may go on.

The life of one ``perf.run`` named ``run`` in test ``nodeid``:

1. ``arrive``: each side announces the run once its setup (data loading...) is
   done. When both announced the same run they are *paired*; when the other side
   has finished that test, is at another run, or is gone, the caller runs
   *unpaired* (its figures are then "new" or "removed", never compared).
2. ``turn`` / ``done`` for every round: pair ``k`` is measured base then candidate
   when ``k`` is even, candidate then base when odd (ABBA), one side at a time, the
   other side waiting idle.
3. ``set_extra`` (the candidate, after looking at the pairs) / ``more`` (both):
   extra pairs to confirm a suspected regression, measured the same way.
4. ``finish``: a barrier, so neither side's after-work overlaps the other's last
   round; the base hands over its summary.

A side that dies or stops answering marks the peer gone: every wait then returns
at once, and the remaining rounds run unpaired.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Side = Literal["base", "candidate"]
SIDES: tuple[Side, Side] = ("base", "candidate")

#: Longest wait for the other side at one step (its test setup included).
DEFAULT_WAIT_S = 1800.0


def other(side: Side) -> Side:
    return "candidate" if side == "base" else "base"


def first_of_pair(k: int) -> Side:
    """Who measures first in pair ``k`` (ABBA: base, candidate, candidate, base, ...)."""
    return "base" if k % 2 == 0 else "candidate"


class RunEnded(RuntimeError):
    """The candidate's run ended (finished or interrupted): the base side must stop."""


@dataclass(frozen=True)
class Plan:
    """The answer to ``arrive``: measure ``rounds`` rounds, paired or not."""

    paired: bool
    rounds: int
    reason: str = ""


@dataclass
class PairedRun:
    """The state of one paired run."""

    nodeid: str
    run: str
    pairs: int
    slot: int = 0  # index into the turn sequence: pair = slot // 2, side = order within it
    rounds: dict[Side, list[dict[str, float]]] = field(default_factory=lambda: {"base": [], "candidate": []})
    order: list[Side] = field(default_factory=list)  # who measured, in order
    extra: int | None = None
    finished: set[Side] = field(default_factory=set)
    summaries: dict[Side, dict[str, Any]] = field(default_factory=dict)


@dataclass
class _SideState:
    pending: tuple[str, str, int] | None = None  # (nodeid, run, rounds) waiting to pair
    finished: set[str] = field(default_factory=set)  # tests this side is done with
    current: str | None = None


class Coordinator:
    """Pairs the two sides' runs and hands out turns (thread-safe)."""

    def __init__(self, wait_s: float = DEFAULT_WAIT_S,
                 peer_alive: Callable[[], str | None] | None = None) -> None:
        self._cond = threading.Condition()
        self._peer_alive = peer_alive  # None if alive, else why not
        self.candidate_tests: list[str] | None = None  # known once the candidate collected
        self.services: dict[str, str] = {}  # URLs of the servers the base shares
        self.base_tests: list[str] | None = None
        self.not_compared: set[str] = set()  # the candidate's tests that opt out (baseline=False)
        self.peer_gone: str | None = None
        self.ended: str | None = None
        self.wait_s = wait_s
        self._sides: dict[Side, _SideState] = {s: _SideState() for s in SIDES}
        self.runs: dict[tuple[str, str], PairedRun] = {}
        self.unpaired: dict[Side, list[tuple[str, str, str]]] = {"base": [], "candidate": []}
        self.base_outcomes: dict[str, tuple[str, str]] = {}  # nodeid -> (outcome, message)

    # ------------------------------------------------------------------ helpers

    def _wait(self, ready: Any, what: str) -> bool:
        """Wait until ``ready()`` or the peer is gone; False if the peer is gone.

        Raises :class:`RunEnded` once the candidate's run is over (the base then stops).
        """
        deadline = time.monotonic() + self.wait_s
        while not ready():
            if self.ended is not None:
                raise RunEnded(self.ended)
            if self.peer_gone is None and self._peer_alive is not None:
                self.peer_gone = self._peer_alive()
            if self.peer_gone is not None:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                self.peer_gone = f"the other side did not {what} within {self.wait_s:.0f} s"
                self._cond.notify_all()
                return False
            self._cond.wait(min(left, 1.0))
        return True

    def end(self, reason: str) -> None:
        """The candidate's run is over: every wait of the base raises :class:`RunEnded`."""
        with self._cond:
            self.ended = reason
            self._cond.notify_all()

    def mark_gone(self, reason: str) -> None:
        """The base process ended or its connection dropped: stop waiting for it."""
        with self._cond:
            if self.peer_gone is None:
                self.peer_gone = reason
            self._cond.notify_all()

    @property
    def common(self) -> set[str]:
        return set(self.candidate_tests or ()) & set(self.base_tests or ())

    @property
    def new_tests(self) -> list[str]:
        """Tests of the candidate the base does not have."""
        if self.base_tests is None:
            return []
        base = set(self.base_tests)
        return [t for t in self.candidate_tests or () if t not in base]

    @property
    def removed_tests(self) -> list[str]:
        """Tests of the base the candidate does not have (not those it runs uncompared)."""
        cand = set(self.candidate_tests or ()) | self.not_compared
        return [t for t in self.base_tests or () if t not in cand]

    # ------------------------------------------------------------------ protocol

    def collected(self, tests: list[str], services: dict[str, str], not_compared: Sequence[str] = ()) -> None:
        """The candidate's perf tests to compare, in order, and the servers the base is to share.

        ``not_compared``: perf tests the candidate runs without comparing them (the base skips them).
        """
        with self._cond:
            self.not_compared = set(not_compared)
            self.candidate_tests = list(tests)
            self.services = dict(services)
            self._cond.notify_all()

    def hello(self, base_tests: list[str]) -> tuple[list[str], dict[str, str]]:
        """The base's perf tests; returns the order to run the common ones in, and the servers.

        Waits for the candidate's collection (the base starts while it runs).
        """
        with self._cond:
            self.base_tests = list(base_tests)
            self._cond.notify_all()
            self._wait(lambda: self.candidate_tests is not None, "collect its tests")
            wanted = set(base_tests)
            return [t for t in self.candidate_tests or () if t in wanted], dict(self.services)

    def arrive(self, side: Side, nodeid: str, run: str, rounds: int) -> Plan:
        """``side`` is ready to measure ``run`` of ``nodeid`` in ``rounds`` rounds (or pairs)."""
        with self._cond:
            me, peer = self._sides[side], self._sides[other(side)]
            me.current = nodeid
            if not self._wait(lambda: self.base_tests is not None, "start"):
                return Plan(False, rounds, f"base side gone: {self.peer_gone}")
            if nodeid not in self.common:
                reason = "new test (not in the base)" if side == "candidate" else "removed test"
                self.unpaired[side].append((nodeid, run, reason))
                return Plan(False, rounds, reason)
            key = (nodeid, run)
            if key in self.runs:  # the other side arrived first and paired us
                return Plan(True, self.runs[key].pairs)
            pending = peer.pending
            if pending is not None and pending[0] == nodeid and pending[1] == run:
                pairs = rounds if side == "candidate" else pending[2]
                self.runs[key] = PairedRun(nodeid, run, pairs)
                peer.pending = None
                self._cond.notify_all()
                return Plan(True, pairs)
            me.pending = (nodeid, run, rounds)
            self._cond.notify_all()

            def settled() -> bool:
                if key in self.runs:
                    return True
                p = peer.pending
                return nodeid in peer.finished or (p is not None and p[0] == nodeid and p[1] != run)

            self._wait(settled, f"reach {nodeid} [{run}]")
            me.pending = None
            self._cond.notify_all()
            if key in self.runs:
                return Plan(True, self.runs[key].pairs)
            reason = ("the other side's gone: " + self.peer_gone if self.peer_gone
                      else "run not in the other side's test")
            self.unpaired[side].append((nodeid, run, reason))
            return Plan(False, rounds, reason)

    def turn(self, side: Side, nodeid: str, run: str, number: int) -> bool:
        """Wait for ``side``'s turn at round ``number``; False: go on unpaired (peer gone)."""
        with self._cond:
            paired = self.runs[(nodeid, run)]
            slot = 2 * number + (0 if first_of_pair(number) == side else 1)
            return self._wait(lambda: paired.slot >= slot, f"finish its round of {nodeid} [{run}]")

    def done(self, side: Side, nodeid: str, run: str, number: int, metrics: dict[str, float]) -> None:
        """``side`` measured round ``number``: record it and pass the turn."""
        with self._cond:
            paired = self.runs[(nodeid, run)]
            paired.rounds[side].append(dict(metrics))
            paired.order.append(side)
            slot = 2 * number + (0 if first_of_pair(number) == side else 1)
            paired.slot = max(paired.slot, slot + 1)
            self._cond.notify_all()

    def pairs_so_far(self, nodeid: str, run: str) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
        """(base rounds, candidate rounds) of the complete pairs of a run."""
        with self._cond:
            paired = self.runs[(nodeid, run)]
            n = min(len(paired.rounds["base"]), len(paired.rounds["candidate"]))
            return list(paired.rounds["base"][:n]), list(paired.rounds["candidate"][:n])

    def wait_pairs(self, nodeid: str, run: str, count: int) -> bool:
        """Wait until ``count`` pairs of the run are complete (False: peer gone)."""
        with self._cond:
            paired = self.runs[(nodeid, run)]
            return self._wait(lambda: paired.slot >= 2 * count, f"finish round {count} of {nodeid} [{run}]")

    def set_extra(self, nodeid: str, run: str, extra: int) -> None:
        """The candidate's decision: ``extra`` more pairs before the gate decides."""
        with self._cond:
            self.runs[(nodeid, run)].extra = extra
            self._cond.notify_all()

    def more(self, side: Side, nodeid: str, run: str) -> int:
        """Extra pairs to measure (the base waits for the candidate's decision)."""
        with self._cond:
            paired = self.runs[(nodeid, run)]
            if not self._wait(lambda: paired.extra is not None, f"decide on {nodeid} [{run}]"):
                return 0
            return int(paired.extra or 0)

    def finish(self, side: Side, nodeid: str, run: str, summary: dict[str, Any]) -> None:
        """Barrier at the end of a paired run; the base hands over its summary."""
        with self._cond:
            paired = self.runs[(nodeid, run)]
            paired.finished.add(side)
            paired.summaries[side] = summary
            self._cond.notify_all()
            self._wait(lambda: len(paired.finished) == 2, f"finish {nodeid} [{run}]")

    def test_finished(self, side: Side, nodeid: str, outcome: str = "", message: str = "") -> None:
        """``side`` is done with ``nodeid`` (passed, failed or skipped)."""
        with self._cond:
            self._sides[side].finished.add(nodeid)
            if side == "base":
                self.base_outcomes[nodeid] = (outcome, message)
            self._cond.notify_all()

    def run_of(self, nodeid: str, run: str) -> PairedRun | None:
        with self._cond:
            return self.runs.get((nodeid, run))
