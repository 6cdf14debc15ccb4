"""The gate: a list of check functions, each turning measurements into CheckResults.

:func:`run_checks` calls every function of :data:`CHECKS` on a
:class:`GateContext` and returns their results; the failing ones' messages fail
the test (pytest-benchmark's session does the same with its messages).

Every figure ends ``pass``, ``fail`` or ``not-judged`` with its reason: a figure
the gate could not judge is said so, never shown as passed.

Decision for one metric against its baseline recorded on THIS machine (docs
"How the gate decides"): ``change`` = how much worse the median of the current
rounds is than the median of the baseline's rounds; it fails when ``change >
tolerance`` AND the one-sided Mann-Whitney test says the rounds are worse with
``p <= alpha`` (skipped when either side has fewer than 3 rounds). When the load
runner re-measured a suspected regression (:func:`screen`), the decision is made
on the fresh confirmation rounds alone, so a transient burst of noise that
triggered the re-measurement cannot by itself fail the test.

Not judged, with the reason said:

- a speed figure of a run on a busy machine (:func:`busy_reason`: its event loop
  waited for a CPU, or other processes used cores, far more than when the baseline
  was recorded): judged at the end of the run relative to the run's other tests,
  as against another machine's baseline;
- every figure of a measurement whose workload differs from the baseline's
  (:func:`workload_changes`: concurrency, rate, duration, scale, data set, model);
- a speed figure measured once against a baseline measured once (no rounds to
  tell it from noise);
- a speed figure whose baseline was recorded on another machine: judged at the
  end of the run relative to the run's other tests (:mod:`.across`), or left not
  judged there when that cannot be done;
- a speed figure whose baseline was recorded several times: judged at the end of
  the run within its run-to-run spread (:func:`within_spread`), and not judged when
  that spread hides a change of its tolerance.

No calibration probe excuses a figure: a probe's own noise turned into blindness
(a +57 % CPU regression passed on another machine behind a probe that read 2.6x).
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigurationError
from ..marker import Threshold
from ..measurement import Measurement
from ..presentation import format_number, format_percent
from .baseline import Baseline
from .directions import compared, direction_of, is_primary, is_time_like, latency_floor
from .metric_kinds import YARDSTICK_METRICS
from .recordings import RunSpread, run_spread
from .stats import centre, p_worse, worse_change
from .verdict import NEW_FIGURE, CheckKind, CheckResult, Direction, Verdict

#: Significance level of the final decision (one-sided).
ALPHA = 0.05
#: Looser level of the screen that asks for confirmation rounds (a superset of failures).
SCREEN_ALPHA = 0.20


@dataclass
class GateContext:
    """What the checks of one test need."""

    nodeid: str
    measurements: Sequence[Measurement]
    thresholds: Sequence[Threshold] = ()
    tolerance: float = 0.15
    baseline: Baseline | None = None
    has_reference: bool = True  # marker reference=False: thresholds only
    #: The baseline was recorded on another machine (how it differs): speed figures are
    #: left to the end of the run (:mod:`.across`), correctness figures judged now.
    other_machine: str | None = None
    update: bool = False  # --update-baselines: regressions are reported, not failed
    initial_rounds: dict[str, int] = field(default_factory=dict)  # before confirmation
    alpha: float = ALPHA
    gate_metrics: tuple[str, ...] = ()  # metrics gated beside the primary set (marker gate=)
    paired: bool = False  # A/B mode: the paired comparison replaces the stored baseline


# --------------------------------------------------------------------------- formatting

#: The presentation vocabulary's formatters, under the names the gate's messages use.
fmt = format_number
pct = format_percent


def label(m: Measurement | str, metric: str) -> str:
    name = m if isinstance(m, str) else m.name
    return f"{name}.{metric}"


# --------------------------------------------------------------------------- thresholds


def decision_samples(ctx: GateContext, m: Measurement, metric: str) -> tuple[list[float], bool]:
    """The rounds a decision uses: the confirmation rounds if ``m`` was re-measured, else all."""
    samples = m.samples(metric)
    initial = ctx.initial_rounds.get(m.name)
    if initial is not None and 0 < initial < len(samples):
        return samples[initial:], True
    return samples, False


def measured_metrics(measurements: Sequence[Measurement]) -> list[str]:
    return sorted({k for m in measurements for k in m.metrics})


def check_thresholds(ctx: GateContext) -> list[CheckResult]:
    """Absolute bounds (min_/max_<metric>) on every measurement that has the metric."""
    results: list[CheckResult] = []
    for threshold in ctx.thresholds:
        owners = [m for m in ctx.measurements if threshold.metric in m.metrics]
        if not owners:
            measured = ", ".join(measured_metrics(ctx.measurements)) or "none"
            raise ConfigurationError(
                f"threshold {threshold.keyword}={fmt(threshold.limit)} names metric "
                f"{threshold.metric!r}, which the test did not measure; measured metrics: {measured}")
        for m in owners:
            samples, rechecked = decision_samples(ctx, m, threshold.metric)
            value = centre(samples)
            ok = value >= threshold.limit if threshold.kind == "min" else value <= threshold.limit
            op = "<" if threshold.kind == "min" else ">"
            message = (f"{label(m, threshold.metric)} {fmt(value)} "
                       f"{'ok' if ok else op} {threshold.keyword} {fmt(threshold.limit)}"
                       + (", confirmed by re-measurement" if rechecked and not ok else ""))
            change = (value - threshold.limit) / abs(threshold.limit) if threshold.limit else None
            if change is not None and threshold.kind == "min":
                change = -change
            results.append(CheckResult(
                measurement=m.name, metric=threshold.metric, value=value, baseline=None,
                limit=threshold.limit, change=change, tolerance=None, p_value=None,
                confirmed=rechecked and not ok, verdict="pass" if ok else "fail", message=message,
                kind="threshold", direction="higher" if threshold.kind == "min" else "lower",
                bound=threshold.kind, raw_change=None))
    return results


# --------------------------------------------------------------------------- baseline


@dataclass
class Comparison:
    """The statistics of one metric against its baseline."""

    value: float
    baseline: float
    change: float  # + = worse
    raw_change: float
    p_value: float | None
    direction: Direction
    normalised: bool
    floor: float = 0.0  # smallest absolute change that can count (latency jitter)


def compare_samples(metric: str, current: Sequence[float], stored: Sequence[float],
                    speed: float | None = None, kind: str = "load") -> Comparison:
    """Compare current rounds with the baseline's (scaled by ``speed`` for time-like metrics).

    ``speed`` (this machine's speed relative to the baseline's; < 1 slower) scales the
    baseline of a time-like metric before the comparison: the cross-machine decision
    (:mod:`.across`) passes the run's own shift there. Latencies of single operations
    (``kind="load"``) carry a jitter floor; the per-round medians of a microbenchmark
    (``"benchmark"``) average many calls and do not.
    """
    direction = direction_of(metric)
    base = list(stored)
    normalised = False
    if speed and is_time_like(metric):
        factor = speed if direction == "higher" else 1 / speed
        base = [b * factor for b in base]
        normalised = True
    value, reference = centre(current), centre(base)
    raw = value / reference - 1 if reference else (0.0 if value == reference else math.inf)
    return Comparison(value, reference, worse_change(value, reference, direction, metric), raw,
                      p_worse(current, base, direction), direction, normalised,
                      latency_floor(metric) if kind == "load" else 0.0)


def regressed(c: Comparison, tolerance: float, alpha: float) -> bool:
    """Worse beyond the tolerance, significantly, and by more than the jitter floor."""
    return (c.change > tolerance and (c.p_value is None or c.p_value <= alpha)
            and abs(c.value - c.baseline) > c.floor)


def describe(name: str, c: Comparison, tolerance: float, tail: str, basis: str | None = None) -> str:
    """``search.p95_ms 12.3 > baseline 10.1 (+22%, tolerance 15%, p=0.004...)``; with a
    ``basis``, ``... > scaled baseline 10.1 (...; baseline <basis>)``."""
    op = ">" if c.value > c.baseline else "<" if c.value < c.baseline else "="
    p = f", p={c.p_value:.3g}" if c.p_value is not None else ""
    reference = "scaled baseline" if basis else "baseline"
    tail += f"; baseline {basis}" if basis else ""
    return (f"{name} {fmt(c.value)} {op} {reference} {fmt(c.baseline)} "
            f"({pct(c.raw_change)}, tolerance {pct(tolerance, signed=False)}{p}{tail})")


# --------------------------------------------------------------------------- not judged

#: A run counts as busy when its event loop waited for a CPU this much more of its time
#: than the baseline's did (0.10: a tenth of the wall time more), or when the machine's
#: other processes used more than this many cores during the run OR while the baseline was
#: recorded: a neighbour's load moves every speed figure, wall time most (an unchanged
#: add_batch p95 +52 % against a baseline recorded beside other jobs), and on a 2-vCPU
#: virtual machine even the CPU an operation costs. A busy run's speed figures are judged
#: at the end of the run, relative to the run's other tests (:mod:`.across`), as against
#: another machine's baseline.
BUSY_MARGIN = 0.10
BUSY_CORES = 0.5  # at least; a quarter of the machine's cores on a larger one ($AGENTMEM_BUSY_CORES)
#: The per-round figures those are read from (the same keys as
#: ``pytest_agentmem.load.fixtures.WAIT_SHARE`` / ``FOREIGN_CPU``).
WAIT_SHARE = "wait_share"
FOREIGN_CPU = "foreign_cpu"
ADVICE_AB = "gate it with --agentmem-compare (same-run A/B)"


def _median_of(rounds: Sequence[Mapping[str, float]], key: str) -> float | None:
    values = [float(r[key]) for r in rounds if key in r]
    return centre(values) if values else None


def wait_share(rounds: Sequence[Mapping[str, float]]) -> float | None:
    """The median :data:`WAIT_SHARE` of ``rounds`` (None when the platform did not tell)."""
    return _median_of(rounds, WAIT_SHARE)


def busy_cores() -> float:
    """The cores other processes may use before a run counts as busy (``inf``: never)."""
    from ..config import env_value

    chosen = env_value("AGENTMEM_BUSY_CORES")
    return float(chosen) if chosen is not None else max(BUSY_CORES, 0.25 * (os.cpu_count() or 2))


def busy_reason(current: Sequence[Mapping[str, float]], stored: Sequence[Mapping[str, float]]) -> str | None:
    """Why this run's speed figures cannot be compared with ``stored`` as measured: other
    processes took the CPU, now or when the baseline was recorded; else None."""
    limit = busy_cores()
    if math.isinf(limit):
        return None
    found = []
    now, then = wait_share(current), wait_share(stored)
    if now is not None and then is not None and now - then > BUSY_MARGIN:
        found.append(f"the run waited {now:.0%} of its time for a CPU other processes held (baseline {then:.0%})")
    now, then = _median_of(current, FOREIGN_CPU), _median_of(stored, FOREIGN_CPU)
    if now is not None and now > limit:
        found.append(f"other processes used {now:.1f} cores during the run"
                     + (f" (baseline {then:.1f})" if then is not None else ""))
    elif then is not None and then > limit:
        found.append(f"other processes used {then:.1f} cores while the baseline was recorded (record it "
                     "on a quiet machine)")
    return "machine busy: " + " and ".join(found) if found else None


def workload_changes(stored: Mapping[str, Any] | None, current: Mapping[str, Any] | None) -> list[str]:
    """``["concurrency 16 -> 8"]``: what differs between two recorded workloads.

    Only keys both sides recorded are compared, plus a key one side lacks when the
    other has a value for it (a baseline of an older version records no workload at
    all, and is compared as before).
    """
    if not stored or not current:
        return []
    out = []
    for key in sorted(set(stored) | set(current)):
        old, new = stored.get(key), current.get(key)
        if old != new:
            out.append(f"{key} {_show(old)} -> {_show(new)}")
    return out


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def not_judged(m: Measurement | str, metric: str, value: float, reason: str, detail: str,
               baseline: float | None = None, kind: CheckKind = "baseline") -> CheckResult:
    """A figure shown, not judged: ``reason`` in a few words, ``detail`` the message's tail."""
    name = m if isinstance(m, str) else m.name
    return CheckResult(
        measurement=name, metric=metric, value=value, baseline=baseline, limit=None, change=None,
        tolerance=None, p_value=None, confirmed=False, verdict="not-judged",
        message=f"{label(name, metric)} {fmt(value)}: not judged: {detail}", kind=kind,
        direction=direction_of(metric), reason=reason,
        raw_change=(value / baseline - 1) if baseline else None)


#: The reasons of a speed figure left to the end of the run (see :mod:`.across`).
PENDING = "another machine's baseline"
BUSY = "machine busy"
#: A figure whose baseline's recordings tell its run-to-run spread (see :func:`within_spread`).
SPREAD = "runs spread"
DEFERRED = (PENDING, BUSY, SPREAD)


def check_baseline(ctx: GateContext) -> list[CheckResult]:
    """Every compared metric of every measurement against the stored baseline."""
    if not ctx.has_reference or ctx.paired:
        return []
    results: list[CheckResult] = []
    for m in ctx.measurements:
        stored = ctx.baseline.measurements.get(m.name) if ctx.baseline else None
        changed = workload_changes(stored.workload if stored else None, m.workload)
        busy = busy_reason(m.rounds, stored.rounds) if stored is not None and not ctx.other_machine else None
        for metric in sorted(m.metrics):
            if not compared(metric, m.kind) or not is_primary(metric, m.kind, ctx.gate_metrics):
                continue
            samples = m.samples(metric)
            base_samples = stored.samples(metric) if stored else []
            value = centre(samples)
            if not base_samples and stored is not None and stored.metrics:
                results.append(not_judged(m, metric, value, NEW_FIGURE,
                                          "a figure its baseline was recorded without (by an earlier "
                                          "pytest-agentmem, or a run where it was not measured); record "
                                          "the baseline again with --update-baselines to judge it"))
            elif not base_samples:
                results.append(not_judged(m, metric, value, "no baseline",
                                          "no baseline yet; record one with --update-baselines"))
            elif changed:
                results.append(not_judged(
                    m, metric, value, "workload changed",
                    f"workload changed ({', '.join(changed)}); record a baseline of this workload "
                    "with --update-baselines", centre(base_samples)))
            elif ctx.other_machine and is_time_like(metric) and not ctx.update:
                results.append(not_judged(
                    m, metric, value, PENDING,
                    f"baseline recorded on another machine ({ctx.other_machine})", centre(base_samples)))
            elif busy and is_time_like(metric) and not ctx.update:
                results.append(not_judged(m, metric, value, BUSY, busy, centre(base_samples)))
            else:
                spread = run_spread(stored.recordings, metric) if stored and is_time_like(metric) else None
                if spread is not None and not ctx.update:
                    # judged at the end of the run, where the run's other tests tell how far
                    # figures moved in this run (a spread the recordings, made minutes apart,
                    # may not have seen)
                    results.append(not_judged(m, metric, value, SPREAD, f"it {spread.describe()}; judged at "
                                              "the end of the run, beside the run's other tests",
                                              centre(base_samples)))
                else:
                    results.append(decide(ctx, m, metric, samples, base_samples))
    return results


def as_ratio(tolerance: float, higher: bool) -> float:
    """A tolerance as the ratio it allows, minus 1: how many times worse a figure may be.

    A latency's 10 % is x1.10; a throughput's 10 % (10 % fewer operations) is x1/0.90.
    """
    return 1 / max(1e-9, 1 - tolerance) - 1 if higher else tolerance


def within_spread(ctx: GateContext, m: Measurement | str, metric: str, samples: Sequence[float],
                  base_samples: Sequence[float], spread: RunSpread | None, *, kind: str | None = None,
                  speed: float | None = None, basis: str | None = None, why: str = "",
                  where: str = "on this machine", runs: Sequence[float] = ()) -> CheckResult:
    """:func:`decide`, and where the figure's run-to-run spread is known (the baseline's
    recordings, :mod:`.recordings`), decided on the runs too.

    The rounds of one run share its luck, so their test alone takes a run that landed
    high for a regression. With the spread known, the figure's p-value is the larger of
    the rounds' and the run's (how likely an unchanged run measures this much worse,
    Student's t over the recordings), and the test's Holm family then applies. When even
    a change of the tolerance's size would not be told from the spread, a figure within
    it is not judged, never passed. ``kind``, ``speed`` and ``basis`` go to :func:`decide`
    (the cross-machine judgement); ``why`` begins the not-judged message, ``where`` says
    where the recordings were made. ``runs``: the centres of the fresh runs (processes) whose
    rounds ``samples`` holds, a suspect decided again: together against the recordings
    (:meth:`~.recordings.RunSpread.p_worse_runs`), and it fails only worse than its
    tolerance beyond their spread (worse, not beyond: not judged); none: ``samples`` are one
    run's. A figure left not judged keeps its change and its p-value (a suspect's).
    """
    judged = decide(ctx, m, metric, samples, base_samples, kind=kind, speed=speed, basis=basis)
    if spread is None or ctx.update or not judged.judged or not judged.baseline or judged.value <= 0:
        return judged
    higher = direction_of(metric) == "higher"

    def worse(value: float) -> float:
        return judged.baseline / value if higher else value / judged.baseline  # type: ignore[operator]

    centres = list(runs) or [judged.value]
    ratios = [worse(v) if v > 0 else math.inf for v in centres]
    at_tolerance = 1 + as_ratio(ctx.tolerance, higher)
    # Fresh runs of a suspect (``runs``) decide whether it is worse than its TOLERANCE beyond
    # their spread, not only worse than its baseline: a figure whose machine state moved it
    # just past its tolerance for an hour (unchanged batch_delete +36 % against a 30 %
    # tolerance in three fresh processes) is not told from a regression by more runs. A figure
    # measured against the model in its own rounds (``cpu_model_ratio``) does not carry such a
    # state (:mod:`.yardstick`): its fresh runs, each worse than the tolerance, decide against
    # the baseline (a search path +10 % slower measured +8 % to +11 % there, 2 % (1 SD) from
    # run to run: against a 5 % tolerance, 3 runs could not show the 3 points beyond it).
    margin = bool(runs) and metric not in YARDSTICK_METRICS
    p_run = spread.p_worse_runs([r / at_tolerance for r in ratios] if margin else ratios)
    judged.p_value = max(judged.p_value or 0.0, p_run)
    # a change of the tolerance's size is seen over as many runs, as far apart as these
    mean = math.exp(statistics.fmean(math.log(r) for r in ratios)) if all(0 < r < math.inf for r in ratios) else 1.0
    visible = spread.p_worse_runs([r / mean * at_tolerance for r in ratios]) <= ctx.alpha
    over = "" if not runs else f" over {len(centres)} run{'s' if len(centres) != 1 else ''} ({', '.join(pct(worse(v) - 1) for v in centres)})"
    beyond = ("beyond its tolerance" if margin else
              "each run worse than its tolerance, beyond its run-to-run spread" if runs else
              "beyond its run-to-run spread")

    def undecided(detail: str) -> CheckResult:
        """Not judged, its change and p-value kept (a suspect's, :mod:`.reproduce`)."""
        left = not_judged(m, metric, judged.value, SPREAD, detail, judged.baseline)
        left.change, left.p_value, left.tolerance = judged.change, judged.p_value, ctx.tolerance
        return left

    if judged.verdict == "fail":
        if p_run <= ctx.alpha:
            judged.message += f"; {beyond}{over} (it {spread.describe()}, p={p_run:.3g})"
            if not visible:
                judged.reason = SPREAD  # if the test's Holm family takes the failure back: not judged
            return judged
        if runs:  # worse than the tolerance, not beyond it (or its baseline): neither failed nor passed
            short = "it" if margin else "its run-to-run spread"
            return undecided(f"{why}worse than its tolerance{over}, but not beyond {short} (it "
                             f"{spread.describe()} {where}, p={p_run:.3g})")
        judged.verdict, judged.confirmed = "pass", False
        judged.message += f"; within its run-to-run spread{over} (it {spread.describe()}, p={p_run:.3g})"
    if visible:
        return judged
    return undecided(f"{why}it {spread.describe()} {where}, too much to tell a change of "
                     f"{pct(ctx.tolerance, signed=False)} from it ({pct(judged.raw_change)} "
                     f"{over.strip() if runs else 'this run'}); "
                     f"measure longer rounds, widen its tolerance, or {ADVICE_AB}")


def decide(ctx: GateContext, m: Measurement | str, metric: str, samples: Sequence[float],
           base_samples: Sequence[float], *, kind: str | None = None, speed: float | None = None,
           tolerance: float | None = None, basis: str | None = None) -> CheckResult:
    """Judge ``samples`` against ``base_samples`` (scaled by ``speed``, see compare_samples).

    ``basis`` says, in the message, what the baseline was scaled by.
    """
    name = m if isinstance(m, str) else m.name
    kind = kind or (m.kind if not isinstance(m, str) else "load")
    samples = list(samples)
    initial = ctx.initial_rounds.get(name)
    rechecked = initial is not None and 0 < initial < len(samples)
    first = compare_samples(metric, samples[:initial] if rechecked else samples, base_samples, speed, kind)
    final = compare_samples(metric, samples[initial:], base_samples, speed, kind) if rechecked else first
    tolerance = ctx.tolerance if tolerance is None else tolerance
    verdict: Verdict = "pass"
    reason = None
    if final.p_value is None and is_time_like(metric) and regressed(final, tolerance, ctx.alpha):
        # One timing against one timing: a busy neighbour alone can do that, and
        # there are no rounds to test or re-measure. Said, not judged.
        verdict, reason = "not-judged", "one round"
        tail = (", not judged: too few rounds to tell from noise (record it once per round, e.g. "
                "call perf.record in a loop, to gate it)")
    elif regressed(final, tolerance, ctx.alpha):
        tail = ", confirmed by re-measurement" if rechecked else ""
        if ctx.update:
            verdict, reason = "not-judged", "baseline updated"
            tail += "; accepted by --update-baselines"
        else:
            verdict = "fail"
    elif rechecked and regressed(first, tolerance, SCREEN_ALPHA):
        tail = f"; first rounds {pct(first.raw_change)}, not confirmed by re-measurement"
    elif final.change > tolerance:
        tail = ", worse but not significant"
    else:
        tail = ""
    return CheckResult(
        measurement=name, metric=metric, value=final.value, baseline=final.baseline, limit=None,
        change=final.change, tolerance=tolerance, p_value=final.p_value,
        confirmed=rechecked and verdict == "fail", verdict=verdict,
        message=describe(label(name, metric), final, tolerance, tail, basis), kind="baseline",
        direction=final.direction, raw_change=final.raw_change, normalised=final.normalised,
        reason=reason, basis=basis)


# --------------------------------------------------------------------------- screen


def screen(ctx: GateContext, m: Measurement) -> list[str]:
    """Metrics of ``m`` that look regressed or breach a threshold (asks for re-measurement).

    Against another machine's baseline only the correctness figures are screened
    here: the speed figures are judged at the end of the run (:mod:`.across`).
    """
    suspects: list[str] = []
    for threshold in ctx.thresholds:
        if threshold.metric in m.metrics:
            value = centre(m.samples(threshold.metric))
            if (value < threshold.limit) if threshold.kind == "min" else (value > threshold.limit):
                suspects.append(threshold.metric)
    stored = ctx.baseline.measurements.get(m.name) if ctx.baseline and ctx.has_reference else None
    if stored is None or ctx.paired or workload_changes(stored.workload, m.workload):
        return suspects
    busy = None if ctx.other_machine else busy_reason(m.rounds, stored.rounds)
    for metric in sorted(m.metrics):
        base_samples = stored.samples(metric)
        if not (compared(metric, m.kind) and is_primary(metric, m.kind, ctx.gate_metrics) and base_samples):
            continue
        if is_time_like(metric) and (ctx.other_machine or busy):
            continue  # judged at the end of the run
        c = compare_samples(metric, m.samples(metric), base_samples, kind=m.kind)
        if regressed(c, ctx.tolerance, SCREEN_ALPHA):
            suspects.append(metric)
    return suspects


CheckFunction = Callable[[GateContext], list[CheckResult]]

#: The gate, in order. Append a function to add a check.
CHECKS: list[CheckFunction] = [check_thresholds, check_baseline]


def run_checks(ctx: GateContext, checks: Sequence[CheckFunction] = CHECKS) -> list[CheckResult]:
    """All check results (raises ConfigurationError for a threshold naming no measured metric).

    The comparisons of one test are one family: a failure needs its p-value to
    survive Holm-Bonferroni across every comparison of the test that has one
    (:func:`holm_family`), so gating four metrics does not quadruple the chance
    of a false alarm.
    """
    results: list[CheckResult] = []
    for check in checks:
        results.extend(check(ctx))
    return holm_family(results, ctx.alpha)


def holm_family(results: list[CheckResult], alpha: float = ALPHA) -> list[CheckResult]:
    """Turn to ``pass`` the failed comparisons whose Holm-adjusted p exceeds ``alpha``.

    The family is the comparisons that are judged: a figure shown as "not judged"
    asks no question, so it spends none of ``alpha``.
    """
    family = [c for c in results if c.kind in ("baseline", "paired") and c.p_value is not None and c.judged]
    m = len(family)
    if m <= 1:
        return results
    ordered = sorted(family, key=lambda c: c.p_value)  # type: ignore[arg-type, return-value]
    running = 0.0
    for rank, check in enumerate(ordered):
        running = max(running, min(1.0, (m - rank) * float(check.p_value)))  # type: ignore[arg-type]
        check.p_adjusted = running
        if check.verdict == "fail" and running > alpha:
            # a figure whose run-to-run spread hides a change of its tolerance is not judged, not passed
            check.verdict = "not-judged" if check.reason == SPREAD else "pass"
            check.confirmed = False
            check.message += f"; not significant across the test's {m} comparisons (Holm p={running:.3g})"
    return results
