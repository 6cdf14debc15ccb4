"""The ``perf`` fixture: the load runner bound to one test (a sub-plugin of pytest-agentmem).

``result = await perf.run(op, concurrency=..., rate=..., duration=..., ...)``
measures ``op`` (see :mod:`.runner` for closed and open loop) for ``rounds``
rounds, lets the gate ask for confirmation rounds, and files one
:class:`~pytest_agentmem.measurement.Measurement` (``kind="load"``) under the
test; ``perf.record(name, **metrics)`` files other measured figures
(``kind="record"``; calling it again with the same name adds a round).

Each measured round also reads the counters that the test's fixtures
registered (:mod:`pytest_agentmem.counters`, e.g. the ``memory_service``'s
result- and embedding-cache hits) before and after its measured phase, so the
run's figures say how much of it a cache answered (``LoadResult.caches`` and
the ``*_cache_hit_rate`` metrics). In-process runs only: with ``processes=N``
the operations run in other processes, whose counters this one cannot read.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import pytest

from ..closure import fixture_closure
from ..counters import counter_delta, counter_sources, read_counters
from ..errors import ConfigurationError
from ..evidence.run import RunEvidence
from ..marker import perf_marker_of
from ..measurement import Measurement, measurements_of
from ..services.plugin import service_manager
from ..session import get_session
from .engine import run_load
from .pacing import RoundPacer, pacer_for
from .probe import probe_after_round
from .progress import Progress
from .resources import service_pids_of
from .result import LoadResult, is_number, merge_results
from .spec import LoadSpec, Op, validate


class Perf:
    """The load runner of one test. Use through the ``perf`` fixture."""

    def __init__(self, item: pytest.Item, *, rounds: int = 1,
                 service_pids: Callable[[], Iterable[int]] | None = None,
                 cluster: Any = None) -> None:
        """``rounds``: the default of ``perf.run``'s rounds (after the marker's);
        ``service_pids`` lists the processes of the services whose CPU and RSS are recorded;
        ``cluster``: where ``processes=N`` runs its workers (None: this machine)."""
        self._item = item
        self._cluster = cluster
        self._default_rounds = rounds
        self._service_pids = service_pids
        self._names: set[str] = set()
        self._records: dict[str, Measurement] = {}
        self._facts: dict[str, Any] = {}
        self.results: list[LoadResult] = []

    # ------------------------------------------------------------------ workload

    def describe(self, **facts: str | int | float | bool | None) -> None:
        """Say what the test's measurements measure beyond the run's spec: the data set's
        identity and size (``dataset="locomo10", dataset_size=5882``), a model, a setting.

        Stored with the baseline; a later run whose facts differ is not compared with it
        ("not judged: workload changed (dataset_size 5882 -> 2941)").
        """
        bad = {k: v for k, v in facts.items() if not isinstance(v, (str, int, float, bool, type(None)))}
        if bad:
            raise ConfigurationError(f"perf.describe: facts must be plain values (str, int, float, "
                                     f"bool or None); got {', '.join(f'{k}={v!r}' for k, v in bad.items())}")
        self._facts.update(facts)
        for m in measurements_of(self._item):
            m.workload.update(facts)

    def workload(self, spec: LoadSpec | None = None) -> dict[str, Any]:
        """What a measurement of this test measures: ``spec``'s parameters, the scenario scale
        (when set), the embedding model (when the test uses it) and :meth:`describe`'s facts."""
        out: dict[str, Any] = {}
        if spec is not None:
            out.update(mode=spec.mode, concurrency=spec.concurrency, rate=spec.rate, duration=spec.duration,
                       total=spec.total, warmup=spec.warmup, processes=spec.processes, think=spec.think,
                       timeout=spec.timeout)
        from ..config import env_value

        scale = float(env_value("AGENTMEM_SCENARIO_SCALE"))
        if scale != 1.0:
            out["scale"] = scale
        model = get_session(self._item.config).embedding_model
        if model and "embedder" in fixture_closure(self._item):
            out["embedding_model"] = str(model)
        out.update(self._facts)
        return out

    # ------------------------------------------------------------------ run

    async def run(self, op: Op, *, concurrency: int | None = None, rate: float | None = None,
                  duration: float | None = None, total: int | None = None, warmup: int = 0,
                  timeout: float | None = None, name: str | None = None,
                  rounds: int | None = None, processes: int | None = None,
                  think: float | None = None) -> LoadResult:
        """Measure ``op`` and file the measurement under this test; return the result.

        ``concurrency``: virtual users in closed loop (default 1); in open loop
        (``rate`` ops/s) the cap on operations in flight (default: no cap).
        ``duration`` seconds and/or ``total`` operations end each round;
        ``warmup`` operations run first (once) and are excluded; ``timeout``
        seconds cancels an operation (a timeout and an error); ``rounds``
        measured rounds (default: the marker's ``rounds``, else --agentmem-rounds, else 1), merged into
        the returned result; ``processes`` spreads the closed-loop users (or the open loop's
        schedule) over worker processes, or over a Ray cluster's nodes with
        ``--agentmem-load-cluster`` (``op`` must then be picklable; see
        :class:`~.worker_op.WorkerOp` for clients built in each worker); ``think`` seconds: the mean
        (exponential) think time of each closed-loop user before each of its
        operations, not counted in latency (users then offer about
        ``concurrency / think`` operations per second).
        """
        rounds = self._rounds(rounds)
        label = self._claim_name(name)
        spec = validate(op, concurrency=concurrency, rate=rate, duration=duration, total=total,
                        warmup=warmup, timeout=timeout, name=label, processes=processes,
                        think=think)
        workload = self.workload(spec)
        if self._cluster is not None and spec.processes and spec.processes > 1:
            await self._check_cluster()
        pacer = pacer_for(self._item)
        evidence = RunEvidence(self._item, label, self._service_pids)
        if spec.warmup and (getattr(pacer, "warmup_first", False) or evidence.profiles_measured_rounds):
            # warm up before waiting for the other side (which warms up at the same time)
            await run_load(op, replace(spec, warmup=0, total=spec.warmup, duration=None),
                           service_pids=None, cluster=self._cluster)
            spec = _without_warmup(spec)
        planned = await pacer.plan(label, rounds, spec)
        spec = split_spec(spec, rounds, planned)
        results: list[LoadResult] = []
        try:
            if evidence.profiles_measured_rounds:
                evidence.start_profile("measured rounds")
            for number in range(planned):
                results.append(await self._paced_round(pacer, op, spec, number, planned, evidence))
            measurement = self._measurement(label, results)
            extra = await pacer.extra_rounds(measurement)
            paired = getattr(pacer, "paired", None)
            paired_rounds = paired is not None and paired(label)
            suspect_profile = bool(extra) and RunEvidence.profile_on_regression(self._item)
            if extra:
                if suspect_profile and paired_rounds:
                    # A/B: both sides profile their extra pairs alike, the paired change stays fair
                    evidence.start_profile("re-measurement rounds")
                for _ in range(extra):
                    results.append(await self._paced_round(pacer, op, spec, len(results), planned + extra,
                                                           evidence))
                measurement = self._measurement(label, results, confirmations=1, info=measurement.info)
            if suspect_profile and not paired_rounds and evidence.profile is None:
                # a suspect: where did the time go? Profiled rounds of their own, after the
                # re-measurement and not gated (the sampler takes CPU: it must not sway the verdict)
                evidence.start_profile(PROFILED_RERUN)
                for number in range(PROFILED_RERUN_ROUNDS):
                    await self._one_round(op, spec, len(results) + number, 0, probe=False)
        finally:
            evidence.stop_profile()  # py-spy never outlives the run
        evidence.attach(measurement)
        await pacer.finish(measurement)
        measurement.workload.update(workload)
        evidence.compare(measurement)
        measurements_of(self._item).append(measurement)
        self._item.ihook.pytest_agentmem_measurement(item=self._item, measurement=measurement)
        self.results.append(measurement.load)
        return measurement.load

    @staticmethod
    def _measurement(label: str, results: list[LoadResult], confirmations: int = 0,
                     info: dict[str, Any] | None = None) -> Measurement:
        merged = merge_results(results)
        return Measurement(name=label, metrics=merged.metrics(), rounds=[round_figures(r) for r in results],
                           load=merged, kind="load", confirmations=confirmations, info=dict(info or {}))

    async def _paced_round(self, pacer: RoundPacer, op: Op, spec: Any, number: int,
                           rounds: int, evidence: RunEvidence | None = None) -> LoadResult:
        await pacer.before_round(spec.name, number)
        paired = getattr(pacer, "paired", None)
        result = await self._one_round(op, spec, number, rounds,
                                       probe=not (paired is not None and paired(spec.name)),
                                       evidence=evidence)
        await pacer.after_round(spec.name, number, round_figures(result))
        return result

    async def _one_round(self, op: Op, spec: Any, number: int, rounds: int, *,
                         probe: bool = True, evidence: RunEvidence | None = None) -> LoadResult:
        """Round ``number`` (from 0); ``rounds`` > 1 shows the round in the progress line.

        ``probe``: run the interleaved calibration probe after it (see :mod:`.probe`).
        """
        if number:
            spec = _without_warmup(spec)  # the system is warm after the first round
        sources = counter_sources(self._item) if not (spec.processes and spec.processes > 1) else {}
        warmup = 0
        if (sources or (evidence is not None and evidence.active)) and spec.warmup:
            # warm up apart, so that the counters read next cover the measured phase only
            warmup = spec.warmup
            await run_load(op, replace(spec, warmup=0, total=spec.warmup, duration=None))
            spec = _without_warmup(spec)
        label = spec.name if rounds == 1 else f"{spec.name} (round {number + 1})"
        progress = Progress(self._item.config, label)
        if evidence is not None:
            await evidence.before_round()  # statements, Redis, I/O read; pool and I/O sampled from here
        before = read_counters(sources)
        result: LoadResult | None = None
        try:
            result = await run_load(op, spec, on_tick=progress.update if progress.enabled else None,
                                    service_pids=self._service_pids, cluster=self._cluster)
        finally:
            progress.close()
            if evidence is not None:
                await evidence.after_round(result.ops if result is not None else 0)
        if sources:
            result.caches = counter_delta(before, read_counters(sources))
            result.warmup_ops = result.warmup_ops or warmup
        if probe:
            probe_after_round(result)  # interleaved calibration: the machine this round saw
        return result

    async def _check_cluster(self) -> None:
        """Connect the load cluster; refuse loopback services when it has remote nodes."""
        from ..cluster.plugin import check_services_reachable

        self._cluster.connect()  # once per run, on the main thread (Ray installs signal handlers)
        config = self._item.config
        check_services_reachable(self._item, self._cluster, get_session(config).settings,
                                 service_manager(config))

    def _rounds(self, rounds: int | None) -> int:
        if rounds is None:
            marker = perf_marker_of(self._item)
            rounds = marker.rounds if marker is not None and marker.rounds else None
        if rounds is None:
            rounds = self._default_rounds
        if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
            raise ConfigurationError(f"perf.run: rounds must be an int >= 1, got {rounds!r}")
        return rounds

    def _claim_name(self, name: str | None) -> str:
        if name is None:
            base = self._item.name
            label, n = base, 1
            while label in self._names:
                n += 1
                label = f"{base}-{n}"
        else:
            if not isinstance(name, str) or not name:
                raise ConfigurationError(f"perf.run: name must be a non-empty string, got {name!r}")
            if name in self._names:
                raise ConfigurationError(
                    f"perf.run: name {name!r} is already used in this test; give each run its "
                    "own name (repeat a measurement with rounds=N)")
            label = name
        self._names.add(label)
        return label

    # ------------------------------------------------------------------ record

    def record(self, name: str, **metrics: float) -> Measurement:
        """File measured figures (recall, items/s, hit rate...) under ``name``.

        Values must be numbers (not NaN). Calling again with the same name adds a
        round; the headline value of each metric is then the median of its rounds.
        """
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"perf.record: name must be a non-empty string, got {name!r}")
        if not metrics:
            raise ConfigurationError(f"perf.record({name!r}): give at least one metric, "
                                     "e.g. perf.record('search', recall=0.93)")
        bad = {k: v for k, v in metrics.items() if not is_number(v)}
        if bad:
            raise ConfigurationError(
                f"perf.record({name!r}): metrics must be numbers (int or float, not NaN or bool); "
                f"got {', '.join(f'{k}={v!r}' for k, v in bad.items())}")
        values = {k: float(v) for k, v in metrics.items()}
        measurement = self._records.get(name)
        if measurement is None:
            if name in self._names:
                raise ConfigurationError(f"perf.record: name {name!r} is already used by a "
                                         "perf.run in this test; choose another name")
            self._names.add(name)
            measurement = Measurement(name=name, metrics=dict(values), rounds=[values], kind="record",
                                      workload=self.workload())
            self._records[name] = measurement
            measurements_of(self._item).append(measurement)
            self._item.ihook.pytest_agentmem_measurement(item=self._item, measurement=measurement)
            return measurement
        measurement.rounds.append(values)
        keys = {k for r in measurement.rounds for k in r}
        measurement.metrics = {k: _median([r[k] for r in measurement.rounds if k in r]) for k in sorted(keys)}
        return measurement


#: The scope of a suspect's profile in stored-baseline mode, and its rounds (not gated).
PROFILED_RERUN = "re-measurement rounds after the gated ones (not gated)"
PROFILED_RERUN_ROUNDS = 2

#: Beside the metrics in a round's figures: the share of its wall time the process
#: waited for a CPU another process held (see load.resources.run_queue_wait_s).
WAIT_SHARE = "wait_share"
#: And the CPU, in cores, that the machine's other processes used meanwhile.
FOREIGN_CPU = "foreign_cpu"


def round_figures(result: LoadResult) -> dict[str, float]:
    """A round's metrics plus its :data:`WAIT_SHARE` (when the platform tells it)."""
    figures = result.metrics()
    wait = result.resources.get("process_wait_s")
    if wait is not None and result.duration_s > 0:
        figures[WAIT_SHARE] = min(1.0, max(0.0, float(wait) / float(result.duration_s)))
    foreign = result.resources.get("foreign_cpu_cores")
    if foreign is not None:
        figures[FOREIGN_CPU] = float(foreign)
    return figures


def _median(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(statistics.median(finite)) if finite else math.nan


def _without_warmup(spec: Any) -> Any:
    return replace(spec, warmup=0)


def split_spec(spec: LoadSpec, rounds: int, planned: int) -> LoadSpec:
    """``spec`` for ``planned`` rounds that together last as long as ``rounds`` rounds of it.

    A pacer that asks for more, shorter rounds (the A/B mode pairs them) keeps the
    measured time of the run: each round's ``duration`` and ``total`` shrink by
    ``rounds / planned`` (a ``total`` to at least 1 operation).
    """
    if planned <= rounds:
        return spec
    scale = rounds / planned
    return replace(spec,
                   duration=None if spec.duration is None else spec.duration * scale,
                   total=None if spec.total is None else max(1, math.ceil(spec.total * scale)))


@pytest.fixture
def perf(request: pytest.FixtureRequest) -> Perf:
    """The load runner bound to this test: ``await perf.run(op, ...)``, ``perf.record(...)``."""
    from ..cluster.plugin import cluster_of

    return Perf(request.node, rounds=get_session(request.config).settings.rounds or 1,
                service_pids=service_pids_of(service_manager(request.config)),
                cluster=cluster_of(request.config))
