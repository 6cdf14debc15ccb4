"""A py-spy sampling profile of this process while its measured rounds run.

py-spy samples from outside the process (it reads the interpreter's memory with
``process_vm_readv``, which needs ptrace permission on this process):

- as root (or with ``CAP_SYS_PTRACE``) it attaches;
- under Yama ``ptrace_scope`` 1 (Ubuntu, Debian kernels) a process may only be
  traced by its ancestors; py-spy is our child, so this process names it as its
  tracer with ``prctl(PR_SET_PTRACER, pid)`` before py-spy starts sampling (py-spy
  is started behind a shell that waits for that, then ``exec``\\ s it);
- under ``ptrace_scope`` 2 or 3, or a container whose seccomp profile forbids
  ``process_vm_readv``/``ptrace``, it cannot attach: :meth:`Profiler.start`
  returns False and :attr:`Profiler.problem` says why (py-spy's own message).

``--nonblocking``: py-spy reads the stacks without pausing this process, so the
measured rounds are not stopped 100 times a second (a stack may then be torn;
the effect on the figures is measured, see docs/profiling.md). Samples of idle
threads (the event loop waiting in ``select``) are left out: the profile is the
process's CPU. Output: py-spy's ``raw`` (folded stacks) format, one line per
distinct stack with its sample count, without line numbers.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

#: prctl option of Yama: name the process allowed to trace us.
PR_SET_PTRACER = 0x59616D61
#: Samples per second.
DEFAULT_RATE = 100
ATTACH_TIMEOUT_S = 15.0


def py_spy_path() -> str | None:
    """The py-spy executable (next to this Python first, then on PATH), or None."""
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def ptrace_scope() -> int | None:
    """Yama's ``kernel.yama.ptrace_scope`` (None: no Yama here)."""
    try:
        return int(Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip())
    except (OSError, ValueError):
        return None


def _allow_tracer(pid: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PTRACER, ctypes.c_ulong(pid), 0, 0, 0)
    except (OSError, AttributeError):  # no Yama or not Linux: nothing to allow
        pass


class Profiler:
    """One py-spy recording of this process, from :meth:`start` to :meth:`stop`."""

    def __init__(self, output: Path, *, rate: int = DEFAULT_RATE) -> None:
        self.output = Path(output)
        self.rate = rate
        self.problem = ""
        self.samples = 0
        self.errors = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: list[str] = []
        self._reader: threading.Thread | None = None
        self._started = threading.Event()
        self.elapsed_s = 0.0
        self._t0 = 0.0

    def start(self) -> bool:
        """Start sampling; False (and :attr:`problem`) if py-spy is missing or cannot attach."""
        exe = py_spy_path()
        if exe is None:
            self.problem = "py-spy is not installed (pip install 'pytest-agentmem[profile]')"
            return False
        if (ptrace_scope() or 0) >= 2 and os.geteuid() != 0:
            self.problem = (f"kernel.yama.ptrace_scope is {ptrace_scope()}: only root may attach a "
                            "profiler here (run as root or set it to 1)")
            return False
        self.output.parent.mkdir(parents=True, exist_ok=True)
        argv = [exe, "record", "--pid", str(os.getpid()), "--rate", str(self.rate), "--format", "raw",
                "--nolineno", "--nonblocking", "--output", str(self.output)]
        # a shell that waits for one line on stdin, then becomes py-spy (same pid): we allow
        # that pid to trace us in between
        self._process = subprocess.Popen(["/bin/sh", "-c", 'read go && exec "$@"', "py-spy", *argv],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        _allow_tracer(self._process.pid)
        assert self._process.stdin is not None
        self._process.stdin.write(b"go\n")
        self._process.stdin.close()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True, name="agentmem-py-spy")
        self._reader.start()
        deadline = time.monotonic() + ATTACH_TIMEOUT_S
        while not self._started.wait(0.02):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self._kill()
                self._reader.join(timeout=2)
                self._close()
                message = " ".join(line.strip() for line in self._stderr if line.strip())
                self.problem = f"py-spy could not attach to this process: {message or 'no answer'}"
                return False
        self._t0 = time.perf_counter()
        return True

    def _read_stderr(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for raw in self._process.stdout:  # py-spy's messages (stdout and stderr)
            line = raw.decode(errors="replace")
            self._stderr.append(line)
            if "Sampling process" in line:
                self._started.set()
            elif "Samples:" in line:
                parts = line.split("Samples:")[-1].split("Errors:")
                try:
                    self.samples = int(parts[0].strip())
                    self.errors = int(parts[1].strip()) if len(parts) > 1 else 0
                except ValueError:
                    pass

    def stop(self) -> Path | None:
        """Stop sampling and return the folded-stacks file (None if py-spy wrote none)."""
        if self._process is None:
            return None
        self.elapsed_s = time.perf_counter() - self._t0
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._kill()
        if self._reader is not None:
            self._reader.join(timeout=5)
        self._close()
        if not self.output.exists():
            message = " ".join(line.strip() for line in self._stderr[-3:] if line.strip())
            self.problem = self.problem or f"py-spy wrote no profile: {message}"
            return None
        return self.output

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)

    def _close(self) -> None:
        if self._process is not None and self._process.stdout is not None:
            self._process.stdout.close()
        self._process = None
