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
    (["--agentmem-tolerance=lots"], "*expected a fraction like 0.15 or a percentage like 15%, got 'lots'*"),
    (["--agentmem-tolerance=5"], "*'5' would mean 500%: write a fraction (e.g. 0.05) or a percentage with "
                                 "its sign (e.g. 5%)*"),
    (["--agentmem-compare-tolerance=3"], "*--agentmem-compare-tolerance*'3' would mean 300%*"),
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


# ----------------------------------------------------------------------- one configuration table


def test_update_baselines_has_an_agentmem_spelling(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        from pytest_agentmem.session import get_session
        def pytest_report_header(config):
            return [f"UPDATE {get_session(config).settings.update_baselines}"]
    """)
    pytester.runpytest("--agentmem-update-baselines").stdout.fnmatch_lines(["UPDATE True"])
    pytester.runpytest("--update-baselines").stdout.fnmatch_lines(["UPDATE True"])
    pytester.runpytest().stdout.fnmatch_lines(["UPDATE False"])
    pytester.runpytest("--help").stdout.fnmatch_lines(["*--update-baselines, --agentmem-update-baselines*"])


def test_service_mode_is_an_enum_that_reads_as_its_value() -> None:
    from pytest_agentmem.config import SERVICE_MODES, ServiceMode, Settings, parse_service_mode

    assert parse_service_mode(" Local ") is ServiceMode.LOCAL
    assert SERVICE_MODES == ("auto", "docker", "local", "external")
    assert Settings().services is ServiceMode.AUTO and f"{Settings().services}" == "auto"


def test_environment_knobs_have_one_declared_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    from pytest_agentmem.config import env_value
    from pytest_agentmem.memory.embed_model import default_cache_dir
    from pytest_agentmem.services.containers import postgres_image, redis_image

    for name in ("AGENTMEM_SCENARIO_SCALE", "AGENTMEM_LOCOMO_CONVERSATIONS", "AGENTMEM_UVLOOP",
                 "AGENTMEM_POSTGRES_IMAGE", "AGENTMEM_CACHE_DIR", "AGENTMEM_COMPARE_ARGS"):
        monkeypatch.delenv(name, raising=False)
    assert env_value("AGENTMEM_SCENARIO_SCALE") == 1.0
    assert env_value("AGENTMEM_LOCOMO_CONVERSATIONS") == 0
    assert env_value("AGENTMEM_UVLOOP") is None
    assert env_value("AGENTMEM_COMPARE_ARGS") == []
    assert postgres_image() == "pgvector/pgvector:pg17" and redis_image() == "redis:7-alpine"
    monkeypatch.setenv("HOME", "/nowhere")
    assert default_cache_dir() == Path("/nowhere/.cache/pytest-agentmem")
    monkeypatch.setenv("AGENTMEM_SCENARIO_SCALE", "0.5")
    monkeypatch.setenv("AGENTMEM_UVLOOP", "off")
    monkeypatch.setenv("AGENTMEM_POSTGRES_IMAGE", "agentmem/postgres-pgvector:18")
    monkeypatch.setenv("AGENTMEM_COMPARE_ARGS", "-k 'not slow'")
    assert env_value("AGENTMEM_SCENARIO_SCALE") == 0.5 and env_value("AGENTMEM_UVLOOP") is False
    assert postgres_image() == "agentmem/postgres-pgvector:18"
    assert env_value("AGENTMEM_COMPARE_ARGS") == ["-k", "not slow"]


@pytest.mark.parametrize(("name", "value", "message"), [
    ("AGENTMEM_SCENARIO_SCALE", "big", "environment variable AGENTMEM_SCENARIO_SCALE: expected a number*"),
    ("AGENTMEM_SCENARIO_SCALE", "-1", "*expected a positive number*"),
    ("AGENTMEM_LOCOMO_CONVERSATIONS", "all", "environment variable AGENTMEM_LOCOMO_CONVERSATIONS: *"),
    ("AGENTMEM_UVLOOP", "maybe", "environment variable AGENTMEM_UVLOOP: expected true or false*"),
])
def test_bad_environment_knob_is_a_usage_error_naming_it(monkeypatch: pytest.MonkeyPatch, name: str,
                                                         value: str, message: str) -> None:
    import fnmatch

    from pytest_agentmem.config import env_value

    monkeypatch.setenv(name, value)
    with pytest.raises(pytest.UsageError) as info:
        env_value(name)
    assert fnmatch.fnmatch(str(info.value), message), str(info.value)


def test_an_undeclared_variable_cannot_be_read() -> None:
    from pytest_agentmem.config import env_value

    with pytest.raises(KeyError, match="AGENTMEM_NOPE is not declared"):
        env_value("AGENTMEM_NOPE")


# Every option and variable is listed in docs/reference.md, generated from OPTIONS and
# ENVIRONMENT: tests/test_docs.py checks the page is current and complete.


def test_no_module_reads_an_agentmem_variable_itself() -> None:
    import re
    from pathlib import Path

    package = Path(__file__).parent.parent / "pytest_agentmem"
    direct = re.compile(r"environ(?:\.get\(|\[)\s*[\"']AGENTMEM_")
    offenders = [str(p.relative_to(package)) for p in package.rglob("*.py")
                 if p.name != "config.py" and direct.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


@pytest.mark.parametrize("keywords, compare, expected", [
    ({}, None, 0.15), ({}, "HEAD", 0.03),
    ({"tolerance": 0.2}, None, 0.2), ({"tolerance": 0.2}, "HEAD", 0.2),
    ({"tolerance": 0.2, "compare_tolerance": 0.05}, None, 0.2),
    ({"tolerance": 0.2, "compare_tolerance": 0.05}, "HEAD", 0.05),
    ({"compare_tolerance": 0.05}, None, 0.15),
])
def test_one_owner_resolves_a_tests_tolerance(keywords: dict[str, float], compare: str | None,
                                              expected: float) -> None:
    from pytest_agentmem.config import Settings
    from pytest_agentmem.marker import parse_marker

    marker = parse_marker(pytest.mark.agentmem_perf(**keywords).mark, "t.py::t")
    assert Settings(compare=compare).tolerance_of(marker) == expected
    assert Settings(compare=compare).tolerance_of(None) == (0.03 if compare else 0.15)
