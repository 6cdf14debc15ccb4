"""How far a figure moves from one run to the next: the recordings of a baseline.

The rounds of one run share that run's process: its memory layout, its server
processes, the state of the shared machine while it ran. On a 2-vCPU virtual
machine, unchanged code measured a figure up to 30 % apart from one run to the next
(the LanceDB filtered search, the single-text model run) while each run's own
rounds agreed within a few percent, so a test on the rounds alone takes one run's
luck for a regression. pyperf answers with several processes; a baseline here
answers with several recordings of the same code (``--update-baselines``, then
``--agentmem-add-recording`` once or more): with :data:`MIN_RECORDINGS` or more,
each figure's own run-to-run spread is known, and :meth:`RunSpread.p_worse` says how
likely an unchanged run lands as far as this one did (a prediction for one more run).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .stats import centre

#: Fewest recordings whose spread is used (two give a spread of one difference).
MIN_RECORDINGS = 3
#: The key of a recording that names the pytest run that made it (a number, as every value of a
#: recording is): recordings of several tests made in one run can be set side by side.
RUN_KEY = "run"
#: Fewest other tests recorded in the same run for a recording to count in a relative spread.
MIN_RELATIVE_PEERS = 2
#: Recordings kept in a baseline (the oldest goes first).
MAX_RECORDINGS = 10
#: Rounds kept in a baseline of several recordings (the oldest go first).
MAX_ROUNDS = 200


@dataclass(frozen=True)
class RunSpread:
    """The run-to-run spread of one figure over ``n`` recordings (``sd``: of the log figure)."""

    sd: float
    n: int
    #: Set when the spread is relative to other tests' recordings (:func:`relative_spread`).
    relative_to: str = ""

    def p_worse(self, ratio: float) -> float:
        """How likely an unchanged run measures ``ratio`` times worse than the recordings or
        more (one-sided, Student's t with n - 1 degrees of freedom on the log figure)."""
        if ratio <= 0 or not math.isfinite(ratio):
            return 0.0 if ratio == math.inf else 1.0
        if self.sd <= 0:
            return 0.0 if ratio > 1 else 1.0
        return t_tail(math.log(ratio) / (self.sd * math.sqrt(1 + 1 / self.n)), self.n - 1)

    def p_worse_runs(self, ratios: Sequence[float]) -> float:
        """How likely unchanged code measures, over ``len(ratios)`` runs of its own, this much worse
        than the recordings or more: one run is :meth:`p_worse`; several are compared with the
        recordings as two samples (Student's t on the mean log figure, the spread pooled over the
        recordings and these runs; never below the recordings' own, then on their degrees of freedom)."""
        if not ratios:
            raise ValueError("p_worse_runs: no runs")
        if len(ratios) == 1 or not all(r > 0 and math.isfinite(r) for r in ratios):
            return max(self.p_worse(r) for r in ratios)  # a run with no figure: each run alone
        logs = [math.log(r) for r in ratios]
        m, mean = len(logs), statistics.fmean(logs)
        df = self.n - 1 + m - 1
        pooled = math.sqrt(((self.n - 1) * self.sd ** 2 + sum((v - mean) ** 2 for v in logs)) / df)
        if pooled < self.sd:  # the recordings' spread (maybe widened by the caller) is the floor
            pooled, df = self.sd, self.n - 1
        if pooled <= 0:
            return 0.0 if mean > 0 else 1.0
        return t_tail(mean / (pooled * math.sqrt(1 / m + 1 / self.n)), df)

    def describe(self) -> str:
        against = f" against {self.relative_to}," if self.relative_to else ""
        return f"moves {math.exp(self.sd) - 1:.0%} (1 SD) from run to run{against} over {self.n} recordings"


def t_tail(x: float, df: int) -> float:
    """P(T > x) for Student's t with ``df`` degrees of freedom (Simpson's rule on its density;
    no scipy needed, accurate to about 1e-6 for the small ``df`` of a baseline's recordings)."""
    if x < 0:
        return 1.0 - t_tail(-x, df)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(t: float) -> float:
        return math.exp(log_c - (df + 1) / 2 * math.log1p(t * t / df))

    steps = 2000
    h = x / steps
    inner = sum((4 if i % 2 else 2) * density(i * h) for i in range(1, steps))
    return max(0.0, 0.5 - h / 3 * (density(0.0) + inner + density(x)))


def centres(rounds: Sequence[Mapping[str, float]], metrics: Mapping[str, float]) -> dict[str, float]:
    """One recording: the median of each metric's rounds (the headline figure without rounds)."""
    out = {k: float(v) for k, v in metrics.items()}
    for key in {k for r in rounds for k in r}:
        out[key] = centre([r[key] for r in rounds if key in r])
    return {k: v for k, v in out.items() if math.isfinite(v)}


def relative_spread(own: Sequence[Mapping[str, float]], peers: Sequence[Sequence[Mapping[str, float]]],
                    metric: str) -> RunSpread | None:
    """The run-to-run spread of ``metric`` relative to the same metric of ``peers`` (other tests'
    recordings) recorded in the same runs (:data:`RUN_KEY`); None with fewer than
    :data:`MIN_RECORDINGS` such runs.

    Each run's log figure less the median of the peers' in that run, each peer centred on its
    own mean over those runs: what is left when the run-to-run moves the tests share are taken
    out. A figure judged relative to other tests (another machine's baseline) has this spread,
    not its own: on a shared 2-core machine the search's CPU per search moved 10 % (1 SD) over 5
    recordings, and 5.6 % against the tests whose CPU goes to the model as its own does."""

    def by_run(recordings: Sequence[Mapping[str, float]]) -> dict[float, float]:
        return {r[RUN_KEY]: math.log(r[metric]) for r in recordings
                if RUN_KEY in r and r.get(metric, 0) > 0 and math.isfinite(r[metric])}

    mine = by_run(own)
    centred = []
    for recordings in peers:
        theirs = {run: value for run, value in by_run(recordings).items() if run in mine}
        if len(theirs) >= MIN_RECORDINGS:
            mean = statistics.fmean(theirs.values())
            centred.append({run: value - mean for run, value in theirs.items()})
    values = []
    for run, value in mine.items():
        moved = [c[run] for c in centred if run in c]
        if len(moved) >= MIN_RELATIVE_PEERS:
            values.append(value - statistics.median(moved))
    if len(values) < MIN_RECORDINGS:
        return None
    return RunSpread(statistics.stdev(values), len(values), "the tests it is scaled by")


def run_spread(recordings: Sequence[Mapping[str, float]], metric: str) -> RunSpread | None:
    """The spread of ``metric`` over ``recordings`` (None: fewer than MIN_RECORDINGS positive)."""
    values = [math.log(r[metric]) for r in recordings if r.get(metric, 0) > 0]
    if len(values) < MIN_RECORDINGS:
        return None
    return RunSpread(statistics.stdev(values), len(values))
