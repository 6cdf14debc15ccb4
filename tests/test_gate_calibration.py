"""The interleaved calibration probe: measured between rounds and stored; it excuses nothing.

A busy machine (the run's event loop waited for a CPU far longer than the baseline's)
leaves the wall-time figures not judged, said so; ``cpu_ms_per_op`` still decides.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_agentmem.gate.baseline import (
    Baseline,
    StoredMeasurement,
    baseline_path,
    load_baseline,
    write_baseline,
)
from pytest_agentmem.gate.calibration import (
    PROBE_CPU,
    PROBE_MAX_S,
    PROBE_MIN_S,
    PROBE_NAME,
    PROBE_WALL,
    probe_budget,
    probe_slowdowns,
    round_probe,
    slowdown,
    summarise_probes,
)
from pytest_agentmem.gate.checks import GateContext, run_checks, screen
from pytest_agentmem.load import histogram as hdr
from pytest_agentmem.load.result import LoadResult, merge_results
from pytest_agentmem.measurement import Measurement

WIGGLE = [1.0, 1.02, 0.98, 1.01, 0.99]


def test_probe_reads_wall_and_cpu_rates_within_its_budget() -> None:
    reading = round_probe(0.02)
    assert reading[PROBE_WALL] > 0 and reading[PROBE_CPU] > 0
    assert reading[PROBE_CPU] >= reading[PROBE_WALL] * 0.5  # CPU time <= wall time, roughly
    assert probe_budget(0.1) == PROBE_MIN_S
    assert probe_budget(1.0) == pytest.approx(0.1)
    assert probe_budget(60.0) == PROBE_MAX_S


def test_summary_and_slowdown() -> None:
    summary = summarise_probes([{PROBE_WALL: 100.0, PROBE_CPU: 200.0},
                                {PROBE_WALL: 300.0, PROBE_CPU: 200.0},
                                {PROBE_WALL: 200.0, PROBE_CPU: 100.0}])
    assert summary == {"probe": PROBE_NAME, "rounds": 3, PROBE_WALL: 200.0, PROBE_CPU: 200.0}
    assert summarise_probes([]) is None
    now = {"probe": PROBE_NAME, PROBE_WALL: 100.0, PROBE_CPU: 200.0}
    assert slowdown(summary, now) == {"wall": 2.0, "cpu": 1.0}
    assert slowdown(None, now) is None
    assert slowdown({**summary, "probe": "other/v9"}, now) is None


def _load(qps: float, probe_wall: float, probe_cpu: float, n: int = 5) -> LoadResult:
    parts = []
    for k in range(n):
        hist = hdr.new_histogram()
        hist.record_value(1000)
        part = LoadResult.build(histogram=hist, ops=1, errors=0, duration_s=1 / (qps * WIGGLE[k]),
                                name="op", timeouts=0, concurrency=1, rate=None)
        part.calibration.append({PROBE_WALL: probe_wall * WIGGLE[k], PROBE_CPU: probe_cpu})
        parts.append(part)
    return merge_results(parts)


def _measurement(qps: float, cpu_ms: float, probe_wall: float, probe_cpu: float) -> Measurement:
    load = _load(qps, probe_wall, probe_cpu)
    rows = [{"qps": qps * w, "cpu_ms_per_op": cpu_ms * w} for w in WIGGLE]
    return Measurement("op", {"qps": qps, "cpu_ms_per_op": cpu_ms}, rows, load=load)


def _baseline(qps: float = 1000.0, cpu_ms: float = 2.0, probe: bool = True) -> Baseline:
    rows = tuple({"qps": qps * w, "cpu_ms_per_op": cpu_ms * w} for w in WIGGLE)
    calibration = ({"probe": PROBE_NAME, "rounds": 5, PROBE_WALL: 1000.0, PROBE_CPU: 1000.0}
                   if probe else None)
    return Baseline("t", {"op": StoredMeasurement("load", {"qps": qps, "cpu_ms_per_op": cpu_ms},
                                                  rows, calibration)})


def _verdicts(m: Measurement, baseline: Baseline) -> dict[str, tuple[str, str]]:
    ctx = GateContext(nodeid="t", measurements=[m], baseline=baseline)
    return {c.metric: (c.verdict, c.message) for c in run_checks(ctx)}


def test_a_slower_probe_excuses_nothing() -> None:
    # everything 1.6x slower, the probe too: a probe's own noise once hid a +57 % regression
    m = _measurement(qps=625.0, cpu_ms=3.2, probe_wall=625.0, probe_cpu=625.0)
    verdicts = _verdicts(m, _baseline())
    assert verdicts["qps"][0] == "fail" and verdicts["cpu_ms_per_op"][0] == "fail", verdicts
    ctx = GateContext(nodeid="t", measurements=[m], baseline=_baseline())
    assert set(screen(ctx, m)) == {"qps", "cpu_ms_per_op"}  # re-measured before failing


def _busy(m: Measurement, share: float) -> Measurement:
    for row in m.rounds:
        row["wait_share"] = share
    return m


def test_the_busy_rule_follows_the_cores_knob(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_agentmem.gate.checks import busy_reason

    quiet, crowded = [{"foreign_cpu": 0.1}], [{"foreign_cpu": 1.4}]
    assert busy_reason(crowded, quiet) is not None  # 1.4 cores of others on this machine: busy
    monkeypatch.setenv("AGENTMEM_BUSY_CORES", "2")
    assert busy_reason(crowded, quiet) is None
    monkeypatch.setenv("AGENTMEM_BUSY_CORES", "inf")  # a dedicated runner: never busy
    assert busy_reason([{"wait_share": 0.9, "foreign_cpu": 9.0}], [{"wait_share": 0.0}]) is None
    monkeypatch.setenv("AGENTMEM_BUSY_CORES", "lots")
    with pytest.raises(pytest.UsageError, match="AGENTMEM_BUSY_CORES"):
        busy_reason(crowded, quiet)


def test_a_busy_machine_leaves_speed_to_the_end_of_the_run() -> None:
    baseline = _baseline()
    for row in baseline.measurements["op"].rounds:
        row.update(wait_share=0.02, foreign_cpu=0.1)
    # a neighbour took the CPU: qps -50 %, the CPU an operation costs unchanged
    busy = _busy(_measurement(qps=500.0, cpu_ms=2.0, probe_wall=500.0, probe_cpu=1000.0), 0.45)
    verdicts = _verdicts(busy, baseline)
    for metric in ("qps", "cpu_ms_per_op"):
        assert verdicts[metric][0] == "not-judged"
        assert "machine busy: the run waited 45% of its time for a CPU other processes held (baseline 2%)" \
            in verdicts[metric][1]
    # other processes using the cores count too, even when the event loop did not wait
    crowded = _measurement(qps=500.0, cpu_ms=2.0, probe_wall=500.0, probe_cpu=1000.0)
    for row in crowded.rounds:
        row.update(wait_share=0.02, foreign_cpu=1.4)
    assert "other processes used 1.4 cores during the run (baseline 0.1)" in _verdicts(crowded, baseline)["qps"][1]
    # waiting a little more than the baseline did is no excuse: judged, and failed
    quiet = _busy(_measurement(qps=500.0, cpu_ms=2.0, probe_wall=1000.0, probe_cpu=1000.0), 0.08)
    assert _verdicts(quiet, baseline)["qps"][0] == "fail"
    # a baseline recorded beside other jobs is no reference for speed as measured either
    for row in baseline.measurements["op"].rounds:
        row["foreign_cpu"] = 1.2
    calm = _measurement(qps=1000.0, cpu_ms=2.0, probe_wall=1000.0, probe_cpu=1000.0)
    for row in calm.rounds:
        row.update(wait_share=0.02, foreign_cpu=0.1)
    assert "other processes used 1.2 cores while the baseline was recorded" in _verdicts(calm, baseline)["qps"][1]


def test_the_decision_uses_the_probes_of_the_confirmation_rounds() -> None:
    m = _measurement(qps=625.0, cpu_ms=3.2, probe_wall=625.0, probe_cpu=625.0)
    m.load.calibration = [{PROBE_WALL: 1000.0, PROBE_CPU: 1000.0}] * 7 + m.load.calibration
    assert probe_slowdowns(_baseline(), [m], {"op": 7})["op"]["wall"] == pytest.approx(1.6, rel=0.03)
    assert probe_slowdowns(_baseline(), [m], {})["op"]["wall"] == pytest.approx(1.0, rel=0.03)


def test_baseline_keeps_the_probe_and_loads_without_it(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    write_baseline(path, _baseline())
    data = json.loads(path.read_text())
    assert data["version"] == 1
    assert data["measurements"]["op"]["calibration"][PROBE_WALL] == 1000.0
    assert load_baseline(path).measurements["op"].calibration[PROBE_CPU] == 1000.0
    del data["measurements"]["op"]["calibration"]  # a file written before the probe existed
    path.write_text(json.dumps(data))
    assert load_baseline(path).measurements["op"].calibration is None


REAL = '''
import hashlib
import pytest

async def op(i):
    digest = b"x"
    for _ in range(3000):  # ~5 ms: a scheduler slice stolen by a neighbour is a small part
        digest = hashlib.sha256(digest * 64).digest()

@pytest.mark.agentmem_perf(tolerance=1.0)
async def test_burn(perf):
    await perf.run(op, concurrency=1, duration=0.5, rounds=3, name="burn")
'''


def _scale(path: Path, factor: float, probe: bool = True) -> None:
    """Make the stored baseline look recorded on a machine ``factor`` x faster."""
    data = json.loads(path.read_text())
    entry = data["measurements"]["burn"]
    for where in [entry["metrics"], *entry["rounds"]]:
        for key in list(where):
            if key == "qps":
                where[key] *= factor
            elif key.endswith("_ms") or key == "cpu_ms_per_op":
                where[key] /= factor
    if probe:
        entry["calibration"][PROBE_WALL] *= factor
        entry["calibration"][PROBE_CPU] *= factor
    else:
        del entry["calibration"]
    path.write_text(json.dumps(data))


def test_end_to_end_rounds_are_probed_and_stored_and_excuse_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_real=REAL)
    args = ("--agentmem-perf", "-p", "no:cacheprovider", "-p", "no:randomly")
    pytester.runpytest(*args, "--update-baselines").assert_outcomes(passed=1)
    path = baseline_path(pytester.path / "perf_baselines", "test_real.py::test_burn")
    stored = json.loads(path.read_text())["measurements"]["burn"]
    assert stored["calibration"]["rounds"] >= 3 and stored["calibration"][PROBE_WALL] > 0
    assert stored["metrics"]["cpu_ms_per_op"] > 0
    assert all("wait_share" in r for r in stored["rounds"])  # how long each round waited for a CPU
    assert stored["workload"] == {"mode": "closed", "concurrency": 1, "rate": None, "duration": 0.5,
                                  "total": None, "warmup": 0, "processes": None, "think": None,
                                  "timeout": None}
    _scale(path, 6.0)  # 6x: far beyond the tolerance of 100% and any noise of this machine
    result = pytester.runpytest(*args, "--agentmem-report", "r.json")
    test = json.loads((pytester.path / "r.json").read_text())["tests"][0]
    # the probe, scaled too, excuses nothing: failed; or, if other processes crowded this
    # shared machine meanwhile, not judged with that reason; never passed
    if test["outcome"] == "failed":
        result.assert_outcomes(failed=1)
    else:
        assert test["speed"] == "not-judged", test
        assert {c["reason"] for c in test["checks"] if c["speed"]} == {"machine busy"}
