"""The gate end to end, the decision against a stored baseline: a confirmed regression fails
with its reason, noise and changes within the tolerance pass, a malformed or newer file is
an error, a baseline from another machine is normalised. Figures come from ``gate_project``.
"""

from __future__ import annotations

import json

import pytest
from gate_project import HEALTHY, TESTS, bdir, figures, make_project, rounds, run, with_search

from pytest_agentmem.gate.baseline import SCHEMA, VERSION, baseline_path
from pytest_agentmem.gate.calibration import PROBE_NAME


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    return make_project(pytester)


def test_regression_fails_with_exact_reason(project: pytest.Pytester) -> None:
    run(project, "--update-baselines").assert_outcomes(passed=2)
    slow = rounds(qps=1000, p95_ms=18.0, error_rate=0.0, recall=0.95)
    figures(project, with_search(rounds=slow, confirm=slow))
    result = run(project)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*PerformanceRegression: search.p95_ms 18 > baseline 12 (+50%, tolerance 15%, p=0.0*, confirmed on re-run)",
        "*search.p95_ms*18*12*+50%*FAIL (re-run)*",
    ])
    # the higher-is-better direction, and a per-test tolerance
    low = rounds(qps=800, p95_ms=12.0, error_rate=0.0, recall=0.95)
    figures(project, with_search(rounds=low, confirm=low))
    result = run(project)
    result.stdout.fnmatch_lines(["*search.qps 800 < baseline 1000 (-20%, tolerance 15%, p=0.0*"])
    project.makepyfile(test_perf=TESTS.replace("min_qps=100)", "min_qps=100, tolerance=0.25)"))
    run(project).assert_outcomes(passed=2)


def test_noise_burst_not_confirmed_on_rerun_passes_with_warning(project: pytest.Pytester) -> None:
    run(project, "--update-baselines").assert_outcomes(passed=2)
    figures(project, with_search(rounds=rounds(qps=1000, p95_ms=30.0, error_rate=0.0, recall=0.95),
                                 confirm=HEALTHY["search"]["rounds"]))
    result = run(project)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*search.p95_ms*12*12*warn*"])


def test_regression_within_tolerance_passes(project: pytest.Pytester) -> None:
    run(project, "--update-baselines").assert_outcomes(passed=2)
    figures(project, with_search(rounds=rounds(qps=920, p95_ms=13.2, error_rate=0.0, recall=0.95)))
    result = run(project)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*search.p95_ms*13.2*12*+10%*pass*"])


@pytest.mark.parametrize("content, why", [
    ("{not json", "is not valid JSON"),
    (json.dumps({"schema": SCHEMA, "version": 1, "measurements": {"search": {"metrics": {"qps": "fast"}}}}),
     "metric 'qps' must be a number"),
    (json.dumps({"schema": SCHEMA, "version": VERSION + 1, "measurements": {}}),
     f"has schema version {VERSION + 1}, newer than this pytest-agentmem reads"),
])
@pytest.mark.parametrize("update", [False, True])
def test_malformed_or_future_baseline_is_a_clear_error_and_untouched(
        project: pytest.Pytester, content: str, why: str, update: bool) -> None:
    path = baseline_path(bdir(project), "test_perf.py::test_search")
    path.parent.mkdir()
    path.write_text(content)
    before = path.stat().st_mtime_ns
    result = run(project, *(["--update-baselines"] if update else []))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"BaselineError: baseline file {path}*{why}*fix: *"
                                 + ("(--update-baselines does not overwrite it)" if update else "")])
    assert path.read_text() == content and path.stat().st_mtime_ns == before
    assert "Traceback" not in result.stdout.str()


def _foreign_baseline(pytester: pytest.Pytester, qps: float, p95: float, ops_per_s: float,
                      here_ops_per_s: float | None = None, components: dict | None = None,
                      here_components: dict | None = None, components_fixture: str = "record") -> None:
    """A baseline of test_search recorded on another machine, twice as fast by default (by its probe)."""
    path = baseline_path(bdir(pytester), "test_perf.py::test_search")
    path.parent.mkdir(exist_ok=True)
    data = {
        "schema": SCHEMA, "version": VERSION, "nodeid": "test_perf.py::test_search",
        "created": "2025-01-01T00:00:00+00:00",
        "fingerprint": {"machine": {"cpu_model": "Fast CPU 9000", "cpu_count": 64, "memory_gb": 512,
                                    "os": "Linux", "arch": "x86_64"}, "stack": {"python": "3.11.7"}},
        "calibration": {"probe": PROBE_NAME, "ops_per_s": ops_per_s, "spread": 0.02,
                        "components": components or {}},
        "measurements": {"search": {"kind": "record", "metrics": {"qps": qps, "p95_ms": p95},
                                    "rounds": rounds(qps=qps, p95_ms=p95)}},
    }
    path.write_text(json.dumps(data))
    here = ops_per_s / 2 if here_ops_per_s is None else here_ops_per_s
    (pytester.path / "calibration.json").write_text(json.dumps(
        {"probe": PROBE_NAME, "ops_per_s": here, "spread": 0.03, "samples": [],
         "components": here_components or {}, "components_fixture": components_fixture}))


@pytest.mark.parametrize("loaded_by", ["nothing", "a fixture the test does not use"])
def test_without_the_component_probe_the_python_probe_alone_decides(project: pytest.Pytester,
                                                                    loaded_by: str) -> None:
    model = "embedding model m@1"
    here = {} if loaded_by == "nothing" else {model: 50.0}
    _foreign_baseline(project, qps=2000, p95=6.0, ops_per_s=40000, here_ops_per_s=40000,
                      components={model: 100.0}, here_components=here, components_fixture="embedder")
    result = run(project)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*search.p95_ms 12 > baseline 6*(+100%*"])


@pytest.mark.parametrize("slower", ["python", "embedding model"])
def test_baseline_from_another_machine_is_normalised_and_warned(project: pytest.Pytester, slower: str) -> None:
    # recorded where a probe ran twice as fast: 2000 qps / 6 ms there is 1000 qps / 12 ms here;
    # "embedding model": Python runs as fast here, the model at half the speed (another CPU's vector units)
    if slower == "python":
        _foreign_baseline(project, qps=2000, p95=6.0, ops_per_s=80000)
        said = "this machine runs it at 0.50x*tolerance widened by 5%*"
    else:
        model = "embedding model m@1"
        _foreign_baseline(project, qps=2000, p95=6.0, ops_per_s=40000, here_ops_per_s=40000,
                          components={model: 100.0}, here_components={model: 50.0})
        said = ("this machine runs it at 1.00x the baseline machine's speed, embedding model m@1 at 0.50x), "
                "each figure normalised by the probe that favours it; tolerance widened by 5%*")
    result = run(project)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*search.p95_ms*12*12[*]*pass*",
        "*baseline recorded on another machine (cpu_model: 'Fast CPU 9000' -> *normalised by the "
        "calibration probe (" + said,
    ])
    # the gate is still on: 50% slower than the normalised baseline fails
    slow = rounds(qps=1000, p95_ms=18.0, error_rate=0.0, recall=0.95)
    figures(project, with_search(rounds=slow, confirm=slow))
    result = run(project)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*search.p95_ms 18 > baseline 12 (normalised to this machine) "
                                 "(+50%, tolerance 20%*confirmed on re-run)"])
