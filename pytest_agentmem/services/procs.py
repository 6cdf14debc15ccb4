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
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from .._files import tail_lines
from ..config import env_value

_PR_SET_PDEATHSIG = 1
_live: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()

#: Prefix of every temporary directory we create (the sweeper looks for it).
TEMP_PREFIX = "pytest-agentmem-"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (see :func:`on_a_free_port`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PortTaken(Exception):
    """The server could not bind the port it was given: another process took it first."""


class NotListening(OSError):
    """The server does not listen on its port yet (a transient error of readiness probes)."""


#: What a server's log says when its port was taken between free_port() and its bind.
PORT_TAKEN_MARKS = ("Address already in use", "could not bind IPv4 address")
PORT_ATTEMPTS = 5

_T = TypeVar("_T")


def on_a_free_port(start: Callable[[int], _T], attempts: int = PORT_ATTEMPTS) -> _T:
    """``start(port)`` on a free port; again on another port when it raises :class:`PortTaken`.

    A port is free when :func:`free_port` looks, not necessarily when the server
    binds it a moment later: another process on the machine may take it in
    between. The server then fails at once, and a new port is as good.
    """
    for attempt in range(attempts):
        try:
            return start(free_port())
        except PortTaken:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def port_taken(log_path: Path, offset: int) -> bool:
    """Whether what a server wrote to its log after ``offset`` says its port was in use."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except OSError:
        return False
    return any(mark in text for mark in PORT_TAKEN_MARKS)


def log_size(log_path: Path) -> int:
    """The log's size now: where a new start's lines begin."""
    try:
        return log_path.stat().st_size
    except OSError:
        return 0


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def unprivileged_user() -> pwd.struct_passwd:
    """An account with a passwd entry for tools that need one (initdb): $AGENTMEM_RUN_AS, postgres or nobody."""
    for name in (env_value("AGENTMEM_RUN_AS"), "postgres", "nobody"):
        if not name:
            continue
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and found no unprivileged account (postgres, nobody) "
                       "to run the server as; set AGENTMEM_RUN_AS to one")


# --------------------------------------------------------------------------- server accounts

#: Environment of every server we start. Nothing of ours (CI tokens, external URLs,
#: the A/B key) reaches /proc/PID/environ, which any process of the server's account reads.
SERVER_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C", "LANG": "C", "HOME": "/"}

#: Uids servers started by root run as when no account is named: no passwd entry, above
#: the range adduser gives out (Debian: < 60000), below systemd's dynamic users (61184).
PRIVATE_UIDS = range(60100, 61184)


@dataclass(frozen=True)
class ServerAccount:
    """The account one server runs as (``pw_uid``/``pw_gid``/``pw_name`` as in a passwd entry).

    ``private``: a uid of its own, which no other process on the machine has while
    the server runs, so no one else can read its environment or memory, signal it,
    or write its data directory (pg_hba.conf included).
    """

    pw_uid: int
    pw_gid: int
    pw_name: str
    private: bool = False


def server_account(workdir: Path) -> ServerAccount | None:
    """Who a server with this work dir runs as: None when we are not root (it runs as us).

    ``$AGENTMEM_RUN_AS`` names a shared account to use; without it, a private uid
    held (flock) for as long as ``workdir`` is (see :func:`remove_workdir`). Only
    when every private uid is taken does a shared account (postgres, nobody) serve.
    """
    if not running_as_root():
        return None
    named = env_value("AGENTMEM_RUN_AS")
    if named:
        try:
            entry = pwd.getpwnam(str(named))
        except KeyError:
            raise RuntimeError(f"AGENTMEM_RUN_AS={named}: no such account; name an existing "
                               "unprivileged account or unset it (servers then get a uid of their own)") from None
        return ServerAccount(entry.pw_uid, entry.pw_gid, entry.pw_name)
    uid = _take_private_uid(workdir)
    if uid is None:
        entry = unprivileged_user()
        return ServerAccount(entry.pw_uid, entry.pw_gid, entry.pw_name)
    return ServerAccount(uid, uid, f"uid {uid}", private=True)


def _uids_in_use() -> set[int]:
    import psutil

    used: set[int] = set()
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info.get("uids")
        if uids:
            used.update(uids)
    return used


def _mapped(uid: int) -> bool:
    """Whether ``uid`` exists in this user namespace (a container may map only 65536)."""
    try:
        text = Path("/proc/self/uid_map").read_text()
    except OSError:
        return True
    for line in text.splitlines():
        inside, _, count = (int(x) for x in line.split())
        if inside <= uid < inside + count:
            return True
    return False


def _take_private_uid(workdir: Path) -> int | None:
    """A uid from :data:`PRIVATE_UIDS` with no account, no process and no other run's lock."""
    from .cache_dirs import user_cache_root

    locks = user_cache_root() / "uid-locks"
    try:
        locks.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        return None
    used = _uids_in_use()
    candidates = [u for u in PRIVATE_UIDS if u not in used]
    random.shuffle(candidates)
    for uid in candidates[:64]:
        if not _mapped(uid):
            continue
        try:
            pwd.getpwuid(uid)
            continue  # an account has it
        except KeyError:
            pass
        fd = os.open(locks / f"{uid}.lock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # another run's server has it
        if uid in _uids_in_use():  # started by someone else since we looked
            os.close(fd)
            continue
        _held_uids.setdefault(Path(workdir), []).append(fd)
        return uid
    return None


def give_to(path: Path, account: ServerAccount | None) -> None:
    """Make ``path`` and everything under it the account's (no-op when we run unprivileged)."""
    if account is None:
        return
    os.lchown(path, account.pw_uid, account.pw_gid)
    for base, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(base, name), account.pw_uid, account.pw_gid)


# --------------------------------------------------------------------------- work dirs

#: Lock files of the work dirs this process owns, held (flock) for the run's life.
_held_locks: dict[Path, int] = {}
#: Private-uid locks held for a work dir's server (released with the work dir).
_held_uids: dict[Path, list[int]] = {}
LOCK_NAME = "owner.lock"
#: Work dirs from before the lock files (no owner.lock) are swept only when this old.
LEGACY_MAX_AGE_S = 24 * 3600.0


def make_workdir(kind: str) -> Path:
    """A fresh temporary directory for one server, locked by this process while it lives.

    Liveness is the lock, not a pid: with /tmp shared across pid namespaces
    (containers, CI runners) a pid says nothing about a run elsewhere, but an
    ``flock`` on a file in the directory is held until the process that took
    it ends, wherever it runs. The lock file gets its name only once it is
    locked: until then the directory has no lock file, and a sweeper leaves a
    fresh directory without one alone (:func:`_sweep_legacy`), so there is no
    moment at which another run could take the lock and remove the directory.
    """
    path = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{kind}-"))
    pending = path / f".{LOCK_NAME}.pending"
    fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, str(os.getpid()).encode())  # for people; the lock decides
    os.rename(pending, path / LOCK_NAME)
    _held_locks[path] = fd
    return path


def remove_workdir(path: Path) -> None:
    """Delete a work dir of ours and release its lock (and its server's private uid)."""
    shutil.rmtree(path, ignore_errors=True)
    fd = _held_locks.pop(Path(path), None)
    if fd is not None:
        os.close(fd)
    for uid_fd in _held_uids.pop(Path(path), []):
        os.close(uid_fd)


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
                 env: dict[str, str] | None = None,
                 run_as: pwd.struct_passwd | ServerAccount | None = None,
                 stop_signal: int = signal.SIGTERM, death_signal: int = signal.SIGKILL) -> None:
        """``env``: the server's whole environment (default :data:`SERVER_ENV`, never ours)."""
        self.argv = list(argv)
        self.log_path = log_path
        self.stop_signal = stop_signal
        self._cwd, self._death_signal = cwd, death_signal
        self._env = dict(SERVER_ENV) if env is None else env
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

    def listens_on(self, port: int) -> bool:
        """Whether the server itself listens on ``port`` (not another process that took it).

        Checked before the first connection, which carries a secret: a process that
        took the port first would otherwise receive it.
        """
        import psutil

        try:
            proc = psutil.Process(self.pid)
            read = getattr(proc, "net_connections", None) or proc.connections
            return any(conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr[1] == port
                       for conn in read(kind="tcp"))
        except psutil.Error:
            return False

    def log_tail(self, lines: int = 25) -> str:
        return tail_lines(self.log_path, lines)

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
