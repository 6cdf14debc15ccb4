"""The base side's pytest process: what it imports, how it starts, how it stops.

The base runs the base tree's code and conftest files, not the checkout's, even
when the user's package is installed in editable mode: every import root of the
candidate that lies inside the repository (``sys.path`` entries, and the roots of
modules already imported from it, which catches editable installs served by an
import hook) is mapped to the same place in the worktree and put first on the
base's ``sys.path``. pytest-agentmem itself is the tool, not the code under
test: the base imports the candidate's copy, so both sides speak the same
protocol (comparing two commits of pytest-agentmem itself therefore measures
the candidate's code on both sides).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType

from ..child_process import ChildProcess, inherited_environment
from ..config import AB_HANDOVER_ENV

#: Environment the base must not inherit beyond what no child does
#: (:data:`~pytest_agentmem.child_process.NOT_INHERITED`): it would compare again, or take the
#: candidate's handover folder for its own.
DROPPED_ENV = ("AGENTMEM_COMPARE", AB_HANDOVER_ENV)

BOOTSTRAP = ("import sys; sys.path[:0] = {paths!r}; import pytest; "
             "raise SystemExit(pytest.console_main())")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except (ValueError, OSError):
        return False
    return True


def import_roots(repo_root: Path, sys_path: Iterable[str], modules: Mapping[str, ModuleType]) -> list[Path]:
    """Import roots of the candidate that lie inside ``repo_root`` (in ``sys.path`` order first)."""
    root = repo_root.resolve()
    found: list[Path] = []
    for entry in sys_path:
        if entry and _inside(Path(entry), root) and Path(entry).resolve() not in found:
            found.append(Path(entry).resolve())
    for name, module in list(modules.items()):
        file = getattr(module, "__file__", None)
        if not file or name.startswith("pytest_agentmem") or not _inside(Path(file), root):
            continue
        path = Path(file).resolve()
        depth = name.count(".") + (1 if path.name == "__init__.py" else 0)
        top = path.parents[depth] if depth < len(path.parents) else None
        if top is not None and _inside(top, root) and top not in found:
            found.append(top)
    return found


def base_sys_path(repo_root: Path, worktree: Path, roots: Iterable[Path], tool_root: Path | None) -> list[str]:
    """The entries put first on the base's ``sys.path``: the tool, then the mapped roots."""
    out: list[str] = [str(tool_root)] if tool_root is not None else []
    for r in roots:
        mapped = worktree / r.relative_to(repo_root.resolve())
        if str(mapped) not in out:
            out.append(str(mapped))
    return out


def tool_root() -> Path | None:
    """The directory holding this pytest_agentmem package, if the repo might shadow it."""
    return Path(__file__).resolve().parents[2]  # <root>/pytest_agentmem/compare/peer.py


#: The base side's process (and every other process of an A/B run).
BaseProcess = ChildProcess


def base_environment(extra: Mapping[str, str], python_path: list[str]) -> dict[str, str]:
    env = inherited_environment(DROPPED_ENV)
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join([*python_path, *filter(None, [os.environ.get("PYTHONPATH")])])
    return env
