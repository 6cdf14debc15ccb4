"""A pytest process this one starts and owns: its own process group, its log in a file.

Used by the A/B mode for its base side and other processes (:mod:`.compare`) and by
the gate for the fresh process a failure must reproduce in (:mod:`.gate.reproduce`).
It dies with this process (a parent-death signal on Linux), and :meth:`ChildProcess.stop`
stops its whole group: SIGTERM, which the plugin turns into stopping its servers, then
SIGKILL.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from ._files import tail_lines

_PR_SET_PDEATHSIG = 1

#: Environment no pytest process this one starts inherits: it would append to this job's step
#: summary, or take itself for an xdist worker or for a test of this run.
NOT_INHERITED = ("GITHUB_STEP_SUMMARY", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT",
                 "PYTEST_CURRENT_TEST")


def inherited_environment(dropped: Iterable[str] = ()) -> dict[str, str]:
    """This process's environment for a child: without :data:`NOT_INHERITED` and ``dropped``."""
    left_out = {*NOT_INHERITED, *dropped}
    return {k: v for k, v in os.environ.items() if k not in left_out}


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


class ChildProcess:
    """A pytest process started by this one (its own process group, log to a file).

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
    def adopt(cls, pid: int, argv: list[str], log_path: Path) -> ChildProcess:
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
        return tail_lines(self.log_path, lines)

    def stop(self, grace: float = 30.0) -> int | None:
        """Let it finish within ``grace`` seconds (an A/B peer ends once the candidate closes the
        link), else SIGTERM to its group, else SIGKILL."""
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
