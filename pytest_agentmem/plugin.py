"""The pytest11 entry point: options, marker, run-wide hooks.

Thin on purpose: fixtures and area-specific hooks live in sub-plugins that this
module registers (services, load, memory, gate, report), each in its own package.
"""

from __future__ import annotations

import importlib
import inspect
import os
import signal
from collections.abc import Generator
from types import FrameType
from typing import Any

import pytest

from . import hookspecs
from .asyncio_config import quiet_unset_loop_scope_warning
from .config import add_options, load_settings
from .marker import MARKER, MARKER_HELP, PERF_MARKER_KEY, parse_marker
from .services.manager import ServiceManager
from .session import SESSION_KEY, AgentmemSession, get_session

SKIP_REASON = "run with --agentmem-perf"

#: Sub-plugins registered in pytest_configure; each owns its fixtures and hooks.
SUBPLUGINS = (
    "pytest_agentmem.services.fixtures",
    "pytest_agentmem.load.fixtures",
    "pytest_agentmem.memory.fixtures",
    "pytest_agentmem.memory.pg_fixtures",
    "pytest_agentmem.faults",
    "pytest_agentmem.gate.plugin",
    "pytest_agentmem.report.plugin",
)

#: Fixtures whose tests are run under pytest-asyncio without the user marking them.
ASYNC_FIXTURES = frozenset({
    "pg_pool", "redis_client", "perf", "memory_repo", "lancedb_store", "graph_store",
    "memory_service", "embedder",
})


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
    if settings.compare and settings.ab_role is None and not config.option.collectonly:
        from .compare.determinism import reexec_deterministic

        why = reexec_deterministic(tuple(config.invocation_params.args))
        if why:
            config.stash[_AB_NOTE] = why


_AB_NOTE = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    settings = load_settings(config)
    session = AgentmemSession(config=config, settings=settings,
                              services=ServiceManager(settings, worker_id=_worker_id(config)))
    config.stash[SESSION_KEY] = session
    for name in SUBPLUGINS:
        module = importlib.import_module(name)
        if not config.pluginmanager.is_registered(module):
            config.pluginmanager.register(module, name)
    _register_compare(config, settings)
    _install_sigterm_handler(session)


def _register_compare(config: pytest.Config, settings: Any) -> None:
    """The A/B mode's plugin object: the candidate's (--agentmem-compare) or the base's."""
    if settings.ab_role == "base":
        from .compare.plugin import CompareBase

        config.pluginmanager.register(CompareBase(config), "agentmem-compare-base")
    elif settings.compare:
        from .compare.plugin import CompareCandidate

        candidate = CompareCandidate(config, settings)
        why = config.stash.get(_AB_NOTE, None)
        if why:
            candidate.notes.append(f"process layout not fixed ({why}): the two sides' processes may "
                                   "differ by a few per cent for reasons of their own")
        config.pluginmanager.register(candidate, "agentmem-compare")


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is None:
        return
    session.services.stop_all()
    _restore_sigterm_handler(session)


# --------------------------------------------------------------------------- marker


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_perf = get_session(config).settings.perf
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        mark = item.get_closest_marker(MARKER)
        if mark is None:
            continue
        item.stash[PERF_MARKER_KEY] = parse_marker(mark, item.nodeid)
        if not run_perf:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> Generator[None, Any, None]:
    """Mark our async tests for pytest-asyncio, whatever its mode.

    Runs innermost among the wrappers, so pytest-asyncio's own wrapper (which turns
    marked coroutine functions into asyncio items) sees the marker we add.
    """
    outcome = yield
    if not inspect.iscoroutinefunction(obj):
        return
    result = outcome.get_result()
    nodes = result if isinstance(result, list) else [result] if result is not None else []
    for node in nodes:
        if not isinstance(node, pytest.Function) or node.get_closest_marker("asyncio"):
            continue
        if node.get_closest_marker(MARKER) or _uses_our_fixtures(node):
            node.add_marker(pytest.mark.asyncio)


def _uses_our_fixtures(node: pytest.Function) -> bool:
    """True if the test's fixture closure holds a fixture of ours, or one made by our factories."""
    if ASYNC_FIXTURES.intersection(node.fixturenames):
        return True
    info = getattr(node, "_fixtureinfo", None)
    for defs in getattr(info, "name2fixturedefs", {}).values():
        func = getattr(defs[-1], "func", None) if defs else None
        if str(getattr(func, "__module__", "")).startswith("pytest_agentmem."):
            return True
    return False


# --------------------------------------------------------------------------- services


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = get_session(config).settings
    perf = "on" if settings.perf else "off (perf tests skipped; run with --agentmem-perf)"
    return [f"agentmem: perf tests {perf}, services {settings.services}, "
            f"baselines {settings.baselines_dir}"]


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the services the selected tests need, and say what was started."""
    agentmem = get_session(session.config)
    needed: set[str] = set()
    for item in session.items:
        if item.get_closest_marker("skip"):
            continue
        needed |= agentmem.services.needs_of(getattr(item, "fixturenames", ()))
    if not needed or session.config.option.collectonly:
        return
    agentmem.services.prestart(needed)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and not _worker_id(session.config):
        reporter.write_line(agentmem.services.describe())
    fatal = agentmem.services.fatal_error()
    if fatal is not None and not _worker_id(session.config):  # one error for the run, not one per test
        from .services.fixtures import stop_run_message

        pytest.exit(stop_run_message(fatal), returncode=pytest.ExitCode.INTERRUPTED)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a pytest-xdist worker, hand the line about its services to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    agentmem = session.config.stash.get(SESSION_KEY, None)
    if workeroutput is not None and agentmem is not None and agentmem.services.running:
        workeroutput["agentmem_services"] = agentmem.services.describe()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """On the pytest-xdist controller, collect each worker's services line."""
    line = getattr(node, "workeroutput", {}).get("agentmem_services")
    if line:
        workerid = getattr(getattr(node, "gateway", None), "id", "?")
        get_session(node.config).extras.setdefault("worker_services", []).append(f"[{workerid}] {line}")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = get_session(config).extras.get("worker_services", [])
    for line in sorted(lines):
        terminalreporter.write_line(line)


# --------------------------------------------------------------------------- signals


def _worker_id(config: pytest.Config) -> str:
    """The pytest-xdist worker id (``gw0``...), or ``""`` in the main process."""
    workerinput = getattr(config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput else os.environ.get("PYTEST_XDIST_WORKER", "")


def _install_sigterm_handler(session: AgentmemSession) -> None:
    """Turn SIGTERM into KeyboardInterrupt so pytest unwinds and our servers stop."""
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except ValueError:
        return
    if previous not in (signal.SIG_DFL, None):
        return  # somebody else handles SIGTERM; leave it to them

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"received signal {signum}")

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread
        return
    session.extras["previous_sigterm"] = previous


def _restore_sigterm_handler(session: AgentmemSession) -> None:
    previous = session.extras.pop("previous_sigterm", None)
    if previous is not None:
        try:
            signal.signal(signal.SIGTERM, previous)
        except ValueError:
            pass
