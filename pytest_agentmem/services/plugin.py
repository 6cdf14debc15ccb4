"""The services' plugin object: provisioning for the run, what ran, stopping, SIGTERM.

:class:`ServicesPlugin` owns the run's :class:`ServiceManager`: it starts the
servers the selected tests need after collection, says what it started (a
pytest-xdist worker sends its line to the controller, which prints every
worker's in the terminal summary), stops them at the end of the run, and turns
SIGTERM into KeyboardInterrupt meanwhile so that pytest unwinds and the
servers stop. Fixtures and other plugins reach the manager with
:func:`service_manager`.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

import pytest

from ..closure import fixture_closure
from ..config import Settings
from ..errors import ServiceStartError
from ..session import plugin_of
from ..xdist import WorkerChannel, worker_id
from .manager import ServiceManager

#: The worker channel's key of the services line.
CHANNEL_KEY = "services"


class ServicesPlugin:
    """Provisions Postgres and Redis for one pytest run (registered as ``agentmem-services``)."""

    NAME = "agentmem-services"

    def __init__(self, config: pytest.Config, settings: Settings, channel: WorkerChannel) -> None:
        self.config = config
        self.worker_id = worker_id(config)
        self.manager = ServiceManager(settings, worker_id=self.worker_id)
        #: On the xdist controller: "[gw0] <services line>" of each worker.
        self.worker_lines: list[str] = []
        self._previous_sigterm: Any = None
        channel.add(CHANNEL_KEY, self._send, self._receive)

    # ------------------------------------------------------------------ lifecycle

    def pytest_configure(self) -> None:
        self._install_sigterm_handler()

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Start the services the selected tests need, and say what was started."""
        needed: set[str] = set()
        for item in session.items:
            if item.get_closest_marker("skip"):
                continue
            needed |= self.manager.needs_of(fixture_closure(item))
        if not needed or self.config.option.collectonly:
            return
        self.manager.prestart(needed)
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and not self.worker_id:
            reporter.write_line(self.manager.describe())
        fatal = self.manager.fatal_error()
        if fatal is not None and not self.worker_id:  # one error for the run, not one per test
            pytest.exit(stop_run_message(fatal), returncode=pytest.ExitCode.INTERRUPTED)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for line in sorted(self.worker_lines):
            terminalreporter.write_line(line)

    def pytest_unconfigure(self) -> None:
        self.manager.stop_all()
        self._restore_sigterm_handler()

    # ------------------------------------------------------------------ xdist

    def _send(self) -> str | None:
        """On a worker: the line about its services (None: it started none)."""
        return self.manager.describe() if self.manager.running else None

    def _receive(self, workerid: str, line: Any) -> None:
        if line:
            self.worker_lines.append(f"[{workerid}] {line}")

    # ------------------------------------------------------------------ signals

    def _install_sigterm_handler(self) -> None:
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
        self._previous_sigterm = previous

    def _restore_sigterm_handler(self) -> None:
        previous, self._previous_sigterm = self._previous_sigterm, None
        if previous is not None:
            try:
                signal.signal(signal.SIGTERM, previous)
            except ValueError:
                pass


def stop_run_message(exc: ServiceStartError) -> str:
    """The one line that ends a run no test of which can measure anything."""
    return f"agentmem: {type(exc).__name__}: {exc}"


def service_manager(config: pytest.Config) -> ServiceManager:
    """The run's :class:`ServiceManager` (servers start on first use)."""
    return plugin_of(config, ServicesPlugin).manager
