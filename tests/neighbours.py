"""A noisy neighbour for the benchmarks: one process per core spinning in a loop."""

from __future__ import annotations

import os
import subprocess
import sys
import time


class Neighbour:
    """One spinning process per core, as another job's processes on a shared machine.

    Each runs in a session of its own by default, as another job's processes do (with the
    kernel's autogroup scheduling, a session is a scheduling group); ``own_session=False``
    keeps them in the caller's session (the stored-baseline gate-quality benchmark's
    figures were measured so). Use it as a context manager, or call :meth:`stop`.
    """

    def __init__(self, own_session: bool = True) -> None:
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=own_session)
                      for _ in range(os.cpu_count() or 2)]
        time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()

    def __enter__(self) -> Neighbour:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
