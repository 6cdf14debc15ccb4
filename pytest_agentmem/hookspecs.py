"""Hooks pytest-agentmem offers to other plugins and conftest files."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
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
