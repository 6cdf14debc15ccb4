"""The A/B round pacer: the ``perf`` fixture's rounds, alternated with the other side's.

Both sides run the same ``perf.run`` with a :class:`PairedPacer`. Calls into the
coordinator block, so they run in a worker thread: the test's event loop stays
free (the other side's turn can take seconds). A run the other side does not
have (or a side that went away) is measured unpaired, back to back.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable
from typing import Any

import pytest

from ..evidence.run import AB_BASE_EVIDENCE, reference_of
from ..load.pacing import PlainPacer, checked_extra
from ..load.spec import LoadSpec
from ..measurement import Measurement
from .channel import PeerError
from .coordinator import Participant, Plan

#: Fewest paired rounds of a run (fewer cannot show a significant change reliably).
MIN_AUTO_PAIRS = 10
#: Most paired rounds chosen automatically (longer runs get longer rounds).
MAX_AUTO_PAIRS = 200
#: Length of a round the automatic choice aims at, in seconds of measured time.
ROUND_TARGET_S = 0.05
#: Fewest operations a round is expected to hold when the run says how many it offers.
MIN_ROUND_OPS = 20


def pairs_text(pairs: int | None) -> str:
    """How a run's rounds are paired, for the reports: a fixed count or the automatic choice."""
    return f"{pairs} paired rounds" if pairs else f"paired rounds of about {ROUND_TARGET_S * 1000:.0f} ms"


def auto_pairs(spec: LoadSpec | None, rounds: int = 1) -> int:
    """How many paired rounds to split a run of ``rounds`` rounds of ``spec`` into by default.

    Short rounds pair better. The host's own disturbances (other tenants of a
    cloud VM, frequency changes) come in bursts of a tenth of a second to a
    second: measured here on a quiet machine, a CPU-bound operation's cost per
    operation stayed within 2 % in most 0.2 s windows but rose 10-60 % in a
    quarter of them. A burst then lands on one side of a 0.2 s pair only, while
    rounds of 50 ms put both sides of most pairs inside the same burst. With the
    same 2 s measured a side, the 90 % interval of the paired change was 11-16
    points wide over 10 pairs of 0.2 s and 1-4 points over 40 pairs of 50 ms.
    A round costs the hand-over between the processes (about 2 ms of wall
    time, not measured).

    So: rounds of :data:`ROUND_TARGET_S` of the run's measured time, but, when
    the run says how many operations it offers (a ``total``, a ``rate``, think
    time), each round expected to hold :data:`MIN_ROUND_OPS` of them and at least
    one per closed-loop user (a round starts every user anew: 20,000 agents that
    think for minutes need long rounds); within :data:`MIN_AUTO_PAIRS` ..
    :data:`MAX_AUTO_PAIRS`. A run over worker processes (``processes=N``) starts
    them every round: it gets the fewest.
    """
    if spec is None or (spec.processes and spec.processes > 1):
        return MIN_AUTO_PAIRS
    candidates: list[int] = []
    if spec.duration is not None:
        candidates.append(round(spec.duration * rounds / ROUND_TARGET_S))
    offered = spec.offered_ops()
    if offered is not None:
        per_round = max(MIN_ROUND_OPS, spec.concurrency or 0) if spec.mode == "closed" else MIN_ROUND_OPS
        candidates.append(math.floor(offered * rounds / per_round))
    if not candidates:
        return MIN_AUTO_PAIRS
    return max(MIN_AUTO_PAIRS, min(MAX_AUTO_PAIRS, min(candidates)))


#: Decides the extra pairs from (base rounds, candidate rounds); candidate side only.
ExtraDecision = Callable[[str, list[dict[str, float]], list[dict[str, float]]], int]


def start_on_cpu(number: int) -> None:
    """Start round ``number`` on CPU ``number % n`` of this thread's allowed set (Linux).

    Both sides of a pair start their round on the same CPU, and the pairs rotate
    over the CPUs. Left alone, the scheduler keeps each process on "its" CPU for
    the whole run, and a CPU that is slower for the run (a busy neighbour
    sharing it, a hot sibling) then biases every pair the same way. The thread
    is only moved, not pinned: its affinity is restored at once, so threads it
    starts and the scheduler's later choices are as in a plain run.
    """
    try:
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) < 2:
            return
        os.sched_setaffinity(0, {allowed[number % len(allowed)]})
        os.sched_setaffinity(0, allowed)
    except (AttributeError, OSError):  # not Linux, or not allowed: leave placement to the OS
        return


class PairedPacer:
    """Alternates this side's rounds with the other side's through ``channel``.

    ``channel`` is the :class:`~pytest_agentmem.compare.coordinator.Coordinator`
    itself on the candidate side, a :class:`~pytest_agentmem.compare.channel.PeerClient`
    on the base side; both offer the same calls. ``pairs``: paired rounds of
    every run (None: :func:`auto_pairs` from the run's length; the candidate's
    count is the one both sides measure). ``decide_extra`` (candidate side)
    looks at the pairs of a run and answers how many pairs to add.
    """

    #: warm up before arriving: both sides warm up while they wait for each other
    warmup_first = True

    def __init__(self, side: Participant, nodeid: str, channel: Any, plain: PlainPacer, *,
                 pairs: int | None = None, decide_extra: ExtraDecision | None = None) -> None:
        self.side = side
        self.nodeid = nodeid
        self._channel = channel
        self._plain = plain
        self._pairs = pairs
        self._decide_extra = decide_extra
        self._plans: dict[str, Plan] = {}
        self._planned: dict[str, int] = {}

    async def _call(self, method: str, *args: Any) -> Any:
        call = getattr(self._channel, "call", None)
        if call is not None:  # PeerClient: the side is implied by the connection
            try:
                return await asyncio.to_thread(call, method, *args)
            except PeerError as exc:  # the candidate's run is over: nothing left to pair
                pytest.exit(f"A/B base side: stopping, {exc}", returncode=pytest.ExitCode.INTERRUPTED)
        function = getattr(self._channel, method)
        return await asyncio.to_thread(function, self.side, *args)

    def paired(self, name: str) -> bool:
        """True while ``name``'s rounds alternate with the other side's."""
        plan = self._plans.get(name)
        return plan is not None and plan.paired

    async def plan(self, name: str, rounds: int, spec: LoadSpec | None = None) -> int:
        pairs = self._pairs if self._pairs is not None else auto_pairs(spec, rounds)
        plan: Plan = await self._call("arrive", self.nodeid, name, max(rounds, pairs))
        self._plans[name] = plan
        self._planned[name] = plan.rounds if plan.paired else rounds
        return self._planned[name]

    async def before_round(self, name: str, number: int) -> None:
        if self.paired(name):
            ok = await self._call("turn", self.nodeid, name, number)
            if not ok:  # the other side went away: go on alone
                self._plans[name] = Plan(False, self._planned[name], "the other side went away")
            else:
                start_on_cpu(number)

    async def after_round(self, name: str, number: int, metrics: dict[str, float]) -> None:
        if self.paired(name):
            await self._call("done", self.nodeid, name, number, metrics)

    async def extra_rounds(self, measurement: Measurement) -> int:
        name = measurement.name
        if not self.paired(name):
            return await self._plain.extra_rounds(measurement) if self.side == "candidate" else 0
        if self.side != "candidate":  # a peer: the candidate decides
            return checked_extra(await self._call("more", self.nodeid, name), "the candidate side")
        coordinator = self._channel
        planned = self._planned[name]
        complete = await asyncio.to_thread(coordinator.wait_pairs, self.nodeid, name, planned)
        extra = 0
        if complete and self._decide_extra is not None:
            base, cand = coordinator.pairs_so_far(self.nodeid, name)
            extra = checked_extra(self._decide_extra(name, base, cand), "the A/B re-measurement request")
            if extra:
                measurement.info["ab_initial_pairs"] = len(cand)
        coordinator.set_extra(self.nodeid, name, extra)
        return extra

    async def finish(self, measurement: Measurement) -> None:
        name = measurement.name
        plan = self._plans.get(name)
        if plan is None:
            return
        if not plan.paired:
            measurement.info["ab_unpaired"] = plan.reason or "unpaired"
            return
        summary = {"metrics": dict(measurement.metrics),
                   "evidence": reference_of(measurement)}  # issue 23: statements, profile stacks
        await self._call("finish", self.nodeid, name, summary)
        if self.side == "candidate":
            run = self._channel.run_of(self.nodeid, name)
            if run is not None:
                n = run.complete_blocks()
                if len(run.members) > 2:  # several processes a side: every process's rounds
                    measurement.info["ab_process_rounds"] = {p: [dict(r) for r in rounds[:n]]
                                                             for p, rounds in run.rounds.items()}
                measurement.info["ab_base_rounds"] = [dict(r) for r in run.rounds["base"][:n]]
                measurement.info["ab_candidate_rounds"] = [dict(r) for r in run.rounds["candidate"][:n]]
                measurement.info["ab_order"] = list(run.order)
                measurement.info["ab_base_metrics"] = dict(run.summaries.get("base", {}).get("metrics", {}))
                measurement.info[AB_BASE_EVIDENCE] = run.summaries.get("base", {}).get("evidence") or {}
