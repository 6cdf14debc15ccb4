"""A noisy neighbour for the benchmarks: one process per core spinning in a loop."""

from __future__ import annotations

import os
import subprocess
import sys
import time


class Neighbour:
    """One spinning process per core, as another job's processes on a shared machine.

    Each runs in a session of its own, as another job's processes do (with the kernel's
    autogroup scheduling, a session is a scheduling group). Use it as a context manager,
    or call :meth:`stop`.
    """

    def __init__(self) -> None:
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
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
