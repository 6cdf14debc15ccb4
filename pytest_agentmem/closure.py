"""The fixtures a test uses, through fixtures that override fixtures of the same name.

``item.fixturenames`` is the closure pytest computed. pytest 9.0 recomputes it
after a test is parametrized (pytest-asyncio parametrizes the loop factory, and so
does a perf run choosing uvloop) from the *closest* definition of each fixture
only, so a conftest's ``memory_service(memory_service)`` that wraps ours hides
``embedder``, ``memory_repo`` and the services from it (pytest-dev/pytest#14248,
fixed by #14369). :func:`fixture_closure` walks every definition in the override
chain, as pytest's own first pass does, from the definitions pytest kept.
"""

from __future__ import annotations

from typing import Any


def fixture_closure(node: Any) -> set[str]:
    """The names of every fixture ``node`` (an item) uses, including through overrides."""
    names = set(getattr(node, "fixturenames", ()))
    info = getattr(node, "_fixtureinfo", None)
    kept = getattr(info, "name2fixturedefs", None)
    if not kept:
        return names
    chains: dict[str, Any] = dict(kept)
    manager = getattr(getattr(node, "session", None), "_fixturemanager", None)
    depth: dict[str, int] = {}  # how far down its override chain each name is being resolved

    def chain_of(name: str) -> Any:
        # pytest before 9 never visited what an overridden definition uses: look it up
        if name not in chains:
            try:
                chains[name] = manager.getfixturedefs(name, node) if manager is not None else None
            except Exception:  # noqa: BLE001 - a private API: without it, the names pytest kept
                chains[name] = None
        return chains[name]

    def visit(name: str) -> None:
        if depth.get(name) == -1:
            return  # resolved from its closest definition already
        names.add(name)
        chain = chain_of(name)
        index = depth.get(name, -1)
        if not chain or -index > len(chain):
            return
        depth[name] = index - 1  # a definition naming itself means the next one down
        for dependency in getattr(chain[index], "argnames", ()):
            visit(dependency)
        depth[name] = index

    for name in getattr(info, "initialnames", ()):
        visit(name)
    return names
