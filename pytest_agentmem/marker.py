"""The ``agentmem_perf`` marker: parsing and validation of its keywords."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import pytest

MARKER = "agentmem_perf"
MARKER_HELP = (
    f"{MARKER}(min_qps=, max_p50_ms=, max_p95_ms=, max_p99_ms=, max_error_rate=, "
    "min_recall=, tolerance=, compare_tolerance=, reference=True, rounds=, gate=()): a "
    "performance test, run only with --agentmem-perf; keywords set absolute acceptance "
    "thresholds (min_<metric>/max_<metric> for any measured metric), per-test overrides of the "
    "regression tolerance (compare_tolerance: in A/B mode only), "
    "and metrics gated beside qps, p95_ms, error_rate and cpu_ms_per_op (gate=)"
)

_THRESHOLD = re.compile(r"^(min|max)_([a-z][a-z0-9_]*)$")


@dataclass(frozen=True)
class Keyword:
    """One declared keyword of the marker (validation accepts these only; docs/reference.md lists them)."""

    name: str  # ``min_<metric>`` / ``max_<metric>`` stand for the family of threshold keywords
    value: str  # what it takes
    help: str


#: Every keyword ``agentmem_perf`` accepts, in the order the reference lists them.
KEYWORDS: tuple[Keyword, ...] = (
    Keyword("min_<metric>", "number", "absolute acceptance threshold: the test fails when the metric "
            "(any the test measured: min_qps, min_recall, min_token_savings...) is below it"),
    Keyword("max_<metric>", "number", "absolute acceptance threshold: the test fails when the metric "
            "(max_p95_ms, max_p99_ms, max_error_rate, max_cpu_ms_per_op...) is above it"),
    Keyword("tolerance", "fraction 0-1 (0.15) or percentage (\"15%\")", "the test's allowed regression against its "
            "reference, in both modes (default --agentmem-tolerance, and --agentmem-compare-tolerance "
            "in A/B mode)"),
    Keyword("compare_tolerance", "fraction 0-1 or percentage", "the test's allowed regression in A/B mode only "
            "(wins over tolerance there)"),
    Keyword("reference", "True or False (default True)", "False: compared with no reference in "
            "either mode (no stored baseline, no A/B base side), only the thresholds gate (in A/B it "
            "runs once, on the candidate's side)"),
    Keyword("baseline", "True or False", "the former spelling of reference= (still accepted)"),
    Keyword("rounds", "int >= 1", "measured rounds of every perf.run of the test (default "
            "--agentmem-rounds, else 1)"),
    Keyword("gate", "metric name or list of them", "metrics compared with the reference beside "
            "the primary set (qps, p95_ms, error_rate, cpu_ms_per_op), e.g. gate=['p99_ms']"),
)
_OTHER_KEYWORDS = {k.name for k in KEYWORDS if "<" not in k.name}


@dataclass(frozen=True)
class Threshold:
    """An absolute acceptance bound: ``metric`` must be >= (min) or <= (max) ``limit``."""

    metric: str
    kind: str  # "min" or "max"
    limit: float

    @property
    def keyword(self) -> str:
        return f"{self.kind}_{self.metric}"


@dataclass(frozen=True)
class PerfMarker:
    """The validated keywords of one test's ``agentmem_perf`` marker."""

    thresholds: tuple[Threshold, ...] = ()
    tolerance: float | None = None
    reference: bool = True  # False: thresholds only, no baseline or A/B base
    rounds: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    gate: tuple[str, ...] = ()  # metrics gated beside the primary set
    compare_tolerance: float | None = None  # A/B mode only; else ``tolerance`` applies there too

    @property
    def baseline(self) -> bool:
        """The former name of :attr:`reference`."""
        return self.reference

    def tolerance_for(self, compare: bool) -> float | None:
        """The test's own tolerance in A/B (``compare``) or stored-baseline mode, if it sets one."""
        if compare and self.compare_tolerance is not None:
            return self.compare_tolerance
        return self.tolerance


def parse_marker(mark: pytest.Mark, nodeid: str) -> PerfMarker:
    """Validate ``mark``; raise :class:`pytest.UsageError` naming the test and the fix."""
    where = f"{nodeid}: @pytest.mark.{MARKER}"
    if mark.args:
        raise pytest.UsageError(f"{where} takes keywords only, got positional {mark.args!r}; "
                                "write e.g. agentmem_perf(max_p95_ms=50)")
    thresholds: list[Threshold] = []
    tolerances: dict[str, float] = {}
    reference: dict[str, bool] = {}  # reference= and its former spelling baseline=
    rounds: int | None = None
    gate: tuple[str, ...] = ()
    for key, value in mark.kwargs.items():
        match = _THRESHOLD.match(key)
        if not match and key not in _OTHER_KEYWORDS:  # only declared keywords (KEYWORDS) pass
            known = "min_<metric>, max_<metric>, " + ", ".join(sorted(_OTHER_KEYWORDS))
            raise pytest.UsageError(f"{where}: unknown keyword {key!r}; known keywords: {known} "
                                    "(e.g. min_qps, max_p95_ms, max_error_rate, min_recall)")
        if match:
            thresholds.append(Threshold(match[2], match[1], _number(where, key, value)))
        elif key in ("tolerance", "compare_tolerance"):
            tolerances[key] = _tolerance(where, key, value)
        elif key in ("reference", "baseline"):
            if not isinstance(value, bool):
                raise pytest.UsageError(f"{where}: {key} must be True or False, got {value!r}")
            reference[key] = value
        elif key == "rounds":
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise pytest.UsageError(f"{where}: rounds must be a positive int, got {value!r}")
            rounds = value
        elif key == "gate":
            names = (value,) if isinstance(value, str) else value
            if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
                raise pytest.UsageError(f"{where}: gate must be a metric name or a list of them, "
                                        f"e.g. gate=['p99_ms'], got {value!r}")
            gate = tuple(names)
        else:  # declared in KEYWORDS but not handled above
            raise AssertionError(f"marker keyword {key!r} is declared but not parsed")
    if len(set(reference.values())) > 1:
        raise pytest.UsageError(f"{where}: reference={reference['reference']} and baseline="
                                f"{reference['baseline']} disagree; baseline= is the former spelling of "
                                "reference=: keep reference= only")
    return PerfMarker(tuple(thresholds), tolerances.get("tolerance"), all(reference.values()), rounds, dict(mark.kwargs), gate,
                      tolerances.get("compare_tolerance"))


def _tolerance(where: str, key: str, value: Any) -> float:
    """A fraction (0.15) or a percentage string ("15%"); a bare number above 1 is refused:
    ``tolerance=5`` would mean 500 %."""
    if isinstance(value, str) and value.strip().endswith("%"):
        from .config import parse_fraction

        try:
            return parse_fraction(value)
        except pytest.UsageError as exc:
            raise pytest.UsageError(f"{where}: {key}: {exc}") from None
    number = _number(where, key, value)
    if number < 0:
        raise pytest.UsageError(f"{where}: {key} must be >= 0 (a fraction: 0.15 = 15%), got {value!r}")
    if number > 1:
        raise pytest.UsageError(f"{where}: {key}={value!r} would mean {number:.0%}; write a fraction "
                                f"({key}={number / 100:g}) or a percentage ({key}=\"{number:g}%\")")
    return number


def _number(where: str, key: str, value: Any) -> float:
    """``value`` as a finite float: an infinite bound (``max_p95_ms=inf``) checks nothing."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise pytest.UsageError(f"{where}: {key} must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise pytest.UsageError(f"{where}: {key} must be a finite number, got {value!r}; "
                                "to set no bound, leave the keyword out")
    return number


PERF_MARKER_KEY = pytest.StashKey[PerfMarker]()


def perf_marker_of(item: pytest.Item) -> PerfMarker | None:
    """The parsed marker of ``item`` (``None`` if it is not a perf test)."""
    return item.stash.get(PERF_MARKER_KEY, None)
