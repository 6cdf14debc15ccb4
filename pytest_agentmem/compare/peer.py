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

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType

from ..config import AB_HANDOVER_ENV

_PR_SET_PDEATHSIG = 1

#: Environment the base must not inherit: it would compare again, or write the
#: candidate's step summary.
DROPPED_ENV = ("AGENTMEM_COMPARE", "GITHUB_STEP_SUMMARY", "PYTEST_XDIST_WORKER",
               "PYTEST_XDIST_WORKER_COUNT", "PYTEST_CURRENT_TEST", AB_HANDOVER_ENV)

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


def _child_setup() -> None:  # pragma: no cover - runs in the child
    # Its own process group (a terminal's Ctrl-C reaches the candidate, which stops
    # it), but the candidate's session: with the kernel's autogroup scheduling a
    # new session would be a scheduling group of its own, and under CPU contention
    # the base would get a larger share of the machine than the candidate.
    os.setpgid(0, 0)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class BaseProcess:
    """The second pytest process, run in the worktree (its own process group, log to a file).

    Started here, or adopted by pid (:meth:`adopt`) when the process that started
    it has since re-executed itself: it is still this process's child.
    """

    def __init__(self, argv: list[str], *, cwd: Path, env: dict[str, str], log_path: Path) -> None:
        self.argv = argv
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self._popen: subprocess.Popen[bytes] | None = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_child_setup if sys.platform.startswith("linux") else os.setpgrp)
        self.pid = self._popen.pid
        self.returncode: int | None = None

    @classmethod
    def adopt(cls, pid: int, argv: list[str], log_path: Path) -> BaseProcess:
        """The base started by this process before it re-executed (``pid`` must be our child)."""
        os.waitpid(pid, os.WNOHANG)  # ChildProcessError if it is not our child
        self = cls.__new__(cls)
        self.argv, self.log_path, self.pid = argv, log_path, pid
        self._popen = None
        self.returncode = None
        return self

    def alive(self) -> bool:
        return self._poll() is None

    def _poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        if self._popen is not None:
            self.returncode = self._popen.poll()
            return self.returncode
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere
            self.returncode = -1
            return self.returncode
        if pid:
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, seconds: float) -> bool:
        """Whether it ended within ``seconds``."""
        return self._wait(seconds)

    def _wait(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self._poll() is None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 30.0) -> int | None:
        """Let it finish (it ends once the candidate closes the link), else SIGTERM, else SIGKILL."""
        for sig, wait in ((None, grace), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            if self._poll() is not None:
                break
            if sig is not None:
                try:
                    os.killpg(self.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            if self._wait(wait):
                break
        return self.returncode


def base_environment(extra: Mapping[str, str], python_path: list[str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join([*python_path, *filter(None, [os.environ.get("PYTHONPATH")])])
    return env
