"""Sizes of the catalogue's scenarios: ``$AGENTMEM_SCENARIO_SCALE`` times a default.

The defaults fit the whole catalogue (the README's main job) in about five
minutes of wall time on a 2-core machine, provisioning and data included;
``AGENTMEM_SCENARIO_SCALE=4`` makes every data set and measurement four times
larger (``0.5`` halves them).
"""

from __future__ import annotations

from ..config import env_value


def scale() -> float:
    """The size factor of this run (``$AGENTMEM_SCENARIO_SCALE``, default 1.0)."""
    return float(env_value("AGENTMEM_SCENARIO_SCALE"))


def scaled(n: int, minimum: int = 1) -> int:
    """``n`` items times the scale, at least ``minimum``."""
    return max(minimum, int(n * scale()))


def scaled_seconds(seconds: float, minimum: float = 0.5) -> float:
    """A measurement's duration times the scale, at least ``minimum`` seconds."""
    return max(minimum, seconds * scale())
