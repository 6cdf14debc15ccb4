"""``LoadResult``: what one load run (or several merged rounds) measured.

Conventions, the same everywhere in the engine:

- ``ops`` counts the measured operations that finished, successfully or not;
  ``errors`` those that raised or timed out (``timeouts`` is the part of
  ``errors`` cancelled by the run's ``timeout``); ``error_rate = errors / ops``.
- ``qps`` is *successful* operations per second of the measured phase
  (``duration_s``: from the first measured start to the last measured finish),
  so a system that fails fast does not look fast.
- Latency figures (``mean_ms`` .. ``max_ms``) come from the HDR histogram of the
  successful operations. In open loop each latency runs from the operation's
  intended start on the schedule, not from when it was actually launched.
- ``cpu_ms_per_op`` is the CPU (user + system) of the test process (with the
  worker processes of ``processes=N``) and of the service processes it talks
  to (``resources["process_cpu_s"] + resources["services_cpu_s"]``, see
  :mod:`.resources`) per *successful* operation, in ms; 0 when no operation
  succeeded. A neighbour that steals wall time leaves it alone; a code path
  that does more work raises it. Merged rounds: total CPU / total successes.
- ``model_cpu_ms_per_op`` and ``cpu_model_ratio`` (:func:`model_yardstick`), when the
  embedding model took at least :data:`MIN_MODEL_SHARE` of the run's CPU: the model's
  CPU per successful operation, and ``cpu_ms_per_op`` in units of it. The model runs in
  the same process, in the same round, on the same cores as the rest of the operation,
  so the ratio cancels how fast the machine runs at that moment: over 8 unchanged runs
  of the catalogue on a shared 2-core machine, the search's ``cpu_ms_per_op`` moved 10 %
  (1 SD) from run to run and its ratio 2.1 % (add 6.8 % and 1.5 %). A change outside
  the model (an extra query, a slower re-rank) moves the ratio; a change of the model's
  own work (a bigger model, a text embedded twice) moves ``model_cpu_ms_per_op``.
- ``cancelled`` counts the operations still running when the run ended and
  cut off (see :mod:`.runner`): errors of their own type, never successes.
- ``caches`` holds how the system's cache counters (see
  :mod:`pytest_agentmem.counters`) moved during the measured phase; when a
  cache was asked, ``metrics()`` adds its hit rate (``result_cache_hit_rate``,
  ``embedding_cache_hit_rate``: hits / lookups) beside ``qps``, and
  :func:`cache_note` says when most lookups were hits (the run measured the
  cache, not the store or the model).
- ``think_s``: the mean think time of closed-loop users (``think=``), else ``None``.
- ``placement`` (runs over workers, ``processes=N``): where the workers ran:
  ``backend`` (``processes`` or ``ray``), ``workers``, ``nodes`` (workers per
  node) and, on a cluster, one entry per worker in ``per_worker`` (node id,
  host, pid, its ops and errors, and in memory its encoded histogram); ``worker_returns`` holds what each worker's
  :class:`~.worker_op.WorkerOp` teardown returned.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from . import histogram as hdr

#: The headline metrics a load result hands to the gate.
GATED_METRICS = ("qps", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms",
                 "max_ms", "error_rate", "cpu_ms_per_op")

#: The ``errors_by_type`` key of operations cut off at the end of a run.
CANCELLED_AT_END = "CancelledAtEndOfRun"

#: How many sample messages are kept per exception type.
MAX_ERROR_SAMPLES = 3

#: The hit-rate metrics a run on a system with caches adds: (metric, hits counter, lookups counter, label).
CACHE_RATES = (
    ("result_cache_hit_rate", "result_cache_hits", "result_cache_lookups", "result-cache"),
    ("embedding_cache_hit_rate", "embedding_cache_hits", "embedding_lookups", "embedding-cache"),
)

#: A run whose cache hit rate exceeds this fraction measured the cache (see :func:`cache_note`).
MOSTLY_CACHED = 0.5


@dataclass
class LoadResult:
    """The figures of a load run. See the module docstring for the conventions."""

    name: str
    ops: int
    errors: int
    timeouts: int
    duration_s: float
    concurrency: int | None
    rate: float | None
    histogram: HdrHistogram = field(repr=False)
    warmup_ops: int = 0
    qps: float = 0.0
    error_rate: float = 0.0
    mean_ms: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    p999_ms: float = 0.0
    max_ms: float = 0.0
    cpu_ms_per_op: float = 0.0
    cancelled: int = 0  # operations cut off at the end of the run (part of errors)
    mode: str = "closed"  # "closed" or "open"
    processes: int = 1
    missed_schedule: dict[str, float] = field(default_factory=dict)
    timeline: list[dict[str, float]] = field(default_factory=list, repr=False)
    errors_by_type: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)
    rounds: list[dict[str, float]] = field(default_factory=list, repr=False)
    #: Interleaved calibration probe readings, one per round (see gate/calibration.py).
    calibration: list[dict[str, float]] = field(default_factory=list, repr=False)
    loop: str = ""  # the event loop class the run used
    #: How the system's cache counters moved in the measured phase (see the module docstring).
    caches: dict[str, float] = field(default_factory=dict)
    think_s: float | None = None  # mean think time of closed-loop users
    #: Where the workers of a ``processes=N`` run ran (see the module docstring).
    placement: dict[str, Any] = field(default_factory=dict)
    #: What each worker's WorkerOp teardown returned (runs over workers).
    worker_returns: list[Any] = field(default_factory=list, repr=False)

    @classmethod
    def build(cls, *, histogram: HdrHistogram, ops: int, errors: int, duration_s: float,
              **fields: Any) -> LoadResult:
        """A result whose derived figures (qps, error rate, latencies) are computed."""
        result = cls(histogram=histogram, ops=ops, errors=errors, duration_s=duration_s, **fields)
        result._derive()
        return result

    def _derive(self) -> None:
        good = self.ops - self.errors
        self.qps = good / self.duration_s if self.duration_s > 0 else 0.0
        self.error_rate = self.errors / self.ops if self.ops else 0.0
        for key, value in hdr.summary_ms(self.histogram).items():
            setattr(self, key, value)
        self.cpu_ms_per_op = cpu_per_op_ms(self.resources, good)

    #: Milliseconds per histogram unit (the histogram counts microseconds).
    histogram_unit_ms = 0.001

    def value_at_percentile_ms(self, percentile: float) -> float:
        """The latency at ``percentile`` (0..100) of the merged histogram, in ms."""
        counts = hdr.counts_view(self.histogram).astype("int64")
        return hdr.percentile_us(counts, percentile) / 1000.0

    @property
    def successes(self) -> int:
        return self.ops - self.errors

    def metrics(self) -> dict[str, float]:
        """The headline gated metrics (qps, latencies in ms, error_rate), the cache hit rates
        when the system's caches were asked (:func:`cache_rates`), and the model yardstick
        when the embedding model ran (:func:`model_yardstick`)."""
        return {**{key: float(getattr(self, key)) for key in GATED_METRICS}, **cache_rates(self.caches),
                **model_yardstick(self.resources, self.successes)}

    @property
    def model_cpu_share(self) -> float | None:
        """The share of the run's CPU (this process and the services) the embedding model's
        runs took, 0..1; ``None`` when unknown (worker processes, or no CPU read)."""
        model = self.resources.get("model_cpu_s")
        total = self.resources.get("process_cpu_s", 0.0) + self.resources.get("services_cpu_s", 0.0)
        if model is None or not total > 0:
            return None
        return min(1.0, max(0.0, model / total))

    @property
    def offered_rate(self) -> float | None:
        """Operations per second the closed-loop users offer: users / (think + mean latency)."""
        if self.think_s is None or not self.concurrency:
            return None
        return self.concurrency / (self.think_s + self.mean_ms / 1000.0)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; the histogram as its standard base64 encoding."""
        return {
            "name": self.name, "mode": self.mode, "ops": self.ops, "errors": self.errors,
            "timeouts": self.timeouts, "cancelled": self.cancelled, "warmup_ops": self.warmup_ops,
            "duration_s": self.duration_s, "concurrency": self.concurrency, "rate": self.rate,
            "processes": self.processes, "loop": self.loop, "think_s": self.think_s,
            "placement": _jsonable(self.placement),
            "offered_rate": self.offered_rate,
            "model_cpu_share": self.model_cpu_share,
            **self.metrics(),
            "caches": dict(self.caches),
            "missed_schedule": dict(self.missed_schedule),
            "timeline": [dict(entry) for entry in self.timeline],
            "errors_by_type": {k: {"count": v["count"], "samples": list(v["samples"])}
                               for k, v in self.errors_by_type.items()},
            "resources": dict(self.resources),
            "rounds": [dict(r) for r in self.rounds],
            "calibration": [dict(c) for c in self.calibration],
            "histogram": hdr.encode(self.histogram),
        }

    def describe(self) -> str:
        """One line for humans: ``name: 1234 ops, 411.3 ops/s, p50 ... errors``."""
        mode = (f"open loop {self.rate:g}/s" if self.mode == "open"
                else f"closed loop x{self.concurrency}")
        if self.think_s is not None:
            mode += f" thinking {self.think_s:g} s"
        text = (f"{self.name}: {mode}, {self.ops} ops in {self.duration_s:.2f} s, "
                f"{self.qps:.1f} ops/s, p50 {self.p50_ms:.2f} ms, p95 {self.p95_ms:.2f} ms, "
                f"p99 {self.p99_ms:.2f} ms, max {self.max_ms:.2f} ms, errors {self.errors}")
        where = placement_note(self.placement)
        if where:
            text += f" [{where}]"
        if self.timeouts:
            text += f" ({self.timeouts} timeouts)"
        if self.cancelled:
            text += f" ({self.cancelled} cancelled at the end of the run)"
        if self.missed_schedule.get("count"):
            text += f", missed schedule {int(self.missed_schedule['count'])}"
        for metric, _, _, what in CACHE_RATES:
            rate = self.metrics().get(metric)
            if rate is not None:
                text += f", {what} hits {rate:.0%}"
        return text


def placement_note(placement: dict[str, Any]) -> str:
    """``4 Ray workers on 2 nodes (a1b2c3d4: 2, e5f6a7b8: 2)``; "" for a run in one process."""
    if not placement or placement.get("backend") != "ray":
        return ""
    nodes = placement.get("nodes", {})
    counts = ", ".join(f"{node}: {count}" for node, count in nodes.items())
    return f"{placement.get('workers', 0)} Ray workers on {len(nodes)} node(s) ({counts})"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):  # a worker's encoded histogram stays in memory (it is in the merge)
        return {str(k): _jsonable(v) for k, v in value.items() if k != "histogram"}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def cache_rates(caches: dict[str, float]) -> dict[str, float]:
    """``result_cache_hit_rate`` / ``embedding_cache_hit_rate`` of the caches that were asked."""
    rates: dict[str, float] = {}
    for metric, hits, lookups, _ in CACHE_RATES:
        asked = caches.get(lookups, 0.0)
        if asked > 0:
            rates[metric] = min(1.0, max(0.0, caches.get(hits, 0.0) / asked))
    return rates


def cache_note(name: str, metrics: dict[str, float]) -> str | None:
    """``"search_repeated: 98% result-cache hits: this measured the cache, not the store"``
    when most of a run's cache lookups were hits (:data:`MOSTLY_CACHED`), else ``None``."""
    result = metrics.get("result_cache_hit_rate")
    if result is not None and result > MOSTLY_CACHED:
        return f"{name}: {result:.0%} result-cache hits: this measured the cache, not the store"
    embedded = metrics.get("embedding_cache_hit_rate")
    if embedded is not None and embedded > MOSTLY_CACHED:
        return (f"{name}: {embedded:.0%} embedding-cache hits: most texts were not embedded, "
                "this measured the cache, not the model")
    return None


#: The least share of a run's CPU the embedding model must take for the run to be measured
#: in units of it: below, the model's few runs (a run served from caches) are no yardstick.
MIN_MODEL_SHARE = 0.1
#: The figures :func:`model_yardstick` adds.
MODEL_CPU_METRIC = "model_cpu_ms_per_op"
CPU_MODEL_RATIO = "cpu_model_ratio"


def model_yardstick(resources: dict[str, float], successes: int) -> dict[str, float]:
    """``model_cpu_ms_per_op`` (the embedding model's CPU per successful operation) and
    ``cpu_model_ratio`` (the run's CPU, process and services, over the model's): empty
    when the model's CPU is unknown (worker processes) or under :data:`MIN_MODEL_SHARE`
    of the run's."""
    model = resources.get("model_cpu_s")
    total = resources.get("process_cpu_s", 0.0) + resources.get("services_cpu_s", 0.0)
    if model is None or successes <= 0 or not total > 0 or model < MIN_MODEL_SHARE * total:
        return {}
    return {MODEL_CPU_METRIC: 1000.0 * model / successes, CPU_MODEL_RATIO: total / model}


def cpu_per_op_ms(resources: dict[str, float], successes: int) -> float:
    """CPU ms (test process + services) per successful operation; 0 without successes."""
    if successes <= 0:
        return 0.0
    cpu_s = resources.get("process_cpu_s", 0.0) + resources.get("services_cpu_s", 0.0)
    return 1000.0 * cpu_s / successes


# --------------------------------------------------------------------------- merging


def merge_errors(parts: Iterable[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Sum the counts of each exception type, keeping a few distinct samples."""
    out: dict[str, dict[str, Any]] = {}
    for part in parts:
        for kind, info in part.items():
            slot = out.setdefault(kind, {"count": 0, "samples": []})
            slot["count"] += int(info["count"])
            for sample in info["samples"]:
                if len(slot["samples"]) < MAX_ERROR_SAMPLES and sample not in slot["samples"]:
                    slot["samples"].append(sample)
    return out


def merge_resources(parts: Sequence[dict[str, float]], wall_s: float) -> dict[str, float]:
    """CPU seconds add up; peak RSS is the highest peak; CPU % is over ``wall_s``."""
    out: dict[str, float] = {}
    for part in parts:
        for key, value in part.items():
            if key.endswith(("_cpu_s", "_wait_s")):
                out[key] = out.get(key, 0.0) + value
            elif key.endswith("_max"):
                out[key] = max(out.get(key, 0.0), value)
    if "process_cpu_s" in out and wall_s > 0:
        out["process_cpu_pct"] = 100.0 * out["process_cpu_s"] / wall_s
    if "services_cpu_s" in out and wall_s > 0:
        out["services_cpu_pct"] = 100.0 * out["services_cpu_s"] / wall_s
    if "process_wait_s" in out and wall_s > 0:
        out["process_wait_pct"] = 100.0 * out["process_wait_s"] / wall_s
    return out


def merge_results(results: Sequence[LoadResult], *, name: str | None = None) -> LoadResult:
    """One result over several rounds: exact histogram sum, summed counts and time.

    ``qps`` of the merge is total successful ops over total measured time; the
    timeline is the rounds' timelines one after the other (each entry keeps its
    ``round``); ``rounds`` lists each round's headline metrics.
    """
    if not results:
        raise ValueError("merge_results needs at least one result")
    first = results[0]
    duration = sum(r.duration_s for r in results)
    timeline: list[dict[str, float]] = []
    offset = 0.0
    for number, result in enumerate(results):
        for entry in result.timeline:
            timeline.append({**entry, "t": round(entry["t"] + offset, 3), "round": number})
        offset += result.duration_s
    missed = merge_missed([r.missed_schedule for r in results])
    merged = LoadResult.build(
        histogram=hdr.merge(r.histogram for r in results),
        ops=sum(r.ops for r in results), errors=sum(r.errors for r in results),
        duration_s=duration, name=name or first.name,
        timeouts=sum(r.timeouts for r in results), cancelled=sum(r.cancelled for r in results),
        concurrency=first.concurrency,
        rate=first.rate, warmup_ops=sum(r.warmup_ops for r in results), mode=first.mode,
        processes=first.processes, missed_schedule=missed, timeline=timeline,
        errors_by_type=merge_errors(r.errors_by_type for r in results),
        resources=merge_resources([r.resources for r in results], duration),
        loop=first.loop, calibration=[dict(c) for r in results for c in r.calibration],
        caches=merge_caches([r.caches for r in results]), think_s=first.think_s,
        placement=dict(first.placement),
        worker_returns=[v for r in results for v in r.worker_returns],
    )
    merged.rounds = [r.metrics() for r in results]
    return merged


def merge_caches(parts: Sequence[dict[str, float]]) -> dict[str, float]:
    """Cache counters of several rounds: the sum of each."""
    out: dict[str, float] = {}
    for part in parts:
        for key, value in part.items():
            out[key] = out.get(key, 0.0) + value
    return out


def merge_missed(parts: Sequence[dict[str, float]]) -> dict[str, float]:
    parts = [p for p in parts if p]
    if not parts:
        return {}
    count = sum(p.get("count", 0) for p in parts)
    lag_total = sum(p.get("mean_lag_ms", 0.0) * p.get("count", 0) for p in parts)
    return {
        "count": count,
        "max_lag_ms": max(p.get("max_lag_ms", 0.0) for p in parts),
        "mean_lag_ms": lag_total / count if count else 0.0,
        "capped": sum(p.get("capped", 0) for p in parts),
        "threshold_ms": max(p.get("threshold_ms", 0.0) for p in parts),
    }


def is_number(value: Any) -> bool:
    """A real, finite-or-infinite number (bool and NaN excluded)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and not math.isnan(value))
