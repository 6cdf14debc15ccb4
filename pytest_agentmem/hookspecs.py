"""Hooks pytest-agentmem offers to other plugins and conftest files."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .gate.checks import CheckFunction
    from .gate.verdict import TestVerdict
    from .load.pacing import RoundPacer
    from .measurement import Measurement


@pytest.hookspec(firstresult=True)
def pytest_agentmem_confirm_rounds(item: pytest.Item, measurement: Measurement) -> int | None:
    """Return how many extra rounds to measure before the gate decides.

    Called by the load runner at the end of each ``perf.run`` while the test's
    event loop still runs. The gate answers a positive number when the figures
    look like a regression, so that a suspected regression is re-measured
    before it fails the test. ``None`` or 0: no re-measurement.
    """


def pytest_agentmem_measurement(item: pytest.Item, measurement: Measurement) -> None:
    """A measurement was recorded for ``item`` (after any confirmation rounds)."""


@pytest.hookspec(firstresult=True)
def pytest_agentmem_round_pacer(item: pytest.Item) -> RoundPacer | None:
    """Return the :class:`~pytest_agentmem.load.pacing.RoundPacer` of ``item``'s ``perf.run`` calls.

    ``None`` (the default): rounds back to back, confirmation by
    ``pytest_agentmem_confirm_rounds``. The A/B mode returns a pacer that
    alternates the rounds of the base and the candidate.
    """


def pytest_agentmem_gate_checks(item: pytest.Item) -> list[CheckFunction]:
    """Return check functions the gate runs on ``item`` beside its own.

    Each takes the :class:`~pytest_agentmem.gate.checks.GateContext` and returns
    :class:`~pytest_agentmem.gate.verdict.CheckResult` values; their comparisons
    join the test's Holm-Bonferroni family. The A/B mode adds its paired checks.
    """


def pytest_agentmem_verdict_changed(config: pytest.Config, verdict: TestVerdict) -> None:
    """Called when the end of the run changed a test's verdict after its test ended.

    The speed figures measured against another machine's baselines are judged at the
    end of the run (:mod:`pytest_agentmem.gate.across`); the reports refresh the test's
    record from the new ``verdict``.
    """
