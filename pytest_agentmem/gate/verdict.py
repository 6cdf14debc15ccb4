"""The gate's decisions, as plain values the reports read.

One :class:`CheckResult` per checked figure (an absolute threshold or a baseline
comparison of one metric of one measurement); one :class:`TestVerdict` per perf
test, filed by the gate plugin (``GatePlugin.verdicts``, and on the item for
``gate.plugin.verdict_of``) when the test's call phase ends.

Sign convention of ``change``: a signed fraction of the baseline where
**positive means worse** whatever the metric's direction (``+0.50`` = 50 % slower
for ``p95_ms``, 50 % fewer for ``qps``); ``raw_change`` is the plain
``value / baseline - 1`` for readers that want the arithmetic change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..measurement import Measurement
from .metric_kinds import is_time_like
from .yardstick import excuse_uniform_moves

Verdict = Literal["pass", "fail", "not-judged"]
Outcome = Literal["passed", "failed", "not-judged", "updated", "error"]
#: A test's status on one side of the gate (its correctness or its speed figures).
Status = Literal["passed", "failed", "not-judged", "partly-judged", "none"]
CheckKind = Literal["threshold", "baseline", "paired"]
Direction = Literal["higher", "lower", "none"]


#: The reason of an A/B wall-time figure left to its run's CPU cost per operation, because the
#: machine took unequal time from the two sides.
SIDES_UNEQUAL = "sides unequal"
#: The reason of a figure its test's baseline was recorded without (one an upgrade of the
#: plugin added): not judged, and not a reason for ``--agentmem-strict`` to fail the run,
#: which judged that test's other figures as before (:func:`~.summary.strict_problems`).
NEW_FIGURE = "new figure"


@dataclass
class CheckResult:
    """One check of one metric of one measurement.

    ``kind="threshold"``: ``limit`` is the absolute bound (``bound`` says ``min``
    or ``max``). ``kind="baseline"``: ``baseline`` is the stored robust value
    (median of its rounds, normalised to this machine when ``normalised``), and
    ``tolerance``/``p_value``/``confirmed`` say how the decision was made.
    ``verdict`` is one of three: ``pass`` (judged, and within its tolerance or not
    significantly worse: the message says which), ``fail`` (judged regressed: fails
    the test), ``not-judged`` (shown, not decided; ``reason`` says why in a few
    words: no baseline yet, the machine was busy, the workload changed...). A
    figure is never "passed" unless it was judged.
    """

    measurement: str
    metric: str
    value: float
    baseline: float | None
    limit: float | None
    change: float | None  # signed fraction, + = worse
    tolerance: float | None
    p_value: float | None
    confirmed: bool
    verdict: Verdict
    message: str
    kind: CheckKind
    direction: Direction = "none"
    bound: str | None = None  # "min" / "max" for thresholds
    raw_change: float | None = None  # value / baseline - 1
    normalised: bool = False  # baseline scaled by a calibration probe (other machine)
    p_adjusted: float | None = None  # Holm-adjusted across the test's comparisons
    interval: tuple[float, float] | None = None  # confidence interval of ``change`` (paired)
    pairs: int | None = None  # paired rounds behind a ``paired`` check
    reason: str | None = None  # why a not-judged figure was not judged (short, plain words)
    #: How the figure was judged when not against its own machine's baseline as measured
    #: (e.g. "relative to the run's other 9 tests (they moved 0.83x)").
    basis: str | None = None

    @property
    def judged(self) -> bool:
        return self.verdict != "not-judged"

    @property
    def speed(self) -> bool:
        """A speed figure (latency, throughput, CPU cost), not a correctness one."""
        return is_time_like(self.metric)

    def to_dict(self) -> dict[str, Any]:
        return {
            "measurement": self.measurement, "metric": self.metric, "value": self.value,
            "baseline": self.baseline, "limit": self.limit, "change": self.change,
            "raw_change": self.raw_change, "tolerance": self.tolerance,
            "p_value": self.p_value, "confirmed": self.confirmed, "verdict": self.verdict,
            "message": self.message, "kind": self.kind, "direction": self.direction,
            "bound": self.bound, "normalised": self.normalised, "p_adjusted": self.p_adjusted,
            "interval": list(self.interval) if self.interval is not None else None,
            "pairs": self.pairs, "judged": self.judged, "reason": self.reason, "basis": self.basis,
            "speed": self.speed,
        }


@dataclass
class TestVerdict:
    """Everything the gate decided about one perf test.

    ``outcome``: ``passed`` (every figure judged, none failed); ``failed`` (a check
    failed); ``not-judged`` (none failed, but some figures were not judged: no
    baseline yet, a busy machine, another machine's baselines... each check's
    ``reason`` says which); ``updated`` (the run wrote a new baseline, ``updated``
    maps ``"<measurement>.<metric>"`` to ``(old or None, new)``); ``error`` (the gate
    could not decide: malformed baseline, threshold naming no measured metric...;
    ``notes`` say why). :attr:`correctness` and :attr:`speed` give the same answer
    for each side of the figures.
    """

    __test__ = False  # not a pytest test class despite the name

    nodeid: str
    outcome: Outcome
    checks: list[CheckResult] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    baseline_path: str | None = None
    notes: list[str] = field(default_factory=list)
    updated: dict[str, tuple[float | None, float]] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    baseline_fingerprint: dict[str, Any] | None = None

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.verdict == "fail"]

    @property
    def correctness(self) -> Status:
        """The status of the correctness figures (error rates, recall, hit rates...)."""
        return status_of([c for c in self.checks if not c.speed])

    @property
    def speed(self) -> Status:
        """The status of the speed figures (throughput, latencies, CPU per operation)."""
        return status_of([c for c in self.checks if c.speed])

    def settle(self) -> None:
        """Set ``outcome`` from the checks (``updated`` and ``error`` are kept); a CPU figure
        that moved with its measurement's model yardstick is not judged first
        (:func:`~.yardstick.excuse_uniform_moves`)."""
        if self.outcome in ("updated", "error"):
            return
        excuse_uniform_moves(self.checks)
        if self.failures:
            self.outcome = "failed"
        elif any(not c.judged for c in self.checks):
            self.outcome = "not-judged"
        else:
            self.outcome = "passed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid, "outcome": self.outcome,
            "correctness": self.correctness, "speed": self.speed,
            "checks": [c.to_dict() for c in self.checks],
            "measurements": [measurement_to_dict(m) for m in self.measurements],
            "baseline_path": self.baseline_path, "notes": list(self.notes),
            "updated": {k: [old, new] for k, (old, new) in self.updated.items()},
            "fingerprint": dict(self.fingerprint),
            "baseline_fingerprint": self.baseline_fingerprint,
        }


def status_of(checks: list[CheckResult]) -> Status:
    """``failed`` if one failed; ``passed`` if all were judged; ``not-judged`` if none
    was; ``partly-judged`` in between; ``none`` without checks."""
    if not checks:
        return "none"
    if any(c.verdict == "fail" for c in checks):
        return "failed"
    judged = sum(1 for c in checks if c.judged)
    if judged == len(checks):
        return "passed"
    return "not-judged" if judged == 0 else "partly-judged"


def measurement_to_dict(m: Measurement) -> dict[str, Any]:
    """A JSON-ready view of a measurement (``load`` via its own ``to_dict`` if any)."""
    load = getattr(m.load, "to_dict", None)
    return {
        "name": m.name, "kind": m.kind, "metrics": dict(m.metrics),
        "rounds": [dict(r) for r in m.rounds], "confirmations": m.confirmations,
        "workload": dict(m.workload),
        "info": {k: v for k, v in m.info.items()
                 if isinstance(v, (str, int, float, bool, type(None))) or k.startswith("ab_")},
        "load": load() if callable(load) else None,
    }


def check_from_dict(data: dict[str, Any]) -> CheckResult:
    """Inverse of :meth:`CheckResult.to_dict`."""
    names = CheckResult.__dataclass_fields__
    values = {k: v for k, v in data.items() if k in names and k not in ("judged", "speed")}
    if values.get("interval") is not None:
        values["interval"] = tuple(values["interval"])
    return CheckResult(**values)


def measurement_from_dict(data: dict[str, Any]) -> Measurement:
    """Inverse of :func:`measurement_to_dict`; ``load`` stays the plain dict (or None)."""
    return Measurement(name=data["name"], metrics=dict(data.get("metrics", {})),
                       rounds=[dict(r) for r in data.get("rounds", [])], load=data.get("load"),
                       kind=data.get("kind", "load"), confirmations=int(data.get("confirmations", 0)),
                       info=dict(data.get("info", {})), workload=dict(data.get("workload") or {}))


def verdict_from_dict(data: dict[str, Any]) -> TestVerdict:
    """Inverse of :meth:`TestVerdict.to_dict` (used on the xdist controller).

    The measurements' ``load`` is then the ``LoadResult.to_dict()`` value, not the object.
    """
    return TestVerdict(
        nodeid=data["nodeid"], outcome=data["outcome"],
        checks=[check_from_dict(c) for c in data.get("checks", [])],
        measurements=[measurement_from_dict(m) for m in data.get("measurements", [])],
        baseline_path=data.get("baseline_path"), notes=list(data.get("notes", [])),
        updated={k: (v[0], v[1]) for k, v in data.get("updated", {}).items()},
        fingerprint=dict(data.get("fingerprint", {})),
        baseline_fingerprint=data.get("baseline_fingerprint"))
