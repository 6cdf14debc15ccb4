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
import fcntl
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from ..config import env_value

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
    for name in (env_value("AGENTMEM_RUN_AS"), "postgres", "nobody"):
        if not name:
            continue
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and found no unprivileged account (postgres, nobody) "
                       "to run the server as; set AGENTMEM_RUN_AS to one")


#: Lock files of the work dirs this process owns, held (flock) for the run's life.
_held_locks: dict[Path, int] = {}
LOCK_NAME = "owner.lock"
#: Work dirs from before the lock files (no owner.lock) are swept only when this old.
LEGACY_MAX_AGE_S = 24 * 3600.0


def make_workdir(kind: str) -> Path:
    """A fresh temporary directory for one server, locked by this process while it lives.

    Liveness is the lock, not a pid: with /tmp shared across pid namespaces
    (containers, CI runners) a pid says nothing about a run elsewhere, but an
    ``flock`` on a file in the directory is held until the process that took
    it ends, wherever it runs.
    """
    path = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{kind}-"))
    fd = os.open(path / LOCK_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, str(os.getpid()).encode())  # for people; the lock decides
    _held_locks[path] = fd
    return path


def remove_workdir(path: Path) -> None:
    """Delete a work dir of ours and release its lock."""
    shutil.rmtree(path, ignore_errors=True)
    fd = _held_locks.pop(Path(path), None)
    if fd is not None:
        os.close(fd)


def sweep_stale_workdirs() -> int:
    """Remove work dirs whose run has ended (no process holds their lock); return how many."""
    removed = 0
    root = Path(tempfile.gettempdir())
    for path in root.glob(f"{TEMP_PREFIX}*"):
        if path in _held_locks or path.is_symlink() or not path.is_dir():
            continue
        try:
            fd = os.open(path / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            removed += _sweep_legacy(path)
            continue
        except OSError:
            continue  # not ours to judge (another user's, unreadable)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # held: a live run, perhaps in another pid namespace
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
        finally:
            os.close(fd)
    return removed


def _sweep_legacy(path: Path) -> int:
    """A work dir without a lock file (older versions): removed only when a day old."""
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        return 0
    if age < LEGACY_MAX_AGE_S:
        return 0
    shutil.rmtree(path, ignore_errors=True)
    return 1


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
        self._cwd, self._env, self._death_signal = cwd, env, death_signal
        self._uid = run_as.pw_uid if run_as else None
        self._gid = run_as.pw_gid if run_as else None
        self._log: IO[bytes] = open(log_path, "ab")
        self.paused = False
        self.popen = self._spawn()
        _live.add(self)

    def _spawn(self) -> subprocess.Popen[bytes]:
        uid, gid, death_signal = self._uid, self._gid, self._death_signal
        return subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=self._cwd, env=self._env, start_new_session=True, close_fds=True,
            preexec_fn=lambda: _child_setup(uid, gid, death_signal),
        )

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
        self.resume()
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

    # -- fault injection (see pytest_agentmem.faults): the same server, stopped and started again

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the server and every process it started (its session)."""
        try:
            os.killpg(self.popen.pid, signum)
        except (ProcessLookupError, PermissionError):
            if self.alive():
                self.popen.send_signal(signum)

    def pause(self) -> None:
        """Freeze the server and its children (SIGSTOP): connections stay open, nothing answers."""
        if self.alive():
            self.signal_group(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        """Let a paused server run again (SIGCONT)."""
        if self.paused:
            self.signal_group(signal.SIGCONT)
            self.paused = False

    def kill(self) -> None:
        """End the server at once (SIGKILL to its whole group), as a crash would."""
        if self.alive():
            self.signal_group(signal.SIGKILL)  # a stopped process dies of it too
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.paused = False

    def halt(self, grace: float = 30.0) -> None:
        """Stop the server in an orderly way (its stop signal), keeping its log and data for a restart."""
        self.resume()
        if self.alive():
            self.popen.send_signal(self.stop_signal)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()

    def start(self) -> None:
        """Start the server again with the same command line (same port, data dir and secret)."""
        if self.alive():
            return
        if self._log.closed:
            self._log = open(self.log_path, "ab")
        self.popen = self._spawn()
        _live.add(self)


@atexit.register
def _stop_all_at_exit() -> None:
    for proc in list(_live):
        try:
            proc.stop(grace=2.0)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass
