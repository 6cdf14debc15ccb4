"""The gate: a list of check functions, each turning measurements into CheckResults.

:func:`run_checks` calls every function of :data:`CHECKS` on a
:class:`GateContext` and returns their results; the failing ones' messages fail
the test (pytest-benchmark's session does the same with its messages).

Decision for one metric against its baseline (README "How the gate decides"):
``change`` = how much worse the median of the current rounds is than the median
of the baseline's rounds; it fails when ``change > tolerance`` AND the one-sided
Mann-Whitney test says the rounds are worse with ``p <= alpha`` (skipped when
either side has fewer than 3 rounds). When the load runner re-measured a
suspected regression (:func:`screen`), the decision is made on the fresh
confirmation rounds alone, so a transient burst of noise that triggered the
re-measurement cannot by itself fail the test.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import ConfigurationError
from ..marker import Threshold
from ..measurement import Measurement
from ..presentation import format_number, format_percent
from .baseline import Baseline
from .directions import CPU_COST_METRICS, compared, direction_of, is_primary, is_time_like, latency_floor
from .stats import centre, p_worse, worse_change
from .verdict import CheckResult, Direction, Verdict

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
    compare: bool = True  # marker baseline=False: thresholds only
    speed: float | None = None  # this machine / baseline machine (cross-machine only)
    #: Cross-machine only: the speed ratios of the components' probes (e.g. the embedding
    #: model); each figure is normalised by whichever of these and ``speed`` favours it.
    component_speeds: tuple[float, ...] = ()
    extra_tolerance: float = 0.0  # widening for a normalised (cross-machine) comparison
    update: bool = False  # --update-baselines: regressions are reported, not failed
    initial_rounds: dict[str, int] = field(default_factory=dict)  # before confirmation
    alpha: float = ALPHA
    gate_metrics: tuple[str, ...] = ()  # metrics gated beside the primary set (marker gate=)
    paired: bool = False  # A/B mode: the paired comparison replaces the stored baseline
    #: Per measurement name: how many times slower the interleaved calibration probe ran
    #: in the decision's rounds than in the baseline's ({"wall": x, "cpu": y}; > 1 slower).
    slowdown: dict[str, dict[str, float]] = field(default_factory=dict)


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
                       + (", confirmed on re-run" if rechecked and not ok else ""))
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

    Latencies of single operations (``kind="load"``) carry a jitter floor; the
    per-round medians of a microbenchmark (``"benchmark"``) average many calls and do not.
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


def compare_across(ctx: GateContext, metric: str, current: Sequence[float], stored: Sequence[float],
                   kind: str = "load") -> Comparison:
    """:func:`compare_samples` at the context's speed; across machines, at the probe that favours it.

    How much slower a piece of work runs on another machine depends on the work: Python
    code, and the vector units an embedding model runs on, can differ by different
    factors. Which mix a figure measures is not known, so a figure is judged by the
    probe under which it looks least regressed: the gate excuses, never accuses, and a
    regression smaller than the probes' disagreement cannot be told from the machine.
    """
    options = [compare_samples(metric, current, stored, speed, kind)
               for speed in (ctx.speed, *ctx.component_speeds)]
    return min(options, key=lambda c: c.change)


def _tolerance(ctx: GateContext, normalised: bool) -> float:
    return ctx.tolerance + (ctx.extra_tolerance if normalised else 0.0)


def regressed(c: Comparison, tolerance: float, alpha: float) -> bool:
    """Worse beyond the tolerance, significantly, and by more than the jitter floor."""
    return (c.change > tolerance and (c.p_value is None or c.p_value <= alpha)
            and abs(c.value - c.baseline) > c.floor)


def _describe(name: str, c: Comparison, tolerance: float, tail: str) -> str:
    op = ">" if c.value > c.baseline else "<" if c.value < c.baseline else "="
    p = f", p={c.p_value:.3g}" if c.p_value is not None else ""
    norm = " (normalised to this machine)" if c.normalised else ""
    return (f"{name} {fmt(c.value)} {op} baseline {fmt(c.baseline)}{norm} "
            f"({pct(c.raw_change)}, tolerance {pct(tolerance, signed=False)}{p}{tail})")


def check_baseline(ctx: GateContext) -> list[CheckResult]:
    """Every compared metric of every measurement against the stored baseline."""
    if not ctx.compare or ctx.paired:
        return []
    results: list[CheckResult] = []
    for m in ctx.measurements:
        stored = ctx.baseline.measurements.get(m.name) if ctx.baseline else None
        for metric in sorted(m.metrics):
            if not compared(metric, m.kind) or not is_primary(metric, m.kind, ctx.gate_metrics):
                continue
            samples = m.samples(metric)
            base_samples = stored.samples(metric) if stored else []
            if not base_samples:
                value = centre(samples)
                results.append(CheckResult(
                    measurement=m.name, metric=metric, value=value, baseline=None, limit=None,
                    change=None, tolerance=ctx.tolerance, p_value=None, confirmed=False,
                    verdict="new", message=f"{label(m, metric)} {fmt(value)}: no baseline yet",
                    kind="baseline", direction=direction_of(metric)))
                continue
            results.append(_decide(ctx, m, metric, samples, base_samples))
    return results


def _decide(ctx: GateContext, m: Measurement, metric: str, samples: list[float],
            base_samples: list[float]) -> CheckResult:
    initial = ctx.initial_rounds.get(m.name)
    rechecked = initial is not None and 0 < initial < len(samples)
    first = compare_across(ctx, metric, samples[:initial] if rechecked else samples, base_samples, m.kind)
    final = compare_across(ctx, metric, samples[initial:], base_samples, m.kind) if rechecked else first
    tolerance = _tolerance(ctx, final.normalised)
    name = label(m, metric)
    verdict: Verdict
    judged = True
    if final.p_value is None and is_time_like(metric) and regressed(final, tolerance, ctx.alpha):
        # One timing against one timing: a busy neighbour alone can do that, and
        # there are no rounds to test or re-measure. Said, not failed.
        verdict = "warn"
        tail = (", too few rounds to tell from noise (record it once per round, e.g. call "
                "perf.record in a loop, to gate it)")
    elif regressed(final, tolerance, ctx.alpha):
        tail = ", confirmed on re-run" if rechecked else ""
        excuse = machine_excuse(ctx, m, metric, samples[initial:] if rechecked else samples,
                                base_samples, tolerance)
        if excuse:
            verdict, tail, judged = "warn", f"{tail}; {excuse}", False
        elif ctx.update:
            verdict, tail = "warn", tail + "; accepted by --update-baselines"
        else:
            verdict = "fail"
    elif rechecked and regressed(first, tolerance, SCREEN_ALPHA):
        verdict = "warn"
        tail = f"; first rounds {pct(first.raw_change)}, not confirmed on re-run"
    elif final.change > tolerance:
        verdict, tail = "warn", ", worse but not significant"
    else:
        verdict, tail = "pass", ""
    return CheckResult(
        measurement=m.name, metric=metric, value=final.value, baseline=final.baseline, limit=None,
        change=final.change, tolerance=tolerance, p_value=final.p_value,
        confirmed=rechecked and verdict in ("fail", "warn") and regressed(final, tolerance, ctx.alpha),
        verdict=verdict, message=_describe(name, final, tolerance, tail), kind="baseline",
        direction=final.direction, raw_change=final.raw_change, normalised=final.normalised,
        judged=judged)


# --------------------------------------------------------------------------- slow machine


def machine_excuse(ctx: GateContext, m: Measurement, metric: str, samples: Sequence[float],
                   base_samples: Sequence[float], tolerance: float,
                   alpha: float | None = None) -> str | None:
    """Why a regression of ``metric`` is not judged: the machine is slower, or None.

    Only excuses, never accuses, and only time-like metrics, when the interleaved
    calibration probe (``ctx.slowdown``) ran slower than when the baseline was
    recorded (the wall-time rate for latency and throughput, the CPU-time rate
    for ``cpu_ms_per_op``):

    - a wall-time figure (qps, latencies) is not judged at all once the probe says
      the machine is slower by more than the tolerance: a neighbour that takes the
      CPU preempts operations for whole scheduler slices, and their tail grows far
      more than any probe's median (measured: p95 +850 % .. +4000 % with the probe
      5x slower). The CPU an operation costs hardly changes, so ``cpu_ms_per_op``
      decides such a run;
    - otherwise, with the baseline scaled by the slowdown, the change must still
      be a regression beyond ``tolerance``.
    """
    factors = ctx.slowdown.get(m.name)
    if not factors or not is_time_like(metric):
        return None
    cpu_cost = metric in CPU_COST_METRICS
    factor = factors.get("cpu" if cpu_cost else "wall")
    if factor is None or factor <= 1.0:
        return None
    advice = "use --agentmem-compare for a same-run A/B"
    if not cpu_cost and factor > 1.0 + tolerance:
        return (f"machine {factor:.1f}x slower than when the baseline was recorded (calibration "
                f"probe): wall-time figures not judged, cpu_ms_per_op decides; {advice}")
    normalised = compare_samples(metric, samples, base_samples, 1.0 / factor, m.kind)
    if regressed(normalised, tolerance, ctx.alpha if alpha is None else alpha):
        return None
    return (f"machine {factor:.1f}x slower than when the baseline was recorded (calibration "
            f"probe; {pct(normalised.raw_change)} normalised): not judged; {advice}")


# --------------------------------------------------------------------------- screen


def screen(ctx: GateContext, m: Measurement) -> list[str]:
    """Metrics of ``m`` that look regressed or breach a threshold (asks for re-measurement)."""
    suspects: list[str] = []
    for threshold in ctx.thresholds:
        if threshold.metric in m.metrics:
            value = centre(m.samples(threshold.metric))
            if (value < threshold.limit) if threshold.kind == "min" else (value > threshold.limit):
                suspects.append(threshold.metric)
    stored = ctx.baseline.measurements.get(m.name) if ctx.baseline and ctx.compare else None
    if stored is not None and not ctx.paired:
        for metric in sorted(m.metrics):
            base_samples = stored.samples(metric)
            if compared(metric, m.kind) and is_primary(metric, m.kind, ctx.gate_metrics) and base_samples:
                c = compare_across(ctx, metric, m.samples(metric), base_samples, m.kind)
                if regressed(c, _tolerance(ctx, c.normalised), SCREEN_ALPHA) and not machine_excuse(
                        ctx, m, metric, m.samples(metric), base_samples,
                        _tolerance(ctx, c.normalised), SCREEN_ALPHA):
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
    """Downgrade to ``warn`` the failed comparisons whose Holm-adjusted p exceeds ``alpha``.

    The family is the comparisons that are judged: a figure shown as "not judged"
    (the machine moved it) asks no question, so it spends none of ``alpha``.
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
            check.verdict = "warn"
            check.confirmed = False
            check.message += f"; not significant across the test's {m} comparisons (Holm p={running:.3g})"
    return results
