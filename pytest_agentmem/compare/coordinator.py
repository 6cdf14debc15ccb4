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

With several processes a side (``--agentmem-compare-processes N``) the
*participants* are ``base``, ``base.2`` .. ``base.N`` and ``candidate``,
``candidate.2`` .. ``candidate.N`` (the user's process is ``candidate``, the one
that gates). A run is paired when every participant arrived at it; a *block* of
rounds is one round of each participant, the two sides alternating, in reverse
order every other block (:func:`block_order`; with one process a side: ABBA).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Side = Literal["base", "candidate"]
SIDES: tuple[Side, Side] = ("base", "candidate")
#: A process of an A/B run: ``base`` / ``candidate``, or ``base.2``, ``candidate.3``... (see the module doc).
Participant = str

#: Longest wait for the other side at one step (its test setup included).
DEFAULT_WAIT_S = 1800.0


def side_of(participant: Participant) -> Side:
    """The side a participant measures: ``base.2`` -> ``base``."""
    side = participant.split(".", 1)[0]
    if side not in SIDES:
        raise ValueError(f"not an A/B participant: {participant!r}")
    return side  # type: ignore[return-value]


def participants(processes: int = 1) -> tuple[Participant, ...]:
    """The participants of a run with ``processes`` processes a side, bases first."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    return tuple(f"{side}.{i}" if i > 1 else side for side in SIDES for i in range(1, processes + 1))


def block_order(k: int, members: Sequence[Participant]) -> list[Participant]:
    """Who measures when in block ``k``: the sides alternate (base, candidate, base.2,
    candidate.2 ...), in reverse every other block (with one process a side: ABBA)."""
    bases = [p for p in members if side_of(p) == "base"]
    candidates = [p for p in members if side_of(p) == "candidate"]
    order = [p for pair in zip(bases, candidates) for p in pair]
    return order if k % 2 == 0 else order[::-1]


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
    pairs: int  # blocks: one round of every participant each
    members: tuple[Participant, ...] = SIDES
    slot: int = 0  # index into the turn sequence: block = slot // len(members), then block_order
    rounds: dict[Participant, list[dict[str, float]]] = field(default_factory=dict)
    order: list[Participant] = field(default_factory=list)  # who measured, in order
    extra: int | None = None
    finished: set[Participant] = field(default_factory=set)
    summaries: dict[Participant, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for p in self.members:
            self.rounds.setdefault(p, [])

    def slot_of(self, participant: Participant, number: int) -> int:
        """The turn sequence's index of ``participant``'s round ``number``."""
        return number * len(self.members) + block_order(number, self.members).index(participant)

    def complete_blocks(self) -> int:
        """Blocks every participant has measured."""
        return min(len(r) for r in self.rounds.values())


@dataclass
class _SideState:
    pending: tuple[str, str, int] | None = None  # (nodeid, run, rounds) waiting to pair
    finished: set[str] = field(default_factory=set)  # tests this side is done with
    current: str | None = None


class Coordinator:
    """Pairs the participants' runs and hands out turns (thread-safe)."""

    def __init__(self, wait_s: float = DEFAULT_WAIT_S,
                 peer_alive: Callable[[], str | None] | None = None,
                 members: Sequence[Participant] = SIDES) -> None:
        self.members = tuple(members)
        for p in self.members:
            side_of(p)
        self._cond = threading.Condition()
        self._peer_alive = peer_alive  # None if alive, else why not
        self.candidate_tests: list[str] | None = None  # known once the candidate collected
        self.services: dict[Participant, dict[str, str]] = {}  # URLs of the servers each peer shares
        self.base_tests: list[str] | None = None
        self.not_compared: set[str] = set()  # the candidate's tests that opt out (reference=False)
        self.peer_gone: str | None = None
        self.ended: str | None = None
        self.wait_s = wait_s
        self._sides: dict[Participant, _SideState] = {p: _SideState() for p in self.members}
        self.runs: dict[tuple[str, str], PairedRun] = {}
        self.unpaired: dict[Participant, list[tuple[str, str, str]]] = {p: [] for p in self.members}
        self.base_outcomes: dict[str, tuple[str, str]] = {}  # nodeid -> (outcome, message)
        #: a process other than the user's that failed a test: nodeid -> (participant, message)
        self.peer_failures: dict[str, tuple[Participant, str]] = {}

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

    def collected(self, tests: list[str], services: dict[Participant, dict[str, str]],
                  not_compared: Sequence[str] = ()) -> None:
        """The candidate's perf tests to compare, in order, and the servers each peer is to share.

        ``not_compared``: perf tests the candidate runs without comparing them (the base skips them).
        """
        with self._cond:
            self.not_compared = set(not_compared)
            self.candidate_tests = list(tests)
            self.services = dict(services)
            self._cond.notify_all()

    def hello(self, participant: Participant, tests: list[str]) -> tuple[list[str], dict[str, str]]:
        """A peer's perf tests; returns the order to run the common ones in, and the servers.

        Waits for the candidate's collection (the peers start while it runs).
        """
        with self._cond:
            if side_of(participant) == "base" and self.base_tests is None:
                self.base_tests = list(tests)  # every base process runs the same tree
            self._cond.notify_all()
            self._wait(lambda: self.candidate_tests is not None, "collect its tests")
            wanted = set(tests)
            if side_of(participant) == "candidate":  # another candidate process: the compared tests only
                self._wait(lambda: self.base_tests is not None, "collect the base's tests")
                wanted &= set(self.base_tests or ())
            return ([t for t in self.candidate_tests or () if t in wanted],
                    dict(self.services.get(participant, {})))

    def arrive(self, side: Participant, nodeid: str, run: str, rounds: int) -> Plan:
        """``side`` is ready to measure ``run`` of ``nodeid`` in ``rounds`` rounds (or pairs)."""
        with self._cond:
            me = self._sides[side]
            me.current = nodeid
            if not self._wait(lambda: self.base_tests is not None, "start"):
                return Plan(False, rounds, f"base side gone: {self.peer_gone}")
            if nodeid not in self.common:
                reason = "new test (not in the base)" if side_of(side) == "candidate" else "removed test"
                self.unpaired[side].append((nodeid, run, reason))
                return Plan(False, rounds, reason)
            key = (nodeid, run)
            if key in self.runs:  # the others arrived first and paired us
                return Plan(True, self.runs[key].pairs)
            me.pending = (nodeid, run, rounds)
            others = [self._sides[p] for p in self.members if p != side]
            if all(o.pending is not None and o.pending[:2] == (nodeid, run) for o in others):
                pairs = (rounds if side == "candidate" else self._sides["candidate"].pending[2])  # type: ignore[index]
                self.runs[key] = PairedRun(nodeid, run, pairs, self.members)
                for state in self._sides.values():
                    state.pending = None
                self._cond.notify_all()
                return Plan(True, pairs)
            self._cond.notify_all()

            def settled() -> bool:
                if key in self.runs:
                    return True
                return any(nodeid in o.finished or (o.pending is not None and o.pending[0] == nodeid
                                                    and o.pending[1] != run) for o in others)

            self._wait(settled, f"reach {nodeid} [{run}]")
            me.pending = None
            self._cond.notify_all()
            if key in self.runs:
                return Plan(True, self.runs[key].pairs)
            reason = ("the other side's gone: " + self.peer_gone if self.peer_gone
                      else "run not in the other side's test")
            self.unpaired[side].append((nodeid, run, reason))
            return Plan(False, rounds, reason)

    def turn(self, side: Participant, nodeid: str, run: str, number: int) -> bool:
        """Wait for ``side``'s turn at round ``number``; False: go on unpaired (peer gone)."""
        with self._cond:
            paired = self.runs[(nodeid, run)]
            slot = paired.slot_of(side, number)
            return self._wait(lambda: paired.slot >= slot, f"finish its round of {nodeid} [{run}]")

    def done(self, side: Participant, nodeid: str, run: str, number: int, metrics: dict[str, float]) -> None:
        """``side`` measured round ``number``: record it and pass the turn."""
        with self._cond:
            paired = self.runs[(nodeid, run)]
            paired.rounds[side].append(dict(metrics))
            paired.order.append(side)
            paired.slot = max(paired.slot, paired.slot_of(side, number) + 1)
            self._cond.notify_all()

    def pairs_so_far(self, nodeid: str, run: str) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
        """(base rounds, candidate rounds) of the complete blocks of a run (the first process a side)."""
        with self._cond:
            paired = self.runs[(nodeid, run)]
            n = paired.complete_blocks()
            return list(paired.rounds["base"][:n]), list(paired.rounds["candidate"][:n])

    def wait_pairs(self, nodeid: str, run: str, count: int) -> bool:
        """Wait until ``count`` blocks of the run are complete (False: peer gone)."""
        with self._cond:
            paired = self.runs[(nodeid, run)]
            size = len(paired.members)
            return self._wait(lambda: paired.slot >= size * count, f"finish round {count} of {nodeid} [{run}]")

    def set_extra(self, nodeid: str, run: str, extra: int) -> None:
        """The candidate's decision: ``extra`` more pairs before the gate decides."""
        with self._cond:
            self.runs[(nodeid, run)].extra = extra
            self._cond.notify_all()

    def more(self, side: Participant, nodeid: str, run: str) -> int:
        """Extra pairs to measure (the base waits for the candidate's decision)."""
        with self._cond:
            paired = self.runs[(nodeid, run)]
            if not self._wait(lambda: paired.extra is not None, f"decide on {nodeid} [{run}]"):
                return 0
            return int(paired.extra or 0)

    def finish(self, side: Participant, nodeid: str, run: str, summary: dict[str, Any]) -> None:
        """Barrier at the end of a paired run; the peers hand over their summaries."""
        with self._cond:
            paired = self.runs[(nodeid, run)]
            paired.finished.add(side)
            paired.summaries[side] = summary
            self._cond.notify_all()
            self._wait(lambda: len(paired.finished) == len(paired.members), f"finish {nodeid} [{run}]")

    def test_finished(self, side: Participant, nodeid: str, outcome: str = "", message: str = "") -> None:
        """``side`` is done with ``nodeid`` (passed, failed or skipped)."""
        with self._cond:
            self._sides[side].finished.add(nodeid)
            if side == "base":
                self.base_outcomes[nodeid] = (outcome, message)
            if side != "candidate" and outcome == "failed":
                self.peer_failures.setdefault(nodeid, (side, message))
            self._cond.notify_all()

    def run_of(self, nodeid: str, run: str) -> PairedRun | None:
        with self._cond:
            return self.runs.get((nodeid, run))
