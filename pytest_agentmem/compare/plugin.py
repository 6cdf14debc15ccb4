"""The pytest side of the A/B mode: ``--agentmem-compare REF``.

:class:`CompareCandidate` runs in the user's pytest process (this checkout). It
makes a worktree of ``REF`` and starts the base side's pytest there
(:mod:`.launch`; before its own re-exec, :mod:`.early`), shares its servers with it after
collection, and serves it the turns (:mod:`.coordinator`);
the ``perf`` fixture's rounds alternate with the base's (:mod:`.pacer`) and the
gate judges the paired change (:mod:`.decision`). :class:`CompareBase` is the
other end, in the base process. Both are plugin objects registered by ``plugin.py``
under their ``NAME``; other code finds the candidate with
``config.pluginmanager.get_plugin(CompareCandidate.NAME)`` (see :func:`compare_info`).
"""

from __future__ import annotations

import functools
from collections.abc import Generator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from ..config import Settings
from ..gate.checks import CheckFunction, GateContext
from ..load.pacing import PlainPacer
from ..marker import MARKER, perf_marker_of
from ..redact import redact_text
from ..services.plugin import service_manager
from ..session import get_session
from .channel import Endpoint, PeerClient, PeerError, PeerServer
from .coordinator import Coordinator, participants
from .decision import check_paired, extra_pairs
from .determinism import pad_like_this_process
from .early import take_over
from .git import BaseRef, Worktree
from .launch import BaseSide, check_usage, start_base, start_more
from .pacer import PairedPacer, pairs_text
from .peer import BaseProcess


def is_perf_item(item: pytest.Item) -> bool:
    """Tests that measure: marked agentmem_perf, or using the perf fixture."""
    return item.get_closest_marker(MARKER) is not None or "perf" in getattr(item, "fixturenames", ())


def _compared(item: pytest.Item) -> bool:
    """False for a test marked ``agentmem_perf(reference=False)``: it has no reference to compare with."""
    marker = perf_marker_of(item)
    return marker is None or marker.reference


def _gate_metrics(item: pytest.Item) -> tuple[str, ...]:
    marker = perf_marker_of(item)
    return marker.gate if marker is not None else ()


def _next_db(url: str, offset: int = 1) -> str:
    """``url`` with the Redis database number ``offset`` further (a peer process's own database)."""
    parts = urlsplit(url)
    try:
        db = int(parts.path.strip("/") or 0)
    except ValueError:
        db = 0
    return urlunsplit(parts._replace(path=f"/{(db + offset) % 16}"))


class CompareCandidate:
    """The candidate's side: worktree, base process, coordinator, paired gate."""

    NAME = "agentmem-compare"

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.worktree: Worktree | None = None
        self.process: BaseProcess | None = None
        #: the processes beyond the first of each side (--agentmem-compare-processes)
        self.more: dict[str, BaseProcess] = {}
        self.members = participants(settings.compare_processes)
        self.server: PeerServer | None = None
        self.coordinator: Coordinator | None = None
        self.tests: list[str] = []
        self.not_compared: list[str] = []
        self.notes: list[str] = []
        self._interrupted = False
        handed_over = take_over()  # first: a base started before the re-exec is ours to stop
        try:
            self.base: BaseRef = check_usage(config, settings)
        except BaseException:
            if handed_over is not None:
                handed_over.abandon()
            raise
        if handed_over is not None:
            if handed_over.worktree.base.commit == self.base.commit:
                self._take(handed_over)
            else:  # cannot happen unless REF moved during the exec: start afresh
                handed_over.abandon()

    @property
    def where(self) -> str:
        return f"{self.base.ref} ({self.base.short})"

    # ------------------------------------------------------------------ start

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Start the base's pytest now (unless it started before the re-exec): it starts up while we collect."""
        if self.config.option.collectonly or self.coordinator is not None:
            return
        self._take(start_base(self.config, self.base, Endpoint.new(), pad_like_this_process))

    def _take(self, side: BaseSide) -> None:
        self.worktree, self.process = side.worktree, side.process
        self.coordinator = Coordinator(peer_alive=self._base_status, members=self.members)
        self.server = PeerServer(self.coordinator, side.endpoint)
        if len(self.members) > 2:
            try:
                self.more = start_more(self.config, side, self.members, pad_like_this_process)
            except BaseException:
                self.stop()  # nothing is left: not the base, not the worktree
                raise

    # ------------------------------------------------------------------ collection

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        perf = [i for i in items if is_perf_item(i) and not i.get_closest_marker("skip")]
        # agentmem_perf(reference=False): compared with nothing in either mode, only its thresholds gate
        self.not_compared = [i.nodeid for i in perf if not _compared(i)]
        self.tests = [i.nodeid for i in perf if _compared(i)]

    @pytest.hookimpl(wrapper=True)
    def pytest_collection_finish(self, session: pytest.Session) -> Generator[None, None, None]:
        result = yield  # the main plugin has started the services the tests need
        if self.coordinator is not None:
            running = service_manager(self.config).running.items()
            peers = [p for p in self.members if p != "candidate"]
            services = {p: {name: _next_db(service.url, k) if name == "redis" else service.url
                            for name, service in running} for k, p in enumerate(peers, start=1)}
            self.coordinator.collected(self.tests, services, self.not_compared)
            reporter = self.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None and self.tests:
                skipped = (f" ({len(self.not_compared)} more not compared: reference=False)"
                           if self.not_compared else "")
                processes = (f", {self.settings.compare_processes} processes a side"
                             if self.settings.compare_processes > 1 else "")
                reporter.write_line(
                    f"agentmem A/B: base {self.where} in a worktree, {len(self.tests)} perf test(s)"
                    f"{skipped}, {pairs_text(self.settings.compare_pairs)} a run{processes}, tolerance "
                    f"{self.settings.compare_tolerance:.0%}")
        return result

    def _base_status(self) -> str | None:
        """None while every peer process runs; else why one stopped, with its log's tail."""
        for name, process in (("base", self.process), *self.more.items()):
            if process is None or process.alive():
                continue
            tail = redact_text(process.log_tail(15))
            side = "base side" if name == "base" else f"process {name}"
            return f"{side} exited with code {process.returncode}:\n{tail}"
        return None

    # ------------------------------------------------------------------ runs

    def pytest_agentmem_round_pacer(self, item: pytest.Item) -> PairedPacer | None:
        if self.coordinator is None or item.nodeid not in self.tests:
            return None
        tolerance = self.settings.tolerance_of(perf_marker_of(item))
        gate = _gate_metrics(item)
        # with several processes a side the processes' spread decides: more blocks do not narrow it
        screen = None if len(self.members) > 2 else (
            lambda name, base, cand: extra_pairs(base, cand, tolerance, gate))
        return PairedPacer("candidate", item.nodeid, self.coordinator, PlainPacer(item),
                           pairs=self.settings.compare_pairs, decide_extra=screen)

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        if self.coordinator is not None:
            self.coordinator.test_finished("candidate", nodeid)

    def pytest_agentmem_gate_checks(self, item: pytest.Item) -> list[CheckFunction]:
        if self.coordinator is None or item.nodeid in self.not_compared:
            return []

        def paired(ctx: GateContext) -> list[Any]:
            results = check_paired(ctx, self.where)
            outcome = self.coordinator.base_outcomes.get(item.nodeid) if self.coordinator else None
            if outcome and outcome[0] == "failed":
                for check in results:
                    if check.verdict == "not-judged" and check.reason == "new":
                        check.message += f"; the base side failed: {outcome[1]}"
            return results

        return [functools.partial(paired)]

    # ------------------------------------------------------------------ end

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.coordinator is None:
            return
        c = self.coordinator
        lines = [f"base {self.where} vs this checkout"]
        if c.new_tests:
            lines.append(f"new (not in {self.base.ref}): " + ", ".join(c.new_tests))
        if c.removed_tests:
            lines.append(f"removed (only in {self.base.ref}): " + ", ".join(c.removed_tests))
        for nodeid, (outcome, message) in sorted(c.base_outcomes.items()):
            if outcome == "failed":
                lines.append(f"base side failed {nodeid}: {message}")
        for nodeid, (who, message) in sorted(c.peer_failures.items()):
            if who != "base":
                lines.append(f"process {who} failed {nodeid}: {message}")
        if c.peer_gone and c.peer_gone != "run ended":
            lines.append(f"base side: {c.peer_gone}")
        terminalreporter.write_sep("-", "agentmem A/B")
        for line in lines + self.notes:
            terminalreporter.write_line(line)

    def stop(self, grace: float = 0.0) -> None:
        """End the base process and remove the worktree (idempotent; Ctrl-C included).

        The base is told the run ended (its waits fail and it exits), given
        ``grace`` seconds, then SIGTERM, then SIGKILL.
        """
        try:
            if self.coordinator is not None:
                self.coordinator.end("the candidate side's run ended")
            for process in [self.process, *self.more.values()]:
                if process is not None:
                    process.stop(grace=grace)
        finally:
            if self.server is not None:
                self.server.close()
            if self.worktree is not None:
                self.worktree.remove()

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, exitstatus: int) -> None:
        self._interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
        if self.coordinator is not None:
            self.coordinator.end("the candidate side's run ended")  # the base winds down meanwhile

    def pytest_keyboard_interrupt(self) -> None:
        self._interrupted = True

    def pytest_unconfigure(self) -> None:
        self.stop(grace=0.0 if self._interrupted else 10.0)


def compare_info(config: pytest.Config) -> dict[str, Any] | None:
    """What the reports say about an A/B run: REF, its commit, pairs and tolerance (else None)."""
    plugin = config.pluginmanager.get_plugin(CompareCandidate.NAME)
    if not isinstance(plugin, CompareCandidate):
        return None
    return {"ref": plugin.base.ref, "commit": plugin.base.commit, "pairs": plugin.settings.compare_pairs,
            "tolerance": plugin.settings.compare_tolerance, "processes": plugin.settings.compare_processes,
            "new_tests": plugin.coordinator.new_tests if plugin.coordinator else [],
            "removed_tests": plugin.coordinator.removed_tests if plugin.coordinator else []}


class CompareBase:
    """The base side's end, in the pytest process that runs in the worktree."""

    NAME = "agentmem-compare-base"

    def __init__(self, config: pytest.Config) -> None:
        try:
            self.client = PeerClient.from_environment()
        except (OSError, PeerError, ValueError) as exc:
            raise pytest.UsageError(f"A/B base side: cannot reach the candidate side ({exc})") from None
        self.config = config
        self.tests: set[str] = set()
        self._failures: dict[str, str] = {}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        mine = [i for i in items if is_perf_item(i)]
        order, services = self.client.call("hello", [i.nodeid for i in mine])
        self._share(services)
        by_id = {i.nodeid: i for i in mine}
        kept = [by_id[n] for n in order if n in by_id]
        self.tests = {i.nodeid for i in kept}
        deselected = [i for i in items if i.nodeid not in self.tests]
        items[:] = kept
        if deselected:
            config.hook.pytest_deselected(items=deselected)

    def _share(self, services: dict[str, str]) -> None:
        """Use the candidate's servers (each side has its own databases on them)."""
        from dataclasses import replace

        session = get_session(self.config)
        changes = {f"{name}_url": url for name, url in services.items() if name in ("postgres", "redis")}
        if changes:
            session.settings = replace(session.settings, **changes)
            service_manager(self.config).settings = session.settings

    def pytest_agentmem_round_pacer(self, item: pytest.Item) -> PairedPacer | None:
        if item.nodeid not in self.tests:
            return None
        return PairedPacer(self.client.participant, item.nodeid, self.client, PlainPacer(item))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            text = str(report.longrepr).strip().splitlines()
            self._failures[report.nodeid] = redact_text(text[-1] if text else "failed")[:300]

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        failed = nodeid in self._failures
        try:
            self.client.call("test_finished", nodeid, "failed" if failed else "passed",
                             self._failures.get(nodeid, ""))
        except PeerError:
            pytest.exit("A/B base side: the candidate side went away", returncode=3)

    def pytest_unconfigure(self) -> None:
        self.client.close()

