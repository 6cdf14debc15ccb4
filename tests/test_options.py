"""Command-line options, ini keys and environment variables (pytester)."""

from __future__ import annotations

import pytest


def test_help_lists_the_agentmem_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines([
        "agentmem: performance gating of agent-memory systems:",
        "*--agentmem-perf*run the performance tests marked agentmem_perf*",
        "*--update-baselines*",
        "*--agentmem-services=MODE*",
        "*--agentmem-postgres-url=URL*",
        "*--agentmem-redis-url=URL*",
        "*--agentmem-report=PATH*",
        "*--agentmem-html=PATH*",
    ])
    result.stdout.fnmatch_lines(["*agentmem_services (string):*"])


def test_markers_lists_agentmem_perf(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.agentmem_perf(min_qps=*"])


@pytest.mark.parametrize(("args", "message"), [
    (["--agentmem-services=kubernetes"], "*unknown mode 'kubernetes'; choose one of auto, docker, local, external*"),
    (["--agentmem-tolerance=lots"], "*expected a fraction like 0.15 or 15%, got 'lots'*"),
    (["--agentmem-service-timeout=0"], "*expected a positive whole number, got '0'*"),
    (["--agentmem-postgres-url=mysql://root:hunter2@db/x"], "*expected a URL starting with postgres:// or postgresql://*"),
])
def test_bad_values_are_usage_errors(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "hunter2" not in result.stderr.str()


def test_command_line_beats_ini_beats_environment(pytester: pytest.Pytester,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\nagentmem_tolerance = 20%\n")
    pytester.makeconftest("""
        from pytest_agentmem.session import get_session
        def pytest_report_header(config):
            s = get_session(config).settings
            return [f"SETTINGS tolerance={s.tolerance} services={s.services}"]
    """)
    monkeypatch.setenv("AGENTMEM_TOLERANCE", "0.5")
    monkeypatch.setenv("AGENTMEM_SERVICES", "local")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["SETTINGS tolerance=0.2 services=local"])
    result = pytester.runpytest("--agentmem-tolerance=0.05", "--agentmem-services=auto")
    result.stdout.fnmatch_lines(["SETTINGS tolerance=0.05 services=auto"])


def test_bad_ini_value_names_its_source(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nagentmem_services = cloud\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini agentmem_services: *unknown mode 'cloud'*"])


def test_baselines_dir_defaults_next_to_rootdir(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        from pytest_agentmem.session import get_session
        def pytest_report_header(config):
            return [f"BASELINES {get_session(config).settings.baselines_dir.relative_to(config.rootpath)}"]
    """)
    pytester.runpytest().stdout.fnmatch_lines(["BASELINES perf_baselines"])
    pytester.runpytest("--agentmem-baselines=elsewhere/b").stdout.fnmatch_lines(["BASELINES elsewhere/b"])
