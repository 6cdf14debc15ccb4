"""Which tests are perf tests, and how they run: the marker, the skip, pytest-asyncio.

:class:`CollectionPlugin` (registered as ``agentmem-collection``) parses every
``agentmem_perf`` marker once at collection (a bad keyword is a usage error
naming the test), skips the perf tests of a run without ``--agentmem-perf``,
marks our async tests for pytest-asyncio whatever its mode, and says in the
header what the run will do.
"""

from __future__ import annotations

import inspect
from collections.abc import Generator
from typing import Any

import pytest

from .config import Settings
from .marker import MARKER, PERF_MARKER_KEY, parse_marker

SKIP_REASON = "run with --agentmem-perf"

#: Fixtures whose tests are run under pytest-asyncio without the user marking them.
ASYNC_FIXTURES = frozenset({
    "pg_pool", "redis_client", "perf", "memory_repo", "lancedb_store", "graph_store",
    "memory_service", "embedder",
})


class CollectionPlugin:
    """The perf tests' collection (registered as ``agentmem-collection``)."""

    NAME = "agentmem-collection"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def pytest_report_header(self) -> list[str]:
        settings = self.settings
        perf = "on" if settings.perf else "off (perf tests skipped; run with --agentmem-perf)"
        return [f"agentmem: perf tests {perf}, services {settings.services}, "
                f"baselines {settings.baselines_dir}"]

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        skip = pytest.mark.skip(reason=SKIP_REASON)
        for item in items:
            mark = item.get_closest_marker(MARKER)
            if mark is None:
                continue
            item.stash[PERF_MARKER_KEY] = parse_marker(mark, item.nodeid)
            if not self.settings.perf:
                item.add_marker(skip)

    @pytest.hookimpl(hookwrapper=True, trylast=True)
    def pytest_pycollect_makeitem(self, collector: pytest.Collector, name: str,
                                  obj: object) -> Generator[None, Any, None]:
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
