"""Another machine's baselines: speed figures judged at the end of the run, relative to the
run's other tests (gate/across.py); correctness figures judged as always; too few tests to
compare is said, not passed; the machine's own set is written beside the primary one.
"""

from __future__ import annotations

import json
import math

import pytest
from gate_project import CONFTEST, bdir, figures, rounds, run

from pytest_agentmem.gate.across import (
    MIN_PEERS,
    SHARE_WINDOW,
    Pending,
    peer_group,
    probe_disagreement,
    resolve,
)
from pytest_agentmem.gate.baseline import MACHINES_DIR, SCHEMA, VERSION, baseline_path, machine_key
from pytest_agentmem.gate.checks import PENDING, SPREAD, not_judged
from pytest_agentmem.gate.fingerprint import machine_fingerprint
from pytest_agentmem.gate.recordings import RUN_KEY, RunSpread, run_spread
from pytest_agentmem.gate.verdict import TestVerdict

NAMES = [f"t{i}" for i in range(6)]
TESTS = "import pytest\n" + "".join(
    f"\n@pytest.mark.agentmem_perf\ndef test_{n}(record):\n    record({n!r})\n" for n in NAMES)
OTHER = {"cpu_model": "Fast CPU 9000", "cpu_count": 64, "memory_gb": 512, "os": "Linux", "arch": "x86_64"}


def _healthy(slower: dict[str, float] | None = None) -> dict[str, dict]:
    """Each test's figures here, 12 rounds (topped up as the gate asks for the run's family): 1000 qps /
    10 ms / 1 ms CPU an op (x ``slower[name]``)."""
    out = {}
    for i, name in enumerate(NAMES):
        k = (slower or {}).get(name, 1.0) * (1 + i / 100)  # the tests move a little differently
        out[name] = {"rounds": rounds(12, qps=1000 / k, p95_ms=10.0 * k, cpu_ms_per_op=1.0 * k, error_rate=0.0)}
    return out


def _foreign_baselines(pytester: pytest.Pytester, names: list[str], factor: float = 2.0) -> None:
    """Baselines recorded on a machine ``factor`` times faster (the primary set)."""
    for name in names:
        nodeid = f"test_perf.py::test_{name}"
        path = baseline_path(bdir(pytester), nodeid)
        path.parent.mkdir(exist_ok=True)
        metrics = {"qps": 1000 * factor, "p95_ms": 10.0 / factor, "cpu_ms_per_op": 1.0 / factor,
                   "error_rate": 0.0}
        path.write_text(json.dumps({
            "schema": SCHEMA, "version": VERSION, "nodeid": nodeid, "created": "2026-01-01T00:00:00+00:00",
            "fingerprint": {"machine": OTHER, "stack": {}},
            "measurements": {name: {"kind": "record", "metrics": metrics, "rounds": rounds(**metrics)}}}))


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_perf=TESTS)
    figures(pytester, _healthy())
    return pytester


def test_a_machine_that_moved_every_test_alike_passes_every_figure_judged(project: pytest.Pytester) -> None:
    _foreign_baselines(project, NAMES)
    result = run(project)
    result.assert_outcomes(passed=6)
    assert result.ret == 0
    out = result.stdout.str()
    assert "speed 6 passed" in out and "not judged" not in out.split("agentmem performance gate")[1].split("\n")[1]
    result.stdout.fnmatch_lines(["*t0.p95_ms*pass*", "*baseline recorded on another machine (cpu_model: "
                                 "'Fast CPU 9000' -> *judged at the end of the run*"])


def test_one_test_slower_than_the_machine_moved_the_others_fails_the_run(project: pytest.Pytester) -> None:
    _foreign_baselines(project, NAMES)
    figures(project, _healthy({"t3": 1.5}))
    result = run(project)
    assert result.ret == 1  # judged at the end of the run: the run fails
    result.stdout.fnmatch_lines([
        "*speed 1 failed, 5 passed*",
        "FAILED test_perf.py::test_t3 (judged at the end of the run against the run's other tests*",
        "*t3.p95_ms 15.* > scaled baseline 10.* (+5?%, tolerance 2?%, p=0.00*; baseline x2.0*, the median "
        "shift of the run's other 5 tests against another machine's baselines, which spread ?%); reproduced "
        "when its test ran again in 3 fresh processes, over * s (+5?%, +5?%, +5?%)",
    ])
    # the JSON report says the same as the terminal
    report = project.path / "r.json"
    run(project, f"--agentmem-report={report}")
    doc = json.loads(report.read_text())
    t3 = next(t for t in doc["tests"] if t["nodeid"].endswith("test_t3"))
    assert t3["outcome"] == "failed" and t3["speed"] == "failed" and t3["correctness"] == "passed"


def test_too_few_tests_against_another_machine_are_not_judged_and_strict_fails(project: pytest.Pytester) -> None:
    _foreign_baselines(project, NAMES[:2])  # the other four have no baseline at all
    result = run(project)
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "6 perf tests: correctness 4 not judged, 2 passed (no baseline: record one with --update-baselines); "
        "speed 6 not judged (no baseline: record one with --update-baselines; another machine's baseline: "
        "record this machine's with --update-baselines, or gate with --agentmem-compare)",
        "*t0.p95_ms*not judged: another machine's baseline*",
    ])
    assert "only 1 other test measured p95_ms in this run" in result.stdout.str()
    strict = run(project, "--agentmem-strict")
    assert strict.ret == 1
    strict.stdout.fnmatch_lines(["--agentmem-strict: the run fails: 6 perf tests not fully judged",
                                 "  test_perf.py::test_t0: 3 figures not judged (another machine's baseline)"])


def test_update_baselines_keeps_another_machines_set_and_writes_this_machines(project: pytest.Pytester) -> None:
    _foreign_baselines(project, NAMES)
    primary = baseline_path(bdir(project), "test_perf.py::test_t0")
    before = primary.read_text()
    run(project, "--update-baselines").assert_outcomes(passed=6)
    assert primary.read_text() == before  # another machine's: kept
    own = baseline_path(bdir(project) / MACHINES_DIR / machine_key(machine_fingerprint()), "test_perf.py::test_t0")
    assert json.loads(own.read_text())["fingerprint"]["machine"]["cpu_model"] == machine_fingerprint()["cpu_model"]
    # from now on this machine's own set decides, as on one machine: +50 % on one test fails it
    figures(project, _healthy({"t3": 1.5}))
    result = run(project)
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["*PerformanceRegression: t3.*"])


def _pending(name: str, factor: float, tolerance: float = 0.15) -> Pending:
    verdict = TestVerdict(nodeid=f"t::{name}", outcome="not-judged")
    base = [1.0, 1.01, 0.99, 1.0, 1.02]
    check = not_judged(name, "cpu_ms_per_op", factor, PENDING, "pending", 1.0)
    verdict.checks.append(check)
    return Pending(verdict, check, [b * factor for b in base], base, tolerance)


def test_resolve_is_leave_one_out_and_widens_by_the_peers_spread() -> None:
    items = [_pending(f"a{i}", 0.5 * (1 + i / 100)) for i in range(6)] + [_pending("slow", 0.5 * 1.3)]
    changed = resolve(items)
    assert {v.nodeid for v in changed} == {p.verdict.nodeid for p in items}
    verdicts = {p.verdict.nodeid: p.verdict for p in items}
    assert verdicts["t::slow"].outcome == "failed"
    assert all(verdicts[f"t::a{i}"].outcome == "passed" for i in range(6))
    # peers that disagree a little: the tolerance widens with them, and +30 % no longer stands out
    some = [_pending(f"s{i}", 0.5 * f) for i, f in enumerate((0.97, 0.98, 1.0, 1.01, 1.02, 1.03))]
    some.append(_pending("slow", 0.5 * 1.18))
    resolve(some)
    slow = some[-1].verdict
    assert slow.outcome == "passed" and 0.15 < slow.checks[0].tolerance < 0.3
    assert "which spread" in slow.checks[0].message
    # peers that disagree more than the tolerance: nothing can be told apart, nothing is called passed
    wide = [_pending(f"w{i}", 0.5 * f) for i, f in enumerate((0.6, 0.8, 1.0, 1.25, 1.6, 2.0))]
    wide.append(_pending("slow", 0.5 * 1.3))
    resolve(wide)
    check = wide[-1].verdict.checks[0]
    assert check.verdict == "not-judged" and check.reason == "tests moved unevenly"
    assert "moved too unevenly against their baselines" in check.message
    # ... and so is a change beyond even the widened tolerance while the figure's own run-to-run
    # spread is unknown (a figure that moves more than most is not told from a regression) ...
    far = [_pending(f"w{i}", 0.5 * f) for i, f in enumerate((0.6, 0.8, 1.0, 1.25, 1.6, 2.0))]
    far.append(_pending("slow", 0.5 * 4.0))
    resolve(far)
    assert far[-1].verdict.checks[0].verdict == "not-judged"
    assert "--agentmem-add-recording" in far[-1].verdict.checks[0].message
    # ... but with its spread known from its baseline's recordings, it is seen through, and fails
    far = [_pending(f"w{i}", 0.5 * f) for i, f in enumerate((0.6, 0.8, 1.0, 1.25, 1.6, 2.0))]
    far.append(_pending("slow", 0.5 * 4.0))
    far[-1].spread = RunSpread(0.03, 5)
    resolve(far)
    assert far[-1].verdict.outcome == "failed" and far[-1].verdict.checks[0].verdict == "fail"


def test_a_figure_is_scaled_by_the_tests_whose_cpu_goes_where_its_own_does() -> None:
    # the machine moved the model-bound tests x1.3 and the pure-Python ones x2.0 (measured so on
    # one shared machine from one hour to the next): a model-bound test +25 % slower than its
    # kind is 1.625x, below every test's median (x2.0), so that median would pass it
    model = [_pending(f"m{i}", 1.3 * (1 + i / 100)) for i in range(4)]
    python = [_pending(f"p{i}", 2.0 * (1 + i / 100)) for i in range(6)]
    slow = _pending("slow", 1.3 * 1.25)
    for item, share in zip(model + python + [slow], [0.9, 0.8, 0.7, 0.6] + [0.0] * 6 + [0.55]):
        item.model_share = share
    group, basis = peer_group(slow, model + python + [slow])
    assert {q.verdict.nodeid for q in group} == {f"t::m{i}" for i in range(4)}
    assert basis == "whose CPU went 60%-90% to the embedding model (this one 55%)"
    resolve(model + python + [slow])
    check = slow.verdict.checks[0]
    assert slow.verdict.outcome == "failed" and check.verdict == "fail"
    assert "other 4 tests whose CPU went 60%-90% to the embedding model" in check.message
    assert all(item.verdict.outcome == "passed" for item in model + python)


def test_a_figure_judged_against_its_peers_moves_as_much_as_it_moved_against_them_in_its_recordings() -> None:
    # five recordings in five runs, in which the machine moved every test alike by up to 20 %:
    # each figure's own spread is 10 %, but against the others it held within 1 %
    machine = [1.0, 1.2, 0.9, 1.1, 0.85]

    def item(name: str, factor: float, named: bool) -> Pending:
        pending = _pending(name, factor)
        pending.recordings = tuple({"cpu_ms_per_op": m * (1 + 0.01 * (-1) ** i), **({RUN_KEY: 7.0 + i} if named else {})}
                                   for i, m in enumerate(machine))
        pending.spread = run_spread(pending.recordings, "cpu_ms_per_op")
        return pending

    for named in (True, False):
        items = [item(f"a{i}", 1.3 * (1 + i / 100), named) for i in range(5)] + [item("slow", 1.3 * 1.3, named)]
        resolve(items)
        check = items[-1].verdict.checks[0]
        if named:  # +30 % against a relative spread of about 1 %: fails
            assert items[-1].relative is not None and items[-1].relative.sd < 0.02
            assert check.verdict == "fail" and "from run to run against the tests it is scaled by, over 5" in check.message
        else:  # against its own spread of 13 %, +30 % over a 15 % tolerance is not told from the machine
            assert items[-1].relative is None and check.verdict != "fail"


def test_peers_are_the_nearest_few_when_too_few_are_near_and_everyone_when_shares_are_unknown() -> None:
    items = [_pending(f"a{i}", 1.0) for i in range(7)]
    for item, share in zip(items, (0.0, 0.05, 0.1, 0.5, 0.6, 0.95, 1.0)):
        item.model_share = share
    group, _ = peer_group(items[-1], items)  # within the window: only 0.95
    assert len(group) == MIN_PEERS and {q.model_share for q in group} == {0.95, 0.6, 0.5, 0.1}
    assert {q.model_share for q in peer_group(items[3], items)[0]} == {0.6, 0.1, 0.05, 0.95}
    assert SHARE_WINDOW < 0.35  # 0.5's nearest are found beyond the window
    # this machine's own baseline (decided within its run-to-run spread, not scaled): every other
    # test says how unevenly the machine moved since the recordings
    own = _pending("own", 1.0)
    own.check = not_judged("own", "cpu_ms_per_op", 1.0, SPREAD, "pending", 1.0)
    own.spread, own.model_share = RunSpread(0.05, 5), 1.0
    assert peer_group(own, items + [own]) == (items, "")
    items[-1].model_share = None
    assert peer_group(items[-1], items) == (items[:-1], "")
    for item in items[2:]:
        item.model_share = None  # too few of the others known to choose among
    assert peer_group(items[0], items)[0] == items[1:]


def test_resolve_with_too_few_peers_says_so() -> None:
    items = [_pending(f"a{i}", 0.5) for i in range(MIN_PEERS)]  # each has MIN_PEERS - 1 peers
    resolve(items)
    check = items[0].verdict.checks[0]
    assert check.verdict == "not-judged" and math.isclose(check.value, 0.5)
    assert f"only {MIN_PEERS - 1} other tests measured cpu_ms_per_op" in check.message


REAL = '''
import asyncio
import pytest

@pytest.mark.agentmem_perf
async def test_noop(perf):
    async def op(i):
        await asyncio.sleep(0)
    await perf.run(op, concurrency=2, total=40, name="noop")
'''


def test_a_run_against_another_machines_baseline_is_topped_up_to_enough_rounds(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_real=REAL)
    args = ("--agentmem-perf", "-p", "no:cacheprovider", "-p", "no:randomly")
    pytester.runpytest(*args, "--update-baselines").assert_outcomes(passed=1)
    path = baseline_path(pytester.path / "perf_baselines", "test_real.py::test_noop")
    data = json.loads(path.read_text())
    data["fingerprint"]["machine"].update(OTHER)
    path.write_text(json.dumps(data))
    result = pytester.runpytest(*args, "--agentmem-report", "r.json")
    result.assert_outcomes(passed=1)
    test = json.loads((pytester.path / "r.json").read_text())["tests"][0]
    [noop] = test["measurements"]
    assert len(noop["rounds"]) >= 5  # the significance test has rounds to work on
    assert test["speed"] == "not-judged"  # one test alone cannot tell the machine from the code
    assert {c["reason"] for c in test["checks"] if c["speed"]} == {"another machine's baseline"}


def test_widening_allows_the_same_ratio_for_a_throughput_as_for_a_latency() -> None:
    from pytest_agentmem.gate.across import as_ratio, widened

    assert math.isclose(widened(0.10, 0.2, higher=False), 0.32)
    qps = widened(0.10, 0.2, higher=True)  # fewer operations allowed: x1/0.9 x1.2 = x1.333
    assert math.isclose(1 / (1 - qps), (1 / 0.9) * 1.2)
    assert qps < 0.32  # the fraction widened as is (32 % fewer, x1.47) was more lenient for a throughput
    assert math.isclose(as_ratio(0.10, higher=True), 1 / 0.9 - 1) and as_ratio(0.1, higher=False) == 0.1
    assert widened(0.10, 0.0, higher=True) == pytest.approx(0.10)


def test_a_throughput_drop_beyond_the_widened_ratio_fails() -> None:
    """Peers moved x2 spreading 5 % (a widening of x1.11); 20.5 % fewer operations than that is
    x1.258, beyond x1/0.9 x1.11 = x1.233: it fails (widening the fraction, 22 %, passed it)."""
    def item(name: str, factor: float) -> Pending:
        verdict = TestVerdict(nodeid=f"t::{name}", outcome="not-judged")
        base = [1000.0, 1010.0, 990.0, 1000.0, 1020.0]
        check = not_judged(name, "qps", 1000 / factor, PENDING, "pending", 1000.0)
        verdict.checks.append(check)
        return Pending(verdict, check, [b / factor for b in base], base, 0.10)

    items = [item(f"a{i}", 2.0 * math.exp(x)) for i, x in enumerate((-0.07, -0.035, 0, 0, 0.035, 0.07))]
    items.append(item("slow", 2.0 / 0.795))
    resolve(items)
    check = items[-1].verdict.checks[0]
    assert check.verdict == "fail", check.message
    assert 1 / (1 - check.tolerance) == pytest.approx((1 / 0.9) * math.exp(2 * 1.4826 * 0.035), rel=1e-6)


def test_the_probes_have_no_say_on_a_figure_measured_against_the_model_in_its_own_rounds() -> None:
    # every test 1.6x its baseline, the probes 1.0x: for a CPU cost that is "the code or the
    # machine?" and no figure may pass; the model's yardstick was measured in the same rounds
    def items(metric: str) -> list[Pending]:
        out = []
        for i in range(6):
            p = _pending(f"m{i}", 1.6)
            p.check.metric, p.probe = metric, {"cpu": 1.0, "wall": 1.0}
            out.append(p)
        return out

    assert probe_disagreement("cpu_ms_per_op", items("cpu_ms_per_op"), 0.15) is not None
    assert probe_disagreement("cpu_model_ratio", items("cpu_model_ratio"), 0.15) is None
