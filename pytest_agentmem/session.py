"""Run-wide facts, one object per pytest run, reached through ``config.stash``.

What the plugins share: the settings (the A/B base side switches their server
URLs to the candidate's) and the facts of the software stack that the fixtures
learn during the run (the embedding model) for the baselines' fingerprint.
Each plugin object keeps its own state (:mod:`.plugin` registers them);
:func:`plugin_of` finds one by its class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from .config import Settings


@dataclass(frozen=True)
class SpeedProbe:
    """A probe of a component a fixture loaded (see :mod:`pytest_agentmem.gate.calibration`).

    ``run`` does a fixed piece of the component's work once and returns operations per
    second; ``fixture`` names the fixture that loaded it: only tests that use that
    fixture are normalised by it.
    """

    fixture: str
    run: Callable[[], float]


@dataclass
class AgentmemSession:
    """The settings of the run and what the fixtures learned about its stack."""

    config: pytest.Config
    settings: Settings
    #: The id of the embedding model the ``embedder`` fixture loaded (None: none loaded).
    embedding_model: str | None = None
    #: Probes of the components the fixtures loaded, which the gate's calibration measures
    #: beside its own; see :class:`SpeedProbe`.
    speed_probes: dict[str, SpeedProbe] = field(default_factory=dict)


SESSION_KEY = pytest.StashKey[AgentmemSession]()

_NOT_CONFIGURED = ("pytest-agentmem is not configured in this run "
                   "(was the plugin disabled with -p no:agentmem?)")


def get_session(config: pytest.Config) -> AgentmemSession:
    """The run's :class:`AgentmemSession` (created in ``pytest_configure``)."""
    try:
        return config.stash[SESSION_KEY]
    except KeyError:
        raise RuntimeError(_NOT_CONFIGURED) from None


P = TypeVar("P")


def plugin_of(config: pytest.Config, cls: type[P]) -> P:
    """The plugin object of class ``cls`` registered for this run (under ``cls.NAME``)."""
    name: str = cls.NAME  # type: ignore[attr-defined]
    plugin: Any = config.pluginmanager.get_plugin(name)
    if not isinstance(plugin, cls):
        raise RuntimeError(_NOT_CONFIGURED)
    return plugin
