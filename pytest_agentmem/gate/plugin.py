"""The gate's plugin object: decide after each test body, re-measure suspects, summarise.

:class:`GatePlugin` (registered as ``agentmem-gate``) keeps the run's verdicts
and this process's calibration probe:

- ``pytest_agentmem_confirm_rounds``: the load runner asks at the end of each
  ``perf.run``; when the figures look regressed (or breach a threshold) the gate
  answers how many extra rounds to measure, and remembers how many rounds there
  were before, so the final decision uses the fresh rounds.
- ``pytest_runtest_call`` (wrapper): after a body that passed, gathers the
  measurements (and a pytest-benchmark result), runs the checks, files a
  :class:`TestVerdict` (:attr:`GatePlugin.verdicts`, and on the item for
  :func:`verdict_of`), writes the baseline under ``--update-baselines`` and
  fails the test with the messages of the failed checks
  (:class:`PerformanceRegression`) or a :class:`BaselineError`.
- ``pytest_runtest_makereport``: shows those two errors as their message, no traceback.
- ``pytest_sessionfinish`` (first): the speed figures measured against another
  machine's baselines, or on a busy machine, are judged relative to the run's
  other tests (:mod:`.across`); a failure there, and under ``--agentmem-strict`` a skipped
  perf test or a figure not judged, fails the run (its exit status).
- ``pytest_terminal_summary``: the headline and the table of every verdict (see summary.py); a
  pytest-xdist worker sends its verdicts to the controller through the
  :class:`~pytest_agentmem.xdist.WorkerChannel`, so the controller's table
  holds every test's, as in a plain run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import pytest

from ..config import Settings
from ..errors import BaselineError, ConfigurationError, PerformanceRegression
from ..evidence.store import BASELINE_FOLDER_KEY
from ..load.result import cache_note
from ..marker import PerfMarker, perf_marker_of
from ..measurement import Measurement, measurements_of
from ..session import get_session
from ..xdist import WorkerChannel, is_worker, run_number
from .across import Pending, pending_of, resolve
from .baseline import (
    Baseline,
    Located,
    baseline_from,
    check_writable,
    locate,
    with_recording,
    write_baseline,
    write_target,
)
from .benchmark import benchmark_measurement
from .calibration import measure_component, measure_probe
from .checks import CHECKS, GateContext, busy_reason, run_checks, screen
from .directions import is_primary
from .fingerprint import fingerprint, machine_differences, machine_fingerprint, stack_differences
from .reproduce import reproduce, settle_again, suspects
from .stats import centre
from .summary import render, strict_problems
from .verdict import TestVerdict, verdict_from_dict

#: Fewest extra rounds measured to confirm a suspected regression.
MIN_CONFIRM_ROUNDS = 5
#: Under --update-baselines, a perf.run measured with fewer rounds is topped up to this many.
BASELINE_ROUNDS = 5
#: The worker channel's key of the verdicts.
CHANNEL_KEY = "verdicts"


@dataclass
class _ItemState:
    """Per-test gate state: the loaded baseline and the rounds before confirmation."""

    loaded: bool = False
    located: Located | None = None
    error: BaselineError | None = None
    initial_rounds: dict[str, int] = field(default_factory=dict)
    topped_up: set[str] = field(default_factory=set)
    verdict: TestVerdict | None = None


_STATE = pytest.StashKey[_ItemState]()


def _state(item: pytest.Item) -> _ItemState:
    state = item.stash.get(_STATE, None)
    if state is None:
        state = item.stash[_STATE] = _ItemState()
    return state


def verdict_of(item: pytest.Item) -> TestVerdict | None:
    """The verdict the gate filed for ``item`` (``None``: not gated, or not decided)."""
    state = item.stash.get(_STATE, None)
    return state.verdict if state is not None else None


def _marker(item: pytest.Item) -> PerfMarker:
    return perf_marker_of(item) or PerfMarker()


class GatePlugin:
    """The performance gate of one pytest run (registered as ``agentmem-gate``)."""

    NAME = "agentmem-gate"

    def __init__(self, config: pytest.Config, channel: WorkerChannel) -> None:
        self.config = config
        #: Names this run in the recordings it makes (the same in each xdist worker of it).
        self.run_number = run_number(config, time.time())
        #: Every verdict of the run (on the xdist controller: the workers' too).
        self.verdicts: list[TestVerdict] = []
        #: This process's calibration probe (measured on first use; a test may set it).
        self.probe: dict[str, Any] | None = None
        #: Perf tests that were skipped: node id -> the reason.
        self.skipped: dict[str, str] = {}
        #: Speed figures judged at the end of the run (another machine's baselines, a busy machine).
        self.pending: list[Pending] = []
        #: Lines the end of the run adds to the summary (late failures, strict mode).
        self.closing: list[str] = []
        #: What the fresh processes of the end of the run did (the JSON report's ``run.reproduce``).
        self.reproduction: dict[str, Any] | None = None
        channel.add(CHANNEL_KEY, self._send, self._receive)

    @property
    def settings(self) -> Settings:
        return get_session(self.config).settings

    def calibration(self) -> dict[str, Any]:
        """This process's calibration probe (measured on first use, then kept), with the probes
        of the components loaded so far (each measured once, when first needed)."""
        if self.probe is None:
            self.probe = measure_probe()
        components = self.probe.setdefault("components", {})
        for name, probe in get_session(self.config).speed_probes.items():
            if name not in components:
                rate = measure_component(probe.run)
                if rate is not None:
                    components[name] = rate
        return self.probe

    def _located(self, item: pytest.Item) -> Located | None:
        """The stored baseline of ``item`` and whose machine recorded it (loaded once; raises
        BaselineError if unusable). None in A/B mode or for a test marked reference=False."""
        state = _state(item)
        settings = self.settings
        if not state.loaded:
            state.loaded = True
            if _marker(item).reference and not settings.compare:
                here = machine_fingerprint()
                try:
                    state.located = locate(settings.baselines_dir, item.nodeid, here,
                                           lambda fp: machine_differences(fp, {"machine": here}))
                except BaselineError as exc:
                    if settings.update_baselines:
                        exc = BaselineError(f"{exc} (--update-baselines does not overwrite it)")
                    state.error = exc
        if state.error is not None:
            raise state.error
        return state.located

    def _context(self, item: pytest.Item, measurements: list[Measurement], notes: list[str],
                 current_fp: dict[str, Any]) -> GateContext:
        settings = self.settings
        marker = _marker(item)
        located = self._located(item)
        baseline = located.baseline if located is not None else None
        tolerance = settings.tolerance_of(marker)
        other = None
        if baseline is not None:
            differs = machine_differences(baseline.fingerprint, current_fp)
            if differs and located is not None and not located.same_machine:
                other = "; ".join(differs)
                notes.append(
                    f"baseline recorded on another machine ({other}): speed figures judged at the end of "
                    "the run relative to the run's other tests; record this machine's baselines with "
                    "--update-baselines (kept beside the others), or gate with --agentmem-compare")
            stack = stack_differences(baseline.fingerprint, current_fp)
            if stack:
                notes.append("software differs from the baseline's: " + "; ".join(stack))
        initial = dict(_state(item).initial_rounds)
        return GateContext(
            nodeid=item.nodeid, measurements=measurements, thresholds=marker.thresholds,
            tolerance=tolerance, baseline=baseline, has_reference=marker.reference, other_machine=other,
            update=settings.update_baselines, initial_rounds=initial, gate_metrics=marker.gate,
            paired=bool(settings.compare))

    # ------------------------------------------------------------------ confirmation

    @pytest.hookimpl
    def pytest_agentmem_confirm_rounds(self, item: pytest.Item, measurement: Measurement) -> int | None:
        """Ask for extra rounds when ``measurement`` looks regressed or breaches a threshold."""
        state = _state(item)
        if measurement.name in state.initial_rounds or measurement.name in state.topped_up:
            return None  # already re-measured once
        if self.settings.update_baselines:
            # a baseline needs rounds for the significance test: top it up to BASELINE_ROUNDS
            if measurement.kind != "load":
                return None
            have = max((len(measurement.samples(k)) for k in measurement.metrics), default=0)
            state.topped_up.add(measurement.name)
            return max(0, BASELINE_ROUNDS - have) or None
        try:
            ctx = self._context(item, [measurement], [], fingerprint(item.config))
        except BaselineError:
            return None  # reported by the gate after the body
        suspects = screen(ctx, measurement)
        stored = ctx.baseline.measurements.get(measurement.name) if ctx.baseline else None
        family = sum(1 for k in measurement.metrics if is_primary(k, measurement.kind, ctx.gate_metrics))
        family *= 1 + len(measurements_of(item))
        if not suspects:
            if stored is None or measurement.kind != "load" or not (
                    ctx.other_machine or busy_reason(measurement.rounds, stored.rounds)):
                return None
            # speed figures judged at the end of the run (another machine's baseline, a busy
            # machine) need rounds for their significance test: top the run up, every round counts
            have = max((len(measurement.samples(k)) for k in measurement.metrics), default=0)
            base_rounds = min((len(stored.samples(k)) for k in stored.metrics), default=BASELINE_ROUNDS)
            state.topped_up.add(measurement.name)
            # judged at the end in the run's family (:func:`.across.resolve`): rounds for its size
            tests = sum(1 for i in item.session.items if perf_marker_of(i) is not None)
            need = max(MIN_CONFIRM_ROUNDS, confirm_rounds_for(base_rounds, family * max(1, tests), ctx.alpha))
            return max(0, need - have) or None
        count = len(measurement.samples(suspects[0])) or 1
        state.initial_rounds[measurement.name] = count
        measurement.info["gate_suspects"] = sorted(set(suspects))
        base_rounds = len(stored.samples(suspects[0])) if stored is not None else BASELINE_ROUNDS
        return max(MIN_CONFIRM_ROUNDS, count, confirm_rounds_for(base_rounds, family, ctx.alpha))

    # ------------------------------------------------------------------ the gate

    def gate(self, item: pytest.Item) -> TestVerdict | None:
        """Decide ``item`` after its body passed; file and return the verdict (None: not gated)."""
        measurements = _gathered(item)
        settings = self.settings
        if settings.ab_role == "base" or not _is_gated(item, measurements):
            return None  # the base side of an A/B run is judged by the candidate
        current_fp = fingerprint(item.config)
        verdict = TestVerdict(nodeid=item.nodeid, outcome="passed", measurements=measurements,
                              fingerprint=current_fp)
        _state(item).verdict = verdict
        self.verdicts.append(verdict)
        # say what was measured: a run answered mostly by a cache did not measure the store
        verdict.notes.extend(note for m in measurements if m.kind == "load"
                             for note in [cache_note(m.name, m.metrics)] if note)
        try:
            ctx = self._context(item, measurements, verdict.notes, current_fp)
            located = self._located(item)
            verdict.baseline_path = str(located.path) if located is not None else None
            extra = [f for found in item.ihook.pytest_agentmem_gate_checks(item=item) for f in found]
            verdict.checks = run_checks(ctx, [*CHECKS, *extra])
        except (BaselineError, ConfigurationError) as exc:
            verdict.outcome = "error"
            verdict.notes.append(str(exc))
            raise
        baseline = ctx.baseline
        verdict.baseline_fingerprint = baseline.fingerprint if baseline else None
        verdict.settle()
        failures = verdict.failures
        if settings.update_baselines and located is not None:
            if failures:
                verdict.notes.append("baseline not updated: the test failed its thresholds")
            elif measurements:
                path = write_target(settings.baselines_dir, item.nodeid, current_fp["machine"], located)
                verdict.baseline_path = str(path)
                item.stash[BASELINE_FOLDER_KEY] = path.parent  # its evidence goes beside it
                self._update(item, verdict, path, baseline if located.same_machine else None,
                             measurements, current_fp)
        elif not failures:  # speed figures left to the end of the run (another machine, a busy one)
            self.pending.extend(pending_of(verdict, ctx, baseline.measurements if baseline else None))
        if failures:
            raise PerformanceRegression([c.message for c in failures])
        return verdict

    def _update(self, item: pytest.Item, verdict: TestVerdict, path: Any, old: Baseline | None,
                measurements: list[Measurement], current_fp: dict[str, Any]) -> None:
        new = baseline_from(item.nodeid, measurements, current_fp, self.calibration(), self.run_number)
        if self.settings.add_recording:
            new, counts = with_recording(old, new)
            verdict.notes.append("baseline recordings: " + ", ".join(
                f"{name} {n}" for name, n in sorted(counts.items()) if new.measurements[name].kind == "load"))
        try:
            check_writable(path)  # never overwrite a malformed / newer file (raises BaselineError)
            write_baseline(path, new)
        except BaselineError as exc:
            verdict.outcome = "error"
            verdict.notes.append(str(exc))
            raise
        verdict.outcome = "updated"
        for name, stored in sorted(new.measurements.items()):
            before = old.measurements.get(name) if old else None
            for metric in sorted(stored.metrics):
                old_samples = before.samples(metric) if before else []
                verdict.updated[f"{name}.{metric}"] = (centre(old_samples) if old_samples else None,
                                                       centre(stored.samples(metric)))

    @pytest.hookimpl
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        """Tell the evidence which folder holds this test's baseline (a machine's own set, or the
        baselines folder) before the body measures; an unusable file is reported by the gate."""
        if not self.settings.perf or perf_marker_of(item) is None:
            return
        try:
            located = self._located(item)
        except BaselineError:
            return
        if located is not None:
            item.stash[BASELINE_FOLDER_KEY] = located.path.parent

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        result = yield  # a body that raised propagates: no gate decision
        self.gate(item)
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
        report = yield
        if report.skipped and perf_marker_of(item) is not None and self.settings.perf:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr or "")
            self.skipped.setdefault(item.nodeid, str(reason).removeprefix("Skipped: "))
        excinfo = call.excinfo
        if call.when == "call" and excinfo is not None and isinstance(
                excinfo.value, (PerformanceRegression, BaselineError, ConfigurationError)):
            lines = str(excinfo.value).splitlines() or [""]
            report.longrepr = "\n".join([f"{type(excinfo.value).__name__}: {lines[0]}",
                                          *(f"  {line}" for line in lines[1:])])
        return report

    # ------------------------------------------------------------------ end of the run

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Judge the figures left for the end of the run; fail the run for what they found,
        and under --agentmem-strict for what was skipped or not judged."""
        if self.pending:
            pending, self.pending = self.pending, []
            changed = resolve(pending)
            again = None
            suspected = suspects(pending)
            if suspected and self.settings.reproduce and not is_worker(self.config):
                again = self._reproduce(suspected)
            failed = [v for v in changed if v.outcome == "failed"]
            for v in changed:
                self.config.hook.pytest_agentmem_verdict_changed(config=self.config, verdict=v)
            for v in failed:
                self.closing.append(f"FAILED {v.nodeid} (judged at the end of the run against the run's "
                                    "other tests: baselines from another machine, a busy one, or recorded "
                                    "several times)")
                self.closing.extend(f"  {c.message}" for c in v.failures)
            if again:
                self.closing.append(again)
            if failed:
                _fail_session(session)
        if is_worker(self.config):
            return
        if any(line.startswith("FAILED") for line in self.closing):
            _fail_session(session)  # an xdist worker's late failure, received by the controller
        if not self.settings.strict or not self.settings.perf:
            return
        problems = strict_problems(self.verdicts, self.skipped)
        if problems:
            self.closing.append(f"--agentmem-strict: the run fails: {len(problems)} perf test"
                                f"{'s' if len(problems) != 1 else ''} not fully judged")
            self.closing.extend(f"  {line}" for line in problems)
            _fail_session(session)

    def _reproduce(self, suspected: list[Pending]) -> str:
        """Run the tests of the ``suspected`` figures again in fresh processes and decide those
        figures again on their rounds (:mod:`.reproduce`); the summary's line about it."""
        tests = list(dict.fromkeys(p.verdict.nodeid for p in suspected))
        failed = sum(1 for p in suspected if p.check.verdict == "fail")
        n, most = len(suspected), int(self.settings.reproduce)
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")

        def say(line: str) -> None:
            if reporter is not None:
                reporter.write_line(line)

        say(f"agentmem: {n} speed figure{'s' if n != 1 else ''} of {len(tests)} test{'s' if len(tests) != 1 else ''}"
            f" worse than the tolerance at the end of the run ({failed} failed); running those tests again "
            f"in fresh processes, at most {most}: a failure must reproduce (--agentmem-reproduce off to "
            "fail at once)")
        done = reproduce(self.config, suspected, most, say)
        counts = settle_again(suspected, done)
        self.reproduction = {"figures": n, "tests": tests, "processes": done.processes,
                             "elapsed_s": round(done.elapsed, 1), "why_not": done.why_not or None, **counts}
        said = ", ".join(f"{k} {what}" for what, k in counts.items() if k) or "none failed again"
        where = "a fresh process's rounds" if done.processes == 1 else f"{done.processes} fresh processes' rounds"
        return (f"agentmem: {n} figure{'s' if n != 1 else ''} decided again on {where} "
                f"({done.elapsed:.0f} s): {said}")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if is_worker(self.config):
            return
        lines = render(self.verdicts, self.skipped)
        if not lines and not self.closing:
            return
        terminalreporter.write_sep("=", "agentmem performance gate")
        for line in lines:
            terminalreporter.write_line(line)
        for line in self.closing:
            terminalreporter.write_line(line, red=line.startswith(("FAILED", "--agentmem-strict")))

    def _send(self) -> dict[str, Any]:
        return {"verdicts": [v.to_dict() for v in self.verdicts], "skipped": dict(self.skipped),
                "closing": list(self.closing)}

    def _receive(self, workerid: str, part: Any) -> None:
        self.verdicts.extend(verdict_from_dict(v) for v in part.get("verdicts", []))
        self.skipped.update(part.get("skipped", {}))
        self.closing.extend(part.get("closing", []))


def _fail_session(session: pytest.Session) -> None:
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def confirm_rounds_for(base_rounds: int, family: int, alpha: float, cap: int = 12) -> int:
    """Fresh rounds that let a rank test against ``base_rounds`` reach Holm's strictest level.

    The smallest one-sided Mann-Whitney p of ``k`` rounds all worse than ``n``
    baseline rounds is ``1 / C(n + k, k)``; Holm across ``family`` comparisons
    needs ``alpha / family`` for the first. Without enough rounds no regression
    could ever be confirmed, whatever its size.
    """
    target = alpha / max(1, family) / 2
    for k in range(MIN_CONFIRM_ROUNDS, cap + 1):
        if 1 / math.comb(max(1, base_rounds) + k, k) <= target:
            return k
    return cap


def _gathered(item: pytest.Item) -> list[Measurement]:
    found = measurements_of(item)
    fixture = getattr(item, "funcargs", {}).get("benchmark")
    if fixture is not None and not any(m.kind == "benchmark" for m in found):
        measured = benchmark_measurement(fixture)
        if measured is not None:
            found.append(measured)
    return list(found)


def _is_gated(item: pytest.Item, measurements: list[Measurement]) -> bool:
    return perf_marker_of(item) is not None or bool(measurements)
