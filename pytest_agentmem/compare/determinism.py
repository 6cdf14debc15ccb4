"""Two pytest processes that differ only by the code they run.

Pairing rounds cancels what changes *during* a run (a neighbour, the machine's
drift), not what differs *between two processes* for their whole life: where
address-space layout randomisation put the heap and the stacks, and the string
hash seed. For a CPU-bound Python operation that alone spreads the speed of
identical processes by several per cent (3.5 % standard deviation over 10 fresh
processes here), which an A/A comparison reads as a "significant" change.
With the layout not randomised and one hash seed for both, the same processes
spread 0.5 %.

So in A/B mode the candidate's pytest process re-executes itself once, very
early (before any test, server or output), with ``ADDR_NO_RANDOMIZE`` and a fixed
``PYTHONHASHSEED``; the base process inherits both. Where that cannot be done
(not Linux, the personality call refused, pytest run in-process by another
program), the run goes on as it is and says so.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable

from ..config import AB_DETERMINISTIC_ENV as MARK_ENV
from ..config import AB_PAD_ENV as PAD_ENV

#: Bytes of padding in the candidate's environment, so that the base's can be made the same size.
PAD_SIZE = 4096
#: The hash seed both sides use when the user set none.
DEFAULT_HASHSEED = "0"
_ADDR_NO_RANDOMIZE = 0x0040000
_QUERY = 0xFFFFFFFF


def is_deterministic() -> bool:
    """True in a process started (or re-executed) with the fixed layout and hash seed."""
    return os.environ.get(MARK_ENV) == "1"


def _set_no_randomize() -> bool:
    """Turn off address-space randomisation for the next exec of this process (Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        current = libc.personality(_QUERY)
        if current == -1:
            return False
        if current & _ADDR_NO_RANDOMIZE:
            return True
        return libc.personality(current | _ADDR_NO_RANDOMIZE) != -1
    except (OSError, AttributeError):
        return False


#: Called just before the exec with the command line about to be executed (the
#: environment is ``os.environ``, final but for what the callback adds); returns
#: what undoes its work should the exec fail.
BeforeExec = Callable[[list[str]], Callable[[], None]]


def reexec_deterministic(invocation_args: tuple[str, ...],
                         before_exec: BeforeExec | None = None) -> str | None:
    """Re-execute this pytest process with a fixed layout and hash seed; returns only on failure.

    ``invocation_args`` are the arguments pytest was invoked with: the process is
    re-executed only when they are this process's own command line (a pytest run
    in-process by another program is left alone). Returns why it did not.
    ``before_exec`` runs once the layout is fixed for the children it starts too
    (the A/B base side starts there, while this process re-executes).
    """
    if is_deterministic():
        return None
    orig = list(getattr(sys, "orig_argv", []))
    if not orig or tuple(sys.argv[1:]) != tuple(invocation_args):
        return "pytest runs in-process inside another program"
    if not _set_no_randomize():
        return "address-space randomisation cannot be turned off here"
    os.environ[MARK_ENV] = "1"
    os.environ.setdefault("PYTHONHASHSEED", DEFAULT_HASHSEED)
    os.environ[PAD_ENV] = "x" * PAD_SIZE
    undo = before_exec(orig) if before_exec is not None else None
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, orig)
    except OSError as exc:
        del os.environ[MARK_ENV]
        if undo is not None:
            undo()
        return f"re-executing pytest failed ({exc})"
    return None  # pragma: no cover - execv does not return


def initial_size() -> int | None:
    """Bytes of this process's command line and environment as exec placed them on its stack."""
    try:
        with open("/proc/self/cmdline", "rb") as cmd, open("/proc/self/environ", "rb") as env:
            return len(cmd.read()) + len(env.read())
    except OSError:
        return None


def exec_size(argv: list[str], env: dict[str, str]) -> int:
    """Bytes ``argv`` and ``env`` take on a new process's stack (as :func:`initial_size` reads them)."""
    return (sum(len(os.fsencode(a)) + 1 for a in argv)
            + sum(len(os.fsencode(k)) + len(os.fsencode(v)) + 2 for k, v in env.items()))


def pad_like_this_process(argv: list[str], env: dict[str, str]) -> dict[str, str]:
    """``env`` padded so that ``argv`` and it take as many bytes as this process's own did.

    With address-space randomisation off, where the stack, and so the alignment of
    everything on it, starts depends on that size alone: two processes whose
    command line and environment have the same size start alike.
    """
    target = initial_size()
    if target is None or not is_deterministic():
        return {k: v for k, v in env.items() if k != PAD_ENV}
    return padded_to(argv, env, target)


def padded_to(argv: list[str], env: dict[str, str], target: int) -> dict[str, str]:
    """``env`` padded so that ``argv`` and it take ``target`` bytes (see :func:`exec_size`)."""
    env = {k: v for k, v in env.items() if k != PAD_ENV}
    room = target - exec_size(argv, env) - len(PAD_ENV) - 2
    if room >= 0:
        env[PAD_ENV] = "x" * room
    return env
