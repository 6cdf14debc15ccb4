"""Run-wide state, one object per pytest run, reached through ``config.stash``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from .config import Settings
from .services.manager import ServiceManager


@dataclass
class AgentmemSession:
    """Everything pytest-agentmem keeps for the length of a run.

    ``services`` provisions Postgres and Redis on first use; ``results`` is where
    the gate files each test's verdicts for the reports; ``extras`` is free room
    for the sub-plugins (keyed by their module name).
    """

    config: pytest.Config
    settings: Settings
    services: ServiceManager
    results: list[Any] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)


SESSION_KEY = pytest.StashKey[AgentmemSession]()


def get_session(config: pytest.Config) -> AgentmemSession:
    """The run's :class:`AgentmemSession` (created in ``pytest_configure``)."""
    try:
        return config.stash[SESSION_KEY]
    except KeyError:
        raise RuntimeError("pytest-agentmem is not configured in this run "
                           "(was the plugin disabled with -p no:agentmem?)") from None
