"""The agentmem_perf marker: skipping, validation, async tests (pytester)."""

from __future__ import annotations

from pathlib import Path

import pytest

import pytest_agentmem

PERF_TESTS = """
    import asyncio
    import pytest

    @pytest.mark.agentmem_perf
    def test_sync():
        pass

    @pytest.mark.agentmem_perf(tolerance=0.2, reference=False)
    async def test_async():
        await asyncio.sleep(0)

    def test_plain():
        pass
"""


def test_perf_tests_are_skipped_without_the_flag(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PERF_TESTS)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] *:4: run with --agentmem-perf",
                                "SKIPPED [[]1[]] *:8: run with --agentmem-perf"])


USER_SESSION_FIXTURE = """
    import asyncio
    import pytest
    import pytest_asyncio

    @pytest_asyncio.fixture(scope="session")
    async def session_loop():
        # No loop_scope: with the option unset, pytest-asyncio gives it a session loop.
        yield asyncio.get_running_loop()

    @pytest.mark.asyncio(loop_scope="session")
    async def test_users_own_session_fixture(session_loop):
        assert session_loop is asyncio.get_running_loop()

    async def test_uses_our_fixture(perf):
        result = await perf.run(lambda i: asyncio.sleep(0), concurrency=1, total=3, warmup=0)
        assert result.ops == 3
"""


# Warnings are errors here whatever the project's ini says: the inner run sees what a
# user's run under `python -W error` sees (pytest-asyncio warns in its pytest_configure,
# before pytest's own -W filters apply).
@pytest.mark.filterwarnings("error")
def test_perf_tests_run_with_the_flag_without_asyncio_configuration(pytester: pytest.Pytester) -> None:
    # No asyncio ini anywhere: the plugin marks its async tests for pytest-asyncio, and
    # pytest-asyncio's "asyncio_default_fixture_loop_scope is unset" warning does not end the run.
    pytester.makepyfile(PERF_TESTS)
    result = pytester.runpytest("--agentmem-perf", "-W", "error")
    result.assert_outcomes(passed=3)
    # The option stays the user's: still unset.
    result.stdout.fnmatch_lines(["asyncio: *asyncio_default_fixture_loop_scope=None*"])


def test_a_users_run_with_python_warnings_as_errors_and_no_asyncio_ini(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # A separate process, as a user runs it: PYTHONWARNINGS=error covers pytest_configure too.
    monkeypatch.setenv("PYTHONWARNINGS", "error")
    pytester.makepyfile(test_perf=PERF_TESTS, test_users=USER_SESSION_FIXTURE)
    result = pytester.runpytest_subprocess("--agentmem-perf", "-W", "error", "-p", "no:cacheprovider")
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    # The user's session-scoped async fixture keeps its session loop: we set no loop scope.
    result.assert_outcomes(passed=5)


def test_an_in_process_inner_run_under_warnings_as_errors_does_not_warn_of_our_rewriting(
        pytester: pytest.Pytester) -> None:
    # Our suite as a new machine runs it: `pytest` (the console script) with the project
    # installed editable. At start the source tree is not on sys.path, so the plugin is
    # imported through the install's finder, unrewritten; then the rootdir conftest puts
    # the tree on sys.path. pytest >= 9.2 marks an editable plugin's package for
    # rewriting when sys.path shows it, so an in-process run found it "already imported
    # so cannot be rewritten", an error under -W error.
    tree = Path(pytest_agentmem.__file__).parent.parent
    pytester.makepyfile(test_outer=f"""
        pytest_plugins = "pytester"

        def test_inner(pytester, monkeypatch):
            monkeypatch.syspath_prepend({str(tree)!r})  # as the rootdir conftest does
            pytester.makepyfile(test_plain="def test_ok(): pass")
            result = pytester.runpytest("-W", "error", "-p", "no:cacheprovider")
            assert "AssertRewriteWarning" not in result.stdout.str() + result.stderr.str()
            result.assert_outcomes(passed=1)
    """)
    result = pytester.runpytest_subprocess("-W", "error", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_users_own_loop_scope_setting_is_kept(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(PERF_TESTS)
    result = pytester.runpytest("--agentmem-perf", "-W", "error")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["asyncio: *asyncio_default_fixture_loop_scope=function*"])


def test_unknown_marker_keyword_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        @pytest.mark.agentmem_perf(max_p95=5, toleranse=0.1)
        def test_typo():
            pass
    """)
    result = pytester.runpytest("--agentmem-perf")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_typo: @pytest.mark.agentmem_perf: unknown keyword 'toleranse'*"])


@pytest.mark.parametrize("marker", ["agentmem_perf(10)", "agentmem_perf(max_p95_ms='fast')",
                                    "agentmem_perf(tolerance=-1)", "agentmem_perf(baseline='yes')",
                                    "agentmem_perf(reference=1)", "agentmem_perf(reference=False, baseline=True)",
                                    "agentmem_perf(rounds=0)", "agentmem_perf(compare_tolerance=-0.1)",
                                    "agentmem_perf(tolerance=5)", "agentmem_perf(tolerance='lots%')",
                                    # a bound of infinity checks nothing; 10**400 is no float
                                    "agentmem_perf(max_p95_ms=float('inf'))",
                                    "agentmem_perf(min_qps=float('-inf'))",
                                    "agentmem_perf(tolerance=float('inf'))",
                                    "agentmem_perf(max_p99_ms=float('nan'))",
                                    "agentmem_perf(max_p50_ms=10**400)"])
def test_bad_marker_values_are_usage_errors(pytester: pytest.Pytester, marker: str) -> None:
    pytester.makepyfile(f"""
        import pytest
        @pytest.mark.{marker}
        def test_bad():
            pass
    """)
    result = pytester.runpytest("--agentmem-perf")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "test_bad: @pytest.mark.agentmem_perf" in result.stderr.str()


def test_header_says_perf_is_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    pytester.runpytest().stdout.fnmatch_lines(["agentmem: perf tests off (perf tests skipped; run with --agentmem-perf)*"])
    pytester.runpytest("--agentmem-perf").stdout.fnmatch_lines(["agentmem: perf tests on, services auto*"])


def test_async_tests_using_factory_made_fixtures_run_without_asyncio_marks(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        from pytest_agentmem.services.fixtures import redis_client_fixture
        text_redis = redis_client_fixture(decode_responses=True)
    """)
    pytester.makepyfile("""
        async def test_uses_a_factory_made_fixture(text_redis):
            await text_redis.set("k", "v")
            assert await text_redis.get("k") == "v"
    """)
    pytester.runpytest("--agentmem-services=local").assert_outcomes(passed=1)


def test_a_compare_tolerance_applies_in_a_b_mode_only() -> None:
    from pytest_agentmem.marker import parse_marker

    both = parse_marker(pytest.mark.agentmem_perf(tolerance=0.2, compare_tolerance=0.08).mark, "t")
    assert both.tolerance_for(compare=True) == 0.08 and both.tolerance_for(compare=False) == 0.2
    stored_only = parse_marker(pytest.mark.agentmem_perf(tolerance=0.2).mark, "t")
    assert stored_only.tolerance_for(compare=True) == 0.2  # a test's own tolerance holds in both modes
    assert parse_marker(pytest.mark.agentmem_perf(compare_tolerance=0.08).mark, "t").tolerance_for(False) is None


@pytest.mark.parametrize("keywords, reference", [({}, True), ({"reference": False}, False),
                                                 ({"baseline": False}, False),
                                                 ({"reference": False, "baseline": False}, False)])
def test_reference_and_its_former_spelling_baseline(keywords: dict[str, bool], reference: bool) -> None:
    from pytest_agentmem.marker import parse_marker

    assert parse_marker(pytest.mark.agentmem_perf(**keywords).mark, "t.py::t").reference is reference
