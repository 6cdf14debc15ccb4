"""Speed figures against another machine's baselines: judged relative to the run's other tests.

A baseline recorded on another machine cannot be compared as is: a different CPU
moves every speed figure. Nor can a calibration probe say by how much: how far a
piece of work moves from one CPU to another depends on the work (Python, the
embedding model's vector units, Postgres), and a short probe carries its own noise
(measured: probes read one machine at 0.38x and 0.76x the baseline's while its real
search path ran at 0.9x, and a +57 % CPU regression passed behind them).

So the run's own tests are the probe. At the end of the run, for each speed
metric (``qps``, ``p95_ms``, ``cpu_ms_per_op`` ...), every figure the run measured
against another machine's baseline gives a shift: how many times slower it is
than its baseline. A test's figure is judged against its baseline scaled by the
median shift of the OTHER tests' figures of that metric (leave-one-out, so a
regressed test does not excuse itself) that spend their CPU where it does
(:func:`peer_group`: the embedding model's share of their CPU within
:data:`SHARE_WINDOW` of its own), with the tolerance widened by how much
those tests disagree with each other (:data:`SPREAD_Z` robust standard
deviations of their log shifts): a test that moved more than the machine moved
the others stands out; the same significance test as on one machine decides.
Widened by more than the test's own tolerance, the figure is not judged: a change
of the tolerance's size could hide in that spread. Where the figure's own
run-to-run spread is known (its baseline's recordings, :mod:`.recordings`), it is
decided on the runs instead, as on one machine, with the larger of its own spread
and the other tests' as the scaled baseline's uncertainty.

Its blindness, said with every verdict: a change that slows every test alike
moves the reference with it. The interleaved calibration probes watch for that
(:func:`probe_disagreement`): when the run's tests moved far more than the probes
did, no figure of that metric is called passed.  With fewer than
:data:`MIN_PEERS` other figures of a metric, nothing can be told apart: not judged.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .calibration import slowdown, summarise_probes
from .checks import (
    BUSY,
    DEFERRED,
    PENDING,
    SPREAD,
    GateContext,
    as_ratio,
    decide,
    holm_family,
    not_judged,
    within_spread,
)
from .directions import CPU_COST_METRICS, direction_of
from .metric_kinds import YARDSTICK_METRICS
from .recordings import RunSpread, relative_spread, run_spread
from .stats import centre
from .verdict import CheckResult, TestVerdict

#: Fewest OTHER figures of the same metric a cross-machine judgement needs.
MIN_PEERS = 4
#: A figure's peers are the other figures whose share of CPU in the embedding model is within
#: this of its own (at least :data:`MIN_PEERS`, the nearest, when fewer are). From one run to the
#: next on one shared machine the model-bound tests moved x1.3 while the pure-Python ones moved
#: x1.8 to x2.0: against every test's median, a model-bound figure's +25 % hid in that spread.
SHARE_WINDOW = 0.25
#: The tolerance is widened by this many robust standard deviations of the peers' log shifts.
SPREAD_Z = 2.0
#: Widened by more than the test's own tolerance (and at least this), a figure is not judged:
#: the run's tests moved too unevenly to see a change of the tolerance's size, and "passed"
#: would be blindness (a +25 % regression passed a tolerance widened to 34 %); and without the
#: figure's own spread, failing it beyond the widened tolerance failed unchanged code (+59 %).
MIN_WIDENING_CAP = 0.05
#: The run's median shift may exceed the probes' by this factor times (1 + tolerance)
#: before no figure of the metric is called passed (see :func:`probe_disagreement`).
PROBE_MARGIN = 1.25


@dataclass
class Pending:
    """One speed figure left to the end of the run."""

    verdict: TestVerdict
    check: CheckResult
    samples: list[float]  # the decision's rounds
    base_samples: list[float]
    tolerance: float
    kind: str = "load"
    alpha: float = 0.05
    initial_rounds: dict[str, int] = field(default_factory=dict)
    #: the probe's slowdown in this measurement's rounds against its baseline's
    #: ({"wall": x, "cpu": y}, > 1 slower), when both were measured
    probe: dict[str, float] = field(default_factory=dict)
    #: the figure's own run-to-run spread, from its baseline's recordings (None: unknown)
    spread: RunSpread | None = None
    #: Kept by :func:`resolve` to decide the figure again on fresh rounds (:func:`rejudge`):
    #: the check as it was left for the end, the other tests' shifts, the probes' objection.
    original: CheckResult | None = None
    peers: list[float] = field(default_factory=list)
    suspicious: str | None = None
    #: The centres of the fresh runs (processes) whose rounds ``samples`` holds, when decided
    #: again on them (:func:`rejudge`); empty: this run's rounds.
    runs: tuple[float, ...] = ()
    #: The share of the measurement's CPU the embedding model took (0..1; None: unknown).
    model_share: float | None = None
    #: Which of the run's other figures were its peers, said in its verdict (set by :func:`resolve`).
    peer_basis: str = ""
    #: Its baseline's recordings (each names the run that made it), and its run-to-run spread
    #: relative to its peers' recordings of the same runs (set by :func:`resolve`; None: unknown).
    recordings: tuple[dict[str, float], ...] = ()
    relative: RunSpread | None = None

    def context(self) -> GateContext:
        """What :func:`~.checks.decide` needs of this figure's test."""
        return GateContext(nodeid=self.verdict.nodeid, measurements=(), tolerance=self.tolerance,
                           alpha=self.alpha, initial_rounds=self.initial_rounds)

    @property
    def on_own_runs(self) -> bool:
        """A figure of this machine's own baseline, decided on its recordings' runs, not scaled."""
        return self.check.reason == SPREAD and self.spread is not None

    @property
    def shift(self) -> float | None:
        """How many times slower than its baseline (> 1 slower), whatever the direction."""
        value, base = centre(self.samples), centre(self.base_samples)
        if not (value > 0 and base > 0 and math.isfinite(value) and math.isfinite(base)):
            return None
        return base / value if direction_of(self.check.metric) == "higher" else value / base


def pending_of(verdict: TestVerdict, ctx: GateContext, stored: Any) -> list[Pending]:
    """The figures of ``verdict`` left for the end of the run, with what deciding them needs."""
    out: list[Pending] = []
    for check in verdict.checks:
        if check.verdict != "not-judged" or check.reason not in DEFERRED:
            continue
        m = next((m for m in ctx.measurements if m.name == check.measurement), None)
        base = stored.get(check.measurement) if stored else None
        if m is None or base is None:
            continue
        out.append(Pending(verdict, check, m.samples(check.metric), base.samples(check.metric),
                           ctx.tolerance, m.kind, ctx.alpha, dict(ctx.initial_rounds),
                           slowdown(base.calibration,
                                    summarise_probes(list(getattr(m.load, "calibration", None) or []))) or {},
                           run_spread(base.recordings, check.metric),
                           model_share=getattr(m.load, "model_cpu_share", None),
                           recordings=tuple(base.recordings)))
    return out


def peer_group(p: Pending, items: Sequence[Pending]) -> tuple[list[Pending], str]:
    """The other figures of ``items`` that ``p`` is scaled by, and how they were chosen.

    Those whose embedding model's share of CPU is within :data:`SHARE_WINDOW` of ``p``'s
    (the nearest :data:`MIN_PEERS` when fewer are); every other figure when ``p``'s share
    or too many of theirs are unknown, and for a figure of this machine's own baseline, which
    is not scaled: there the others say how unevenly the machine moved since the recordings."""
    others = [q for q in items if q is not p and q.shift]
    own = p.model_share
    known = [q for q in others if q.model_share is not None]
    if own is None or len(known) < MIN_PEERS or p.on_own_runs:
        return others, ""
    distance = {id(q): abs(q.model_share - own) for q in known}  # type: ignore[operator]
    near = [q for q in known if distance[id(q)] <= SHARE_WINDOW]
    if len(near) < MIN_PEERS:
        near = sorted(known, key=lambda q: distance[id(q)])[:MIN_PEERS]
    low = min(q.model_share for q in near)  # type: ignore[type-var]
    high = max(q.model_share for q in near)  # type: ignore[type-var]
    return near, f"whose CPU went {low:.0%}-{high:.0%} to the embedding model (this one {own:.0%})"


def robust_sd(values: Sequence[float]) -> float:
    """1.4826 x the median absolute deviation (the standard deviation for normal data)."""
    if len(values) < 2:
        return 0.0
    mid = statistics.median(values)
    return 1.4826 * statistics.median(abs(v - mid) for v in values)


def probe_disagreement(metric: str, items: Sequence[Pending], tolerance: float) -> str | None:
    """Why no figure of ``metric`` may be called passed: the run's tests moved far more
    than the interleaved probes did (every test slower: the machine, or every test's code?)."""
    if metric in YARDSTICK_METRICS:
        return None  # measured against the model in the same round: the probes do not apply
    shifts = [p.shift for p in items if p.shift]
    key = "cpu" if metric in CPU_COST_METRICS else "wall"
    probes = [p.probe[key] for p in items if key in p.probe]
    if len(shifts) < MIN_PEERS + 1 or len(probes) < MIN_PEERS + 1:
        return None
    run, probe = statistics.median(shifts), statistics.median(probes)  # type: ignore[type-var]
    if run <= probe * (1 + tolerance) * PROBE_MARGIN:
        return None
    return (f"the run's tests moved {run:.2f}x against their baselines while the calibration probes "
            f"moved {probe:.2f}x: every test slower than the machine seems, so no {metric} figure can "
            "be called passed against another machine's baselines")


def resolve(pending: Sequence[Pending]) -> list[TestVerdict]:
    """Judge every pending figure (in place in its verdict); the verdicts changed."""
    by_metric: dict[str, list[Pending]] = {}
    for p in pending:
        by_metric.setdefault(p.check.metric, []).append(p)
    changed: dict[int, TestVerdict] = {}
    late: list[CheckResult] = []
    for metric, items in sorted(by_metric.items()):
        suspicious = probe_disagreement(metric, items, statistics.median(p.tolerance for p in items))
        for p in items:
            group, p.peer_basis = peer_group(p, items)
            if not p.on_own_runs:  # scaled by its peers: its spread against theirs
                p.relative = relative_spread(p.recordings, [q.recordings for q in group], metric)
            peers = [q.shift for q in group]
            new = _judge(p, peers, suspicious)  # type: ignore[arg-type]
            checks = p.verdict.checks
            checks[checks.index(p.check)] = new
            p.original, p.peers, p.suspicious = p.check, peers, suspicious  # type: ignore[assignment]
            p.check = new
            late.append(new)
            changed[id(p.verdict)] = p.verdict
    for verdict in changed.values():
        # the test's comparisons are one family again, the late ones with the early ones
        holm_family(verdict.checks, statistics.median(p.alpha for p in pending if p.verdict is verdict))
    # ... and the figures judged at the end of the run are one family too, the run's: what
    # fails the run is the run's verdict. Per test, unchanged code failed 6 of 24 runs of the
    # catalogue (single figures of a shared machine moving +23 % to +116 %); judged as one
    # family, 1 of 24 (tests/quality/test_gate_quality_machines.py, December 2026).
    holm_family(late, statistics.median(p.alpha for p in pending))
    for verdict in changed.values():
        verdict.settle()
    return list(changed.values())


def rejudge(p: Pending, runs: Sequence[Sequence[float]]) -> CheckResult:
    """The figure of ``p`` (resolved) decided again, by the same rule and against the same other
    tests, on ``runs``: the rounds of the same measurement in one or more fresh processes
    (:mod:`.reproduce`), each process one run against the recordings' run-to-run spread."""
    if p.original is None:
        raise ValueError("rejudge: the figure was not resolved yet")
    runs = [list(r) for r in runs if r]
    if not runs:
        raise ValueError("rejudge: no fresh rounds")
    samples = [x for r in runs for x in r]
    centres = tuple(centre(r) for r in runs)
    # every fresh round counts: the first rounds of the fresh process are no suspects of this one
    return _judge(replace(p, check=p.original, samples=samples, initial_rounds={}, runs=centres),
                  p.peers, p.suspicious)


def _on_runs(p: Pending, peers: list[float]) -> CheckResult:
    """A figure of this machine's baseline whose recordings tell its run-to-run spread: decided
    on the runs (:func:`~.checks.within_spread`), its spread at least as wide as the run's other
    tests moved against theirs. Recordings made minutes apart can miss how far a shared
    machine drifts over an hour: measured, unchanged code's ``add`` +24 % against a spread of
    4 % over 5 recordings, while the run's other figures moved 14 % (robust SD) as well."""
    assert p.spread is not None
    sd, where = p.spread.sd, "on this machine"
    if len(peers) >= MIN_PEERS:
        moved = robust_sd([math.log(s) for s in peers])
        if moved / math.sqrt(1 + 1 / p.spread.n) > sd:
            sd = moved / math.sqrt(1 + 1 / p.spread.n)
            where = (f"on this machine, and {_others(p, len(peers))} moved "
                     f"{math.exp(moved) - 1:.0%} (1 SD) against their baselines")
    ctx = p.context()
    return within_spread(ctx, p.check.measurement, p.check.metric, p.samples, p.base_samples,
                         RunSpread(sd, p.spread.n), kind=p.kind, where=where, runs=p.runs)


def _others(p: Pending, count: int) -> str:
    """The run's other tests ``p`` is scaled by, as its verdict says them."""
    return f"the run's other {count} tests" + (f" {p.peer_basis}" if p.peer_basis else "")


def _judge(p: Pending, peers: list[float], suspicious: str | None) -> CheckResult:
    check = p.check
    if p.on_own_runs:
        return _on_runs(p, peers)
    busy = check.reason == BUSY
    why = (check.message.split("not judged: ", 1)[-1] if busy else "baseline recorded on another machine")
    advice = ("re-run on a quiet machine, or gate with --agentmem-compare" if busy else
              "record this machine's baselines with --update-baselines, or gate with --agentmem-compare")
    if len(peers) < MIN_PEERS:
        return not_judged(check.measurement, check.metric, check.value, check.reason or PENDING,
                          f"{why}, and only {len(peers)} other test{'s' if len(peers) != 1 else ''} "
                          f"measured {check.metric} in this run (at least {MIN_PEERS} are needed to tell "
                          f"the machine from the code); {advice}", check.baseline)
    logs = [math.log(s) for s in peers]
    shift = math.exp(statistics.median(logs))
    spread = robust_sd(logs)
    where = "on this busy machine" if busy else "against another machine's baselines"
    basis = (f"x{shift:.2f}, the median shift of {_others(p, len(peers))} {where}, "
             f"which spread {math.exp(spread) - 1:.0%}")
    ctx = p.context()
    if p.spread is not None:
        # The figure's own run-to-run spread is known (its baseline's recordings): decided on
        # the runs as on one machine, the scaled baseline's uncertainty the larger of that
        # spread and how much the other tests disagree. Scaled by those tests, the figure moves
        # as much as it moves against them: that spread, where their recordings share its runs.
        own = p.relative or p.spread
        runs = RunSpread(max(own.sd, spread / math.sqrt(1 + 1 / own.n)), own.n, own.relative_to)
        where = ("on its baseline's machine, or they disagree as much" if p.relative else
                 "on its baseline's machine, or the other tests disagree as much")
        judged = within_spread(ctx, check.measurement, check.metric, p.samples, p.base_samples, runs,
                               kind=p.kind, speed=1 / shift, basis=basis, why=f"{why}; scaled by {basis}, ",
                               where=where, runs=p.runs)
    else:
        judged = _widened(p, ctx, shift, spread, basis, why, advice, len(peers))
    if judged.verdict == "pass" and suspicious:
        return not_judged(check.measurement, check.metric, judged.value, "tests and probes disagree",
                          f"{suspicious}; {advice}", check.baseline)
    return judged


def widened(tolerance: float, widening: float, higher: bool) -> float:
    """``tolerance`` widened by the ratio ``1 + widening``, in the metric's own terms.

    Widening the fraction itself would be more lenient for a throughput than for a
    latency: 10 % widened by x1.2 is a latency x1.32, and 1 - 0.68 = 32 % fewer
    operations would be a throughput x1.47. Here both are x1.32.
    """
    ratio = (1 + as_ratio(tolerance, higher)) * (1 + widening)
    return 1 - 1 / ratio if higher else ratio - 1


def _widened(p: Pending, ctx: GateContext, shift: float, spread: float, basis: str, why: str, advice: str,
             peers: int) -> CheckResult:
    """Without the figure's own spread: the tolerance widened by the other tests' spread."""
    check = p.check
    widening = math.exp(SPREAD_Z * spread) - 1
    higher = direction_of(check.metric) == "higher"
    uneven = widening > max(as_ratio(p.tolerance, higher), MIN_WIDENING_CAP)
    tolerance = widened(p.tolerance, widening, higher)
    judged = decide(ctx, check.measurement, check.metric, p.samples, p.base_samples, kind=p.kind,
                    speed=1 / shift, tolerance=tolerance, basis=basis)
    # Too uneven: a change of the tolerance's size hides in the spread, so a pass is not
    # judged; and without the figure's own run-to-run spread, a figure that moves more than
    # most (a multi-threaded library, a 50 us operation) is not told from a regression
    # (measured: +59 % on unchanged code against a widening of 22 %): said, not failed.
    if uneven and judged.verdict in ("pass", "fail"):
        return not_judged(check.measurement, check.metric, judged.value, "tests moved unevenly",
                          f"{why}, and the run's other {peers} tests moved too unevenly against their "
                          f"baselines ({check.metric} x{shift:.2f} in the median, spread {math.exp(spread) - 1:.0%})"
                          f" to see a change of {p.tolerance:.0%} (record its baseline 3 times with "
                          f"--agentmem-add-recording to judge it within its own run-to-run spread); {advice}",
                          check.baseline)
    return judged
