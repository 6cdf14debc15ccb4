"""The A/B gate: paired checks of a test's runs, and the screen that asks for more pairs.

A metric of a paired run fails when, over all its pairs (the first ones and the
confirmation pairs), the paired change (:mod:`.paired`) is worse than the
tolerance, by more than the latency jitter floor, and the one-sided signed-rank
p survives Holm-Bonferroni across the test's comparisons at ``alpha``. A run that
looks regressed after its first pairs (change beyond the tolerance at a loose
``SCREEN_ALPHA``) gets as many pairs again before that decision, so a failure
always stands on re-measured evidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..gate.checks import ALPHA, GateContext, fmt, label, pct
from ..gate.directions import compared, is_primary, latency_floor
from ..gate.verdict import CheckResult, Verdict
from ..measurement import Measurement
from .paired import PairedChange, compare_pairs

#: Loose level of the screen that asks for confirmation pairs.
SCREEN_ALPHA = 0.20
#: Fewest confirmation pairs added to a suspect.
MIN_CONFIRM_PAIRS = 6
#: Smallest error-rate increase that can fail (one error in a thousand operations).
ERROR_RATE_FLOOR = 0.001


def worse_than(c: PairedChange, tolerance: float) -> bool:
    """The paired change exceeds the tolerance and the jitter floor of the metric."""
    if c.additive:
        return c.change > max(ERROR_RATE_FLOOR, tolerance * abs(c.base))
    return c.change > tolerance and abs(c.candidate - c.base) > latency_floor(c.metric)


def paired_metrics(m: Measurement, gate_metrics: Sequence[str] = ()) -> list[str]:
    rounds = m.info.get("ab_candidate_rounds") or []
    names = sorted({k for r in rounds for k in r})
    return [k for k in names if compared(k, m.kind) and is_primary(k, m.kind, tuple(gate_metrics))]


def compare_run(m: Measurement, gate_metrics: Sequence[str] = ()) -> dict[str, PairedChange]:
    """The paired changes of ``m``'s gated metrics (empty if ``m`` was not paired)."""
    base = m.info.get("ab_base_rounds") or []
    cand = m.info.get("ab_candidate_rounds") or []
    out: dict[str, PairedChange] = {}
    for metric in paired_metrics(m, gate_metrics):
        b = [r.get(metric, math.nan) for r in base]
        c = [r.get(metric, math.nan) for r in cand]
        change = compare_pairs(metric, b, c)
        if change is not None:
            out[metric] = change
    return out


def extra_pairs(base: list[dict[str, float]], cand: list[dict[str, float]], tolerance: float,
                gate_metrics: Sequence[str] = ()) -> int:
    """Pairs to add before deciding: as many again when a gated metric looks regressed."""
    m = Measurement("screen", {}, info={"ab_base_rounds": base, "ab_candidate_rounds": cand})
    for change in compare_run(m, gate_metrics).values():
        if worse_than(change, tolerance) and (change.p_value is None or change.p_value <= SCREEN_ALPHA):
            return max(MIN_CONFIRM_PAIRS, len(cand))
    return 0


def _describe(name: str, c: PairedChange, tolerance: float, where: str, tail: str) -> str:
    if c.additive:
        change = f"{c.change:+.4g} [{c.interval[0]:+.4g}, {c.interval[1]:+.4g}]"
        tol = f"tolerance +{max(ERROR_RATE_FLOOR, tolerance * abs(c.base)):.4g}"
    else:
        change = f"{pct(c.change)} [{pct(c.interval[0])}, {pct(c.interval[1])}]"
        tol = f"tolerance {pct(tolerance, signed=False)}"
    p = f", p={c.p_value:.3g}" if c.p_value is not None else ", too few pairs for a test"
    return (f"{name} {fmt(c.candidate)} vs {fmt(c.base)} at {where}: {change} worse over "
            f"{c.pairs} pairs ({tol}{p}{tail})")


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
                change=None, tolerance=ctx.tolerance, p_value=None, confirmed=False, verdict="new",
                message=f"{m.name}: not compared ({reason})", kind="paired"))
            continue
        initial = m.info.get("ab_initial_pairs")
        for metric, c in compare_run(m, ctx.gate_metrics).items():
            regressed = worse_than(c, ctx.tolerance) and c.p_value is not None and c.p_value <= alpha
            verdict: Verdict
            if regressed:
                verdict, tail = "fail", (f", confirmed on {c.pairs - initial} more pairs" if initial else "")
            elif worse_than(c, ctx.tolerance):
                verdict, tail = "warn", ", worse but not significant"
            else:
                verdict, tail = "pass", ""
            results.append(CheckResult(
                measurement=m.name, metric=metric, value=c.candidate, baseline=c.base, limit=None,
                change=c.change, tolerance=ctx.tolerance, p_value=c.p_value,
                confirmed=bool(initial) and verdict == "fail", verdict=verdict,
                message=_describe(label(m, metric), c, ctx.tolerance, where, tail), kind="paired",
                direction=c.direction,
                raw_change=(c.candidate / c.base - 1) if c.base and not c.additive else None,
                interval=c.interval, pairs=c.pairs))
    return results
