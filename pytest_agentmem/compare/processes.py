"""A/B with several processes a side: the change judged against how much processes differ.

Pairing rounds cancels what changes during a run, not what differs between two
processes for their whole life: identical code measured in the base's and the
candidate's process differed by up to 4.5 % CPU per operation on this catalogue's
micro-operations, with paired intervals of +-0.5 % (so one process a side calls it
"significant"), and by 9-12 % on runs that write into each side's own database.
That difference is random from one pair of processes to the next, so the unit of
evidence is the process, not the round (pyperf's advice, and its 20 processes).

With ``N`` processes a side (``--agentmem-compare-processes N``), every process
measures every run in blocks: one round of each process per block, the sides
alternating (:func:`~.coordinator.block_order`). For each metric:

1. each round is compared with its block's mean (on the log scale; rates by
   difference): the machine's drift during the run cancels within a block;
2. each process's *effect* is the median of its rounds' deviations;
3. the change is the mean effect of the candidate's processes minus the base's,
   and its standard error comes from how much the processes of one side differ
   from each other (pooled, ``2N - 2`` degrees of freedom): a Student t test of
   "the candidate is worse", one-sided, and its 90 % interval.

So a difference between processes is measured in every run instead of assumed,
and the gate fails only a change that stands out from it.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Mapping, Sequence

from ..gate.directions import direction_of, is_rate
from ..gate.recordings import t_tail
from .coordinator import Participant, side_of
from .paired import INTERVAL_LEVEL, PairedChange

#: Fewest processes a side the process-level test needs (2 a side: 2 degrees of freedom).
MIN_PROCESSES = 2


@functools.lru_cache(maxsize=64)
def t_quantile(level: float, df: int) -> float:
    """The ``level`` quantile of Student's t with ``df`` degrees of freedom (``level`` > 0.5;
    memoised: a run asks for the same few, and each costs about 40 ms of bisection)."""
    lo, hi = 0.0, 1000.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if 1 - t_tail(mid, df) < level:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _effects(rows: Mapping[Participant, Sequence[float]]) -> dict[Participant, float] | None:
    """Each process's median deviation from its blocks' means (None: no block usable)."""
    members = list(rows)
    n = min(len(v) for v in rows.values())
    deviations: dict[Participant, list[float]] = {p: [] for p in members}
    for k in range(n):
        block = [rows[p][k] for p in members]
        if any(not math.isfinite(v) for v in block):
            continue
        mean = sum(block) / len(block)
        for p, v in zip(members, block):
            deviations[p].append(v - mean)
    if not deviations[members[0]]:
        return None
    return {p: statistics.median(d) for p, d in deviations.items()}


def compare_processes(metric: str, rounds: Mapping[Participant, Sequence[Mapping[str, float]]]
                      ) -> PairedChange | None:
    """``metric`` compared over the processes of both sides (None: no direction, too few processes
    or no complete block). ``pairs`` of the result counts the processes a side; ``p_value`` is the
    one-sided t test's."""
    direction = direction_of(metric)
    bases = [p for p in rounds if side_of(p) == "base"]
    candidates = [p for p in rounds if side_of(p) == "candidate"]
    if direction == "none" or min(len(bases), len(candidates)) < MIN_PROCESSES:
        return None
    raw = {p: [float(r.get(metric, math.nan)) for r in rounds[p]] for p in (*bases, *candidates)}
    values = [v for series in raw.values() for v in series if math.isfinite(v)]
    if not values:
        return None
    additive = is_rate(metric) or any(v <= 0 for v in values)
    transformed = raw if additive else {p: [math.log(v) if v > 0 else math.nan for v in s] for p, s in raw.items()}
    effects = _effects(transformed)
    if effects is None:
        return None
    sign = 1.0 if direction == "lower" else -1.0
    b = [effects[p] for p in bases]
    c = [effects[p] for p in candidates]
    worse = sign * (statistics.fmean(c) - statistics.fmean(b))
    df = len(b) + len(c) - 2
    spread = _pooled_sd(b, c)
    se = spread * math.sqrt(1 / len(b) + 1 / len(c))
    if se > 0:
        p_value = t_tail(worse / se, df)
        half = t_quantile(1 - (1 - INTERVAL_LEVEL) / 2, df) * se
    else:
        p_value, half = (0.0 if worse > 0 else 1.0), 0.0
    low, high = worse - half, worse + half
    if not additive:  # back on the ratio scale: +0.10 = 10 % worse
        to_change = (lambda x: math.exp(x) - 1) if direction == "lower" else (lambda x: 1 - math.exp(-x))
        worse, low, high = to_change(worse), to_change(low), to_change(high)
    base_centre = statistics.median(v for p in bases for v in raw[p] if math.isfinite(v))
    cand_centre = statistics.median(v for p in candidates for v in raw[p] if math.isfinite(v))
    return PairedChange(metric, direction, min(len(bases), len(candidates)), base_centre, cand_centre,
                        worse, (low, high), p_value, additive=additive, spread=None if additive else spread)


def _pooled_sd(b: Sequence[float], c: Sequence[float]) -> float:
    """The pooled standard deviation of two groups' values (``len(b) + len(c) - 2`` df)."""
    mb, mc = statistics.fmean(b), statistics.fmean(c)
    return math.sqrt((sum((x - mb) ** 2 for x in b) + sum((x - mc) ** 2 for x in c)) / (len(b) + len(c) - 2))
