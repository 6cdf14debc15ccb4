"""The ``perf`` fixture in generated test files run by pytester."""

from __future__ import annotations

import pytest

CONFTEST = """
import pytest
from pytest_agentmem.measurement import measurements_of

SEEN = []

@pytest.hookimpl(tryfirst=True)
def pytest_agentmem_confirm_rounds(item, measurement):
    SEEN.append(("confirm", item.name, measurement.name, len(measurement.rounds)))
    return 2 if measurement.name == "confirmed" else None

def pytest_agentmem_measurement(item, measurement):
    SEEN.append(("measurement", item.name, measurement.name, measurement.kind))

@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    found = measurements_of(item)
    SEEN.append(("stash", item.name, [(m.name, m.kind, len(m.rounds), m.confirmations)
                                      for m in found]))
    return result

def pytest_terminal_summary(terminalreporter):
    for entry in SEEN:
        terminalreporter.write_line("SEEN " + repr(entry))
"""


def _run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(source)
    return pytester.runpytest("--agentmem-perf", "-p", "no:cacheprovider", *args)


def test_perf_runs_in_a_marked_test_and_reaches_hooks_and_stash(pytester: pytest.Pytester) -> None:
    result = _run(pytester, """
        import asyncio
        import pytest

        async def op(index):
            await asyncio.sleep(0.005)

        @pytest.mark.agentmem_perf
        async def test_load(perf):
            result = await perf.run(op, concurrency=4, total=40)
            assert result.ops == 40 and result.errors == 0
            # a sleep is never shorter; the upper bound only tells ms from us (5000)
            assert 4.9 <= result.p50_ms < 1000
            again = await perf.run(op, total=5)          # default name made unique
            confirmed = await perf.run(op, total=10, name="confirmed", rounds=2)
            assert confirmed.ops == 40                    # 2 rounds + 2 confirmation rounds
            assert len(confirmed.rounds) == 4
            perf.record("recall", recall=0.9, items_per_s=12)
            perf.record("recall", recall=0.8, items_per_s=14)
    """)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "SEEN ('confirm', 'test_load', 'test_load', 1)",
        "SEEN ('measurement', 'test_load', 'test_load', 'load')",
        "SEEN ('confirm', 'test_load', 'test_load-2', 1)",
        "SEEN ('confirm', 'test_load', 'confirmed', 2)",
        "SEEN ('measurement', 'test_load', 'confirmed', 'load')",
        "SEEN ('measurement', 'test_load', 'recall', 'record')",
        "SEEN ('stash', 'test_load', [('test_load', 'load', 1, 0), ('test_load-2', 'load', 1, 0), "
        "('confirmed', 'load', 4, 1), ('recall', 'record', 2, 0)])",
    ])


def test_measurement_values(pytester: pytest.Pytester) -> None:
    result = _run(pytester, """
        import asyncio
        import pytest
        from pytest_agentmem.measurement import measurements_of

        async def op(index):
            await asyncio.sleep(0.002)

        @pytest.mark.agentmem_perf(rounds=3)
        async def test_rounds(perf, request):
            result = await perf.run(op, total=10)
            perf.record("r", recall=0.9)
            perf.record("r", recall=0.7)
            perf.record("r", recall=0.8)
            load, record = measurements_of(request.node)
            assert len(load.rounds) == 3 and load.load is result and load.kind == "load"
            assert load.metrics == result.metrics() and result.ops == 30
            assert record.metrics == {"recall": 0.8}       # median of the rounds
            assert [r["recall"] for r in record.rounds] == [0.9, 0.7, 0.8]
    """)
    result.assert_outcomes(passed=1)


def test_bad_arguments_fail_with_a_clear_message(pytester: pytest.Pytester) -> None:
    result = _run(pytester, """
        import math
        import pytest
        from pytest_agentmem.errors import ConfigurationError

        async def op(index):
            pass

        @pytest.mark.agentmem_perf
        async def test_bad(perf):
            with pytest.raises(ConfigurationError, match="concurrency must be an int >= 1"):
                await perf.run(op, concurrency=0, total=1)
            with pytest.raises(ConfigurationError, match="give duration"):
                await perf.run(op)
            with pytest.raises(ConfigurationError, match="rounds must be an int >= 1"):
                await perf.run(op, total=1, rounds=0)
            with pytest.raises(ConfigurationError, match="metrics must be numbers"):
                perf.record("x", recall=math.nan)
            with pytest.raises(ConfigurationError, match="metrics must be numbers"):
                perf.record("x", recall="0.9")
            await perf.run(op, total=1, name="a")
            with pytest.raises(ConfigurationError, match="already used"):
                await perf.run(op, total=1, name="a")
    """)
    result.assert_outcomes(passed=1)


def test_perf_tests_use_uvloop_and_other_async_tests_are_untouched(pytester: pytest.Pytester,
                                                                  pytestconfig: pytest.Config) -> None:
    pytest.importorskip("uvloop")
    if not hasattr(pytestconfig.hook, "pytest_asyncio_loop_factories"):
        pytest.skip("pytest-asyncio < 1.4 has no pytest_asyncio_loop_factories hook: "
                    "perf tests run on its default loop")
    result = _run(pytester, """
        import asyncio
        import pytest

        async def op(index):
            await asyncio.sleep(0)

        @pytest.mark.agentmem_perf
        async def test_ours(perf):
            result = await perf.run(op, total=10)
            assert result.loop == "uvloop.Loop"

        @pytest.mark.asyncio
        async def test_theirs():
            assert "uvloop" not in type(asyncio.get_running_loop()).__module__

        def test_plain():
            pass
    """, "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*::test_ours PASSED*", "*::test_theirs PASSED*",
                                 "*::test_plain PASSED*"])


def test_uvloop_can_be_switched_off(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTMEM_UVLOOP", "0")
    result = _run(pytester, """
        import asyncio
        import pytest

        async def op(index):
            pass

        @pytest.mark.agentmem_perf
        async def test_ours(perf):
            result = await perf.run(op, total=10)
            assert "uvloop" not in result.loop
    """)
    result.assert_outcomes(passed=1)


def test_perf_tests_are_skipped_without_the_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.agentmem_perf
        async def test_load(perf):
            raise AssertionError("must not run")
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)


def test_rounds_paired_with_another_side_run_no_calibration_probe(pytester: pytest.Pytester) -> None:
    """A pacer whose rounds are paired (the A/B mode) needs no probe: pairing cancels the machine."""
    pytester.makeconftest("""
        from pytest_agentmem.load.pacing import PlainPacer

        class Paired(PlainPacer):
            def paired(self, name):
                return name == "paired"

        def pytest_agentmem_round_pacer(item):
            return Paired(item)
    """)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.agentmem_perf(reference=False)
        async def test_probe(perf):
            async def noop(i):
                return None

            paired = await perf.run(noop, total=50, rounds=2, name="paired")
            plain = await perf.run(noop, total=50, rounds=2, name="plain")
            assert paired.calibration == []
            assert len(plain.calibration) == 2
    """)
    pytester.runpytest("--agentmem-perf", "-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_the_pacer_learns_how_long_a_run_is_and_what_it_offers(pytester: pytest.Pytester) -> None:
    """The A/B pacer sizes its paired rounds from what the run measures (its spec, warm-up done)."""
    pytester.makeconftest("""
        from pytest_agentmem.load.pacing import PlainPacer

        PLANS = []

        class Recording(PlainPacer):
            async def plan(self, name, rounds, spec=None):
                PLANS.append((name, rounds, spec.duration, spec.rate, spec.total, spec.warmup))
                return rounds

        def pytest_agentmem_round_pacer(item):
            return Recording(item)
    """)
    pytester.makepyfile("""
        import pytest
        from conftest import PLANS

        @pytest.mark.agentmem_perf(reference=False)
        async def test_plans(perf):
            async def noop(i):
                return None

            await perf.run(noop, duration=0.1, rounds=2, name="closed")
            await perf.run(noop, duration=0.1, rate=200, name="open")
            await perf.run(noop, total=30, warmup=5, name="count")
            assert PLANS == [("closed", 2, 0.1, None, None, 0), ("open", 1, 0.1, 200, None, 0),
                             ("count", 1, None, None, 30, 5)]
    """)
    pytester.runpytest("--agentmem-perf", "-p", "no:cacheprovider").assert_outcomes(passed=1)
