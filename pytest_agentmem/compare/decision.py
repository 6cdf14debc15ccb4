"""The A/B gate: paired checks of a test's runs, and the screen that asks for more pairs.

A metric of a paired run fails when, over all its pairs (the first ones and the
confirmation pairs), the paired change (:mod:`.paired`) is worse than the
tolerance, by more than the latency jitter floor, and the one-sided signed-rank
p survives Holm-Bonferroni across the test's comparisons at ``alpha``. A run that
may be regressed after its first pairs (the interval of the change reaches
beyond the tolerance, and the change is worse at a loose ``SCREEN_ALPHA``) gets
as many pairs again before that decision: a failure always stands on
re-measured evidence, and a change just at the tolerance is decided on twice
the pairs.

Wall-time metrics (throughput, latencies) are judged only when the machine
treated both sides alike. Each round records its *wait share*: the part of its
wall time the event loop's thread (which runs the operations) was ready to run
while other threads held the CPUs (:func:`pytest_agentmem.load.resources.run_queue_wait_s`). Pairing
cancels a neighbour that takes the same share from both sides; a load that
comes and goes within seconds does not take the same share, and then the wall
time of a pair measures the machine, not the code (measured here, other jobs
keeping the load average at 13 on 2 cores: the process waited 72 % of each
round, one side's wait differed from the other's by 4 points in the median
pair, and unchanged code lost 11 % of its throughput "significantly"). When
the median pair differs by more than :data:`WAIT_IMBALANCE`, wall-time metrics
are reported, not judged, and ``cpu_ms_per_op`` - which such waiting does not
change - decides.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from ..gate.checks import ALPHA, GateContext, fmt, label, pct
from ..gate.directions import CPU_COST_METRICS, compared, is_primary, is_time_like, latency_floor
from ..gate.verdict import SIDES_UNEQUAL, CheckResult, Verdict
from ..load.fixtures import WAIT_SHARE
from ..measurement import Measurement
from .coordinator import side_of
from .paired import PairedChange, compare_pairs
from .processes import compare_processes

#: Loose level of the screen that asks for confirmation pairs.
SCREEN_ALPHA = 0.20
#: Fewest confirmation pairs added to a suspect.
MIN_CONFIRM_PAIRS = 6
#: Smallest error-rate increase that can fail (one error in a thousand operations).
ERROR_RATE_FLOOR = 0.001
#: Largest median difference of the two sides' wait shares (share of a round's wall time)
#: at which wall-time metrics are still judged.
WAIT_IMBALANCE = 0.02


def is_wall_time(metric: str) -> bool:
    """Throughput and latencies: what another process's use of the CPUs changes."""
    return is_time_like(metric) and metric not in CPU_COST_METRICS


def interference(base: Sequence[dict[str, float]], cand: Sequence[dict[str, float]]) -> tuple[float, float, float] | None:
    """(median wait share of the base, of the candidate, median per-pair difference); None if unknown."""
    pairs = [(b[WAIT_SHARE], c[WAIT_SHARE]) for b, c in zip(base, cand) if WAIT_SHARE in b and WAIT_SHARE in c]
    if not pairs:
        return None
    return (statistics.median(b for b, _ in pairs), statistics.median(c for _, c in pairs),
            statistics.median(abs(c - b) for b, c in pairs))


def unequal_machine(base: Sequence[dict[str, float]], cand: Sequence[dict[str, float]],
                    unit: str = "pair") -> str | None:
    """Why wall-time metrics cannot be judged on these pairs (see the module docstring), or None."""
    found = interference(base, cand)
    if found is None or found[2] <= WAIT_IMBALANCE:
        return None
    wb, wc, diff = found
    return (f"not judged: other processes took unequal CPU time from the two sides (each waited for a "
            f"CPU, base {wb:.0%} and candidate {wc:.0%} of a round, {diff:.0%} apart in the median "
            f"{unit}); cpu_ms_per_op decides")


def side_waits(processes: Mapping[str, Sequence[dict[str, float]]]) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """Each block's wait share, averaged over each side's processes: (base, candidate).

    With several processes a side, that average is what the sides' comparison rests on;
    one process's wait share alone is noisier by the square root of their number.
    """
    n = min((len(r) for r in processes.values()), default=0)
    out: tuple[list[dict[str, float]], list[dict[str, float]]] = ([], [])
    for k in range(n):
        for side, rows in zip(("base", "candidate"), out):
            shares = [processes[p][k].get(WAIT_SHARE) for p in processes if side_of(p) == side]
            known = [x for x in shares if x is not None]
            rows.append({WAIT_SHARE: statistics.fmean(known)} if known and len(known) == len(shares) else {})
    return out


def allowed_change(c: PairedChange, tolerance: float) -> float:
    """The largest change of ``c`` within the tolerance (a rate's: a difference, at least the floor)."""
    return max(ERROR_RATE_FLOOR, tolerance * abs(c.base)) if c.additive else tolerance


def _beyond(c: PairedChange, change: float, tolerance: float) -> bool:
    """``change`` (of ``c``) exceeds the tolerance and ``c`` exceeds the metric's jitter floor."""
    if c.additive:
        return change > allowed_change(c, tolerance)
    return change > tolerance and abs(c.candidate - c.base) > latency_floor(c.metric)


def worse_than(c: PairedChange, tolerance: float) -> bool:
    """The paired change exceeds the tolerance and the jitter floor of the metric."""
    return _beyond(c, c.change, tolerance)


def could_be_worse(c: PairedChange, tolerance: float) -> bool:
    """The interval of the paired change reaches beyond the tolerance and the jitter floor."""
    return not math.isnan(c.interval[1]) and _beyond(c, c.interval[1], tolerance)


def paired_metrics(m: Measurement, gate_metrics: Sequence[str] = ()) -> list[str]:
    rounds = m.info.get("ab_candidate_rounds") or []
    names = sorted({k for r in rounds for k in r})
    return [k for k in names if compared(k, m.kind) and is_primary(k, m.kind, tuple(gate_metrics))]


def compare_run(m: Measurement, gate_metrics: Sequence[str] = ()) -> dict[str, PairedChange]:
    """The paired changes of ``m``'s gated metrics (empty if ``m`` was not paired)."""
    base = m.info.get("ab_base_rounds") or []
    cand = m.info.get("ab_candidate_rounds") or []
    processes = m.info.get("ab_process_rounds")  # several processes a side: they decide
    out: dict[str, PairedChange] = {}
    for metric in paired_metrics(m, gate_metrics):
        if processes:
            change = compare_processes(metric, processes)
        else:
            change = compare_pairs(metric, [r.get(metric, math.nan) for r in base],
                                   [r.get(metric, math.nan) for r in cand])
        if change is not None:
            out[metric] = change
    return out


def extra_pairs(base: list[dict[str, float]], cand: list[dict[str, float]], tolerance: float,
                gate_metrics: Sequence[str] = ()) -> int:
    """Pairs to add before deciding: as many again when a gated metric looks regressed."""
    m = Measurement("screen", {}, info={"ab_base_rounds": base, "ab_candidate_rounds": cand})
    skip_wall = unequal_machine(base, cand) is not None  # they will not be judged: no pairs for them
    for metric, change in compare_run(m, gate_metrics).items():
        if skip_wall and is_wall_time(metric):
            continue
        if could_be_worse(change, tolerance) and (change.p_value is None or change.p_value <= SCREEN_ALPHA):
            return max(MIN_CONFIRM_PAIRS, len(cand))
    return 0


def _describe(name: str, c: PairedChange, tolerance: float, where: str, tail: str,
              processes: bool = False, spread: float | None = None, blocks: int = 0) -> str:
    if c.additive:
        change = f"{c.change:+.4g} [{c.interval[0]:+.4g}, {c.interval[1]:+.4g}]"
        tol = f"tolerance +{allowed_change(c, tolerance):.4g}"
    else:
        change = f"{pct(c.change)} [{pct(c.interval[0])}, {pct(c.interval[1])}]"
        tol = f"tolerance {pct(tolerance, signed=False)}"
    p = f", p={c.p_value:.3g}" if c.p_value is not None else ", too few pairs for a test"
    over = f"{c.pairs} pairs"
    if processes:  # several processes a side: c.pairs counts them
        over = f"{c.pairs} processes a side ({blocks} blocks)"
        if spread is not None:
            over += f", which differ by {math.exp(spread) - 1:.1%} (1 SD) from each other"
    return f"{name} {fmt(c.candidate)} vs {fmt(c.base)} at {where}: {change} worse over {over} ({tol}{p}{tail})"


def check_paired(ctx: GateContext, where: str, alpha: float = ALPHA) -> list[CheckResult]:
    """One check per gated metric of every paired run; an unpaired run is ``new``."""
    results: list[CheckResult] = []
    for m in ctx.measurements:
        if m.kind != "load":
            continue
        if m.info.get("ab_unpaired") or not m.info.get("ab_candidate_rounds"):
            reason = m.info.get("ab_unpaired") or "not measured on the base side"
            results.append(CheckResult(
                measurement=m.name, metric="-", value=math.nan, baseline=None, limit=None,
                change=None, tolerance=ctx.tolerance, p_value=None, confirmed=False, verdict="not-judged",
                message=f"{m.name}: not judged: not compared ({reason})", kind="paired", reason="new"))
            continue
        initial = m.info.get("ab_initial_pairs")
        processes = m.info.get("ab_process_rounds")
        unequal = (unequal_machine(*side_waits(processes), unit="block, each side's processes averaged")
                   if processes else
                   unequal_machine(m.info.get("ab_base_rounds") or [], m.info["ab_candidate_rounds"]))
        for metric, c in compare_run(m, ctx.gate_metrics).items():
            regressed = worse_than(c, ctx.tolerance) and c.p_value is not None and c.p_value <= alpha
            verdict: Verdict
            judged = not (unequal and is_wall_time(metric))
            reason = None
            if not judged:
                verdict, tail, reason = "not-judged", f"; {unequal}", SIDES_UNEQUAL
            elif regressed:
                verdict, tail = "fail", (f", confirmed by re-measurement on {c.pairs - initial} more pairs" if initial else "")
            elif worse_than(c, ctx.tolerance):
                verdict, tail = "pass", ", worse but not significant"
            else:
                verdict, tail = "pass", ""
            results.append(CheckResult(
                measurement=m.name, metric=metric, value=c.candidate, baseline=c.base, limit=None,
                change=c.change, tolerance=ctx.tolerance, p_value=c.p_value,
                confirmed=bool(initial) and verdict == "fail", verdict=verdict,
                message=_describe(label(m, metric), c, ctx.tolerance, where, tail, bool(processes), c.spread,
                                  len(m.info["ab_candidate_rounds"])),
                kind="paired",
                direction=c.direction,
                raw_change=(c.candidate / c.base - 1) if c.base and not c.additive else None,
                interval=c.interval, pairs=len(m.info["ab_candidate_rounds"]) if processes else c.pairs,
                reason=reason))
    return results
