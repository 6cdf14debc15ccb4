"""The pytest11 entry point: options, the plugin objects' registration, the default fixtures.

Thin on purpose. Each concern is a plugin object that owns its state, registered
in ``pytest_configure`` under its ``NAME`` (find one with
:func:`~pytest_agentmem.session.plugin_of`):

==========================  ===============================================================
``agentmem-collection``     :class:`~.collection.CollectionPlugin`: the marker, the skip,
                            pytest-asyncio marking, the header line
``agentmem-services``       :class:`~.services.plugin.ServicesPlugin`: provisioning,
                            stopping, SIGTERM
``agentmem-gate``           :class:`~.gate.plugin.GatePlugin`: confirmation rounds,
                            verdicts, the summary table
``agentmem-report``         :class:`~.report.plugin.ReportPlugin`: JUnit properties,
                            JSON / HTML / markdown reports
``agentmem-xdist``          :class:`~.xdist.WorkerChannel`: the one hand-over from
                            pytest-xdist workers to the controller
``agentmem-compare``        :class:`~.compare.plugin.CompareCandidate` (``--agentmem-compare``)
``agentmem-compare-base``   :class:`~.compare.plugin.CompareBase` (the A/B base side)
``agentmem-cluster``        :class:`~.cluster.plugin.ClusterPlugin` (``--agentmem-load-cluster``)
``agentmem-history``        :class:`~.history.plugin.HistoryPlugin` (``--agentmem-history``)
==========================  ===============================================================

The default fixtures live in the modules of :data:`FIXTURE_MODULES`, registered
as plugins too.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator

import pytest

from . import hookspecs
from .asyncio_config import quiet_unset_loop_scope_warning
from .collection import CollectionPlugin
from .config import PROFILE_ENV, Settings, add_options, load_settings
from .evidence.plugin import EvidencePlugin
from .gate.plugin import GatePlugin
from .load import loops
from .marker import MARKER_HELP
from .report.plugin import ReportPlugin
from .services.plugin import ServicesPlugin
from .session import SESSION_KEY, AgentmemSession
from .xdist import WorkerChannel

#: Modules of the default fixtures (each built by a factory of its module).
FIXTURE_MODULES = (
    "pytest_agentmem.services.fixtures",
    "pytest_agentmem.load.fixtures",
    "pytest_agentmem.memory.fixtures",
    "pytest_agentmem.memory.pg_fixtures",
    "pytest_agentmem.services.faults",
)

#: Name of the uvloop loop chooser's registration (see :mod:`.load.loops`).
LOOPS_PLUGIN = "pytest_agentmem.load.loops"


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True, specname="pytest_configure")
def pytest_configure_asyncio_warning(config: pytest.Config) -> None:
    """Before pytest-asyncio's ``pytest_configure``: keep its unset-ini warning from ending the run.

    See :mod:`pytest_agentmem.asyncio_config` for why a filter and not an ini default.
    """
    config.add_cleanup(quiet_unset_loop_scope_warning())


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """A/B mode: re-execute pytest with a fixed memory layout and hash seed (see compare.determinism)."""
    try:
        settings = load_settings(config)
    except pytest.UsageError:
        return  # reported by pytest_configure
    if settings.compare and settings.ab_role is None and settings.profile is True:
        os.environ[PROFILE_ENV] = "1"  # issue 23: the base side profiles its rounds too
    if settings.compare and settings.ab_role is None and not config.option.collectonly:
        from .compare.determinism import reexec_deterministic
        from .compare.early import starter

        why = reexec_deterministic(tuple(config.invocation_params.args), starter(config, settings))
        if why:
            config.stash[_AB_NOTE] = why


_AB_NOTE = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    settings = load_settings(config)
    config.stash[SESSION_KEY] = AgentmemSession(config=config, settings=settings)
    for name in FIXTURE_MODULES:
        module = importlib.import_module(name)
        if not config.pluginmanager.is_registered(module):
            config.pluginmanager.register(module, name)
    for name, plugin in plugin_objects(config, settings):
        config.pluginmanager.register(plugin, name)


def plugin_objects(config: pytest.Config, settings: Settings) -> Iterator[tuple[str, object]]:
    """The run's plugin objects with their names, in the order they are registered.

    Order matters where two implement the same hook: pluggy calls the later
    registered first (the report's makereport wrapper sees the gate's message).
    """
    channel = WorkerChannel()
    yield WorkerChannel.NAME, channel
    yield CollectionPlugin.NAME, CollectionPlugin(settings)
    yield ServicesPlugin.NAME, ServicesPlugin(config, settings, channel)
    yield GatePlugin.NAME, GatePlugin(config, channel)
    yield ReportPlugin.NAME, ReportPlugin(config, channel)
    yield EvidencePlugin.NAME, EvidencePlugin()  # issue 23: the baselines' statements and profiles
    if loops.wanted(config, settings.perf) and not config.pluginmanager.has_plugin(LOOPS_PLUGIN):
        yield LOOPS_PLUGIN, loops.UvloopLoops()
    yield from _compare_plugins(config, settings)
    if settings.history is not None:  # issue 20: --agentmem-history
        from .history.plugin import HistoryPlugin

        yield HistoryPlugin.NAME, HistoryPlugin(config, settings.history)
    yield from _cluster_plugins(settings)


def _cluster_plugins(settings: Settings) -> Iterator[tuple[str, object]]:
    """The load cluster's plugin object (issue 19), unless load workers stay on this machine."""
    if settings.load_cluster != "local":
        from .cluster.plugin import ClusterPlugin

        yield ClusterPlugin.NAME, ClusterPlugin(settings)


def _compare_plugins(config: pytest.Config, settings: Settings) -> Iterator[tuple[str, object]]:
    """The A/B mode's plugin object: the candidate's (--agentmem-compare) or the base's."""
    if settings.ab_role == "base":
        from .compare.plugin import CompareBase

        yield CompareBase.NAME, CompareBase(config)
    elif settings.compare:
        from .compare.plugin import CompareCandidate

        candidate = CompareCandidate(config, settings)
        why = config.stash.get(_AB_NOTE, None)
        if why:
            candidate.notes.append(f"process layout not fixed ({why}): the two sides' processes may "
                                   "differ by a few per cent for reasons of their own")
        yield CompareCandidate.NAME, candidate
