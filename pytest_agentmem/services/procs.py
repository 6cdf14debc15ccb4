"""Launch and stop the server processes we own, so that none outlives the run.

Three guards stop a server: an orderly ``stop`` at the end of the run (also on
Ctrl-C and SIGTERM, which the plugin turns into KeyboardInterrupt), an
``atexit`` handler, and, for a pytest process killed outright, the kernel's
parent-death signal (``PR_SET_PDEATHSIG``) set in the child after it dropped
privileges. Servers run in their own session so a terminal's Ctrl-C reaches
pytest first and not the servers mid-test.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1
_live: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()

#: Prefix of every temporary directory we create (the sweeper looks for it).
TEMP_PREFIX = "pytest-agentmem-"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def unprivileged_user() -> pwd.struct_passwd:
    """The account servers that refuse root run as: $AGENTMEM_RUN_AS, postgres or nobody."""
    for name in (os.environ.get("AGENTMEM_RUN_AS"), "postgres", "nobody"):
        if not name:
            continue
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and found no unprivileged account (postgres, nobody) "
                       "to run the server as; set AGENTMEM_RUN_AS to one")


def make_workdir(kind: str) -> Path:
    """A fresh temporary directory for one server, marked with our pid."""
    path = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{kind}-"))
    (path / "owner.pid").write_text(str(os.getpid()))
    return path


def sweep_stale_workdirs() -> int:
    """Remove work dirs left by runs that were killed outright; return how many."""
    removed = 0
    root = Path(tempfile.gettempdir())
    for path in root.glob(f"{TEMP_PREFIX}*"):
        owner = path / "owner.pid"
        try:
            pid = int(owner.read_text())
        except (OSError, ValueError):
            continue
        if pid == os.getpid() or _pid_alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _child_setup(uid: int | None, gid: int | None, death_signal: int) -> None:
    """Runs in the child before exec: drop privileges, then ask for a parent-death signal."""
    if gid is not None:
        os.setgroups([])
        os.setgid(gid)
    if uid is not None:
        os.setuid(uid)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        # After setuid: a change of credentials clears the parent-death signal.
        libc.prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if os.getppid() == 1:  # parent already gone between fork and prctl
            os._exit(1)


class ManagedProcess:
    """A server process we started: its log, a stop with grace, and the guards."""

    def __init__(self, argv: Sequence[str], *, log_path: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None, run_as: pwd.struct_passwd | None = None,
                 stop_signal: int = signal.SIGTERM, death_signal: int = signal.SIGKILL) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.stop_signal = stop_signal
        uid = run_as.pw_uid if run_as else None
        gid = run_as.pw_gid if run_as else None
        self._log: IO[bytes] = open(log_path, "ab")
        self.popen = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=cwd, env=env, start_new_session=True, close_fds=True,
            preexec_fn=lambda: _child_setup(uid, gid, death_signal),
        )
        _live.add(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """Ask the server to stop, wait ``grace`` seconds, then kill its whole group."""
        if self.alive():
            try:
                self.popen.send_signal(self.stop_signal)
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        if self.alive():
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.popen.kill()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self._log.close()
        _live.discard(self)


@atexit.register
def _stop_all_at_exit() -> None:
    for proc in list(_live):
        try:
            proc.stop(grace=2.0)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass
