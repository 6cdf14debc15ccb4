"""uvloop for the perf tests, through pytest-asyncio's ``pytest_asyncio_loop_factories`` hook.

A perf test and its async fixtures run in pytest-asyncio's event loop, so the
loop has to be chosen when pytest-asyncio creates it. pytest-asyncio (>= 1.4)
asks the ``pytest_asyncio_loop_factories(config, item)`` hook for the loop
factories of every asyncio test it parametrizes; once any plugin implements
that hook, it must answer every such test (``None`` is a usage error). So the
:class:`UvloopLoops` plugin answers ``{"uvloop": uvloop.new_event_loop}`` for
perf tests (marked ``agentmem_perf`` or using the ``perf`` fixture) and, for
every other asyncio test, a factory that builds the loop exactly as
pytest-asyncio would without the hook (from the current event loop policy,
which honours an ``event_loop_policy`` fixture). Ids do not change (a single
factory is a hidden parameter on pytest >= 8.4).

It is registered (by :mod:`pytest_agentmem.plugin`) when uvloop is importable and either the
run has ``--agentmem-perf`` or ``AGENTMEM_UVLOOP=1``; ``AGENTMEM_UVLOOP=0``
turns it off. A conftest that implements the hook itself wins (ours is
``trylast``); it can call :func:`loop_factories_for` to keep uvloop for perf tests.
"""

from __future__ import annotations

import asyncio
import inspect
import warnings
from collections.abc import Callable, Generator, Mapping
from typing import Any

import pytest

from ..config import env_value

ENV_SWITCH = "AGENTMEM_UVLOOP"
PERF_MARKER = "agentmem_perf"

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def uvloop_factory() -> LoopFactory | None:
    """``uvloop.new_event_loop`` when uvloop is installed, else ``None``."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def new_fast_loop() -> asyncio.AbstractEventLoop:
    """A new uvloop loop if uvloop is installed, else a default asyncio loop."""
    factory = uvloop_factory()
    return factory() if factory is not None else asyncio.new_event_loop()


def policy_loop() -> asyncio.AbstractEventLoop:
    """A new loop from the current event loop policy (what pytest-asyncio does by default)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return asyncio.get_event_loop_policy().new_event_loop()


def is_perf_test(node: Any) -> bool:
    """Whether ``node`` (an item or a FunctionDefinition) is a perf test of ours."""
    get_marker = getattr(node, "get_closest_marker", None)
    if get_marker is not None and get_marker(PERF_MARKER) is not None:
        return True
    return "perf" in getattr(node, "fixturenames", ())


def loop_factories_for(item: Any) -> Mapping[str, LoopFactory]:
    """The loop factories for ``item``: uvloop for perf tests when installed."""
    factory = uvloop_factory()
    if factory is not None and is_perf_test(item):
        return {"uvloop": factory}
    return {"asyncio": policy_loop}


def wanted(config: pytest.Config, perf_run: bool) -> bool:
    """Whether to register :class:`UvloopLoops` for this run."""
    if not hasattr(config.hook, "pytest_asyncio_loop_factories"):
        return False  # pytest-asyncio absent or too old to have the hook
    if uvloop_factory() is None:
        return False
    switch = env_value(ENV_SWITCH)  # None when unset
    if switch is False:
        return False
    return perf_run or switch is True


class UvloopLoops:
    """The plugin object choosing uvloop for perf tests (see the module docstring)."""

    @pytest.hookimpl(trylast=True)
    def pytest_asyncio_loop_factories(self, config: pytest.Config,
                                      item: pytest.Item) -> Mapping[str, LoopFactory]:
        return loop_factories_for(item)

    @pytest.hookimpl(wrapper=True)
    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> Generator[None, Any, Any]:
        # pytest-agentmem marks perf tests for pytest-asyncio after the items are
        # generated; pytest-asyncio parametrizes the loop factory while they are
        # generated, so it must see the asyncio marker now.
        definition = metafunc.definition
        ours = (definition.get_closest_marker(PERF_MARKER) is not None
                or "perf" in metafunc.fixturenames)
        if (ours and inspect.iscoroutinefunction(definition.obj)
                and definition.get_closest_marker("asyncio") is None):
            definition.add_marker(pytest.mark.asyncio)
        return (yield)
