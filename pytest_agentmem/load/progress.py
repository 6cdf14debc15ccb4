"""A live progress line during a load run, on a terminal only.

The line goes through pytest's terminal reporter's output file with pytest's
capturing suspended for the moment of the write (as pytest's live logging
does). It is drawn on a line of its own below the test's line, rewritten in
place with ``\\r``, and erased at the end with the cursor put back where pytest
left it, so pytest's own output (dots, PASSED, percentages) is not disturbed.
Silent when the output is not a terminal, in xdist workers, and with ``-qq``.
"""

from __future__ import annotations

import contextlib
from typing import Any, TextIO

import pytest


class Progress:
    """Shows ``name  12.0 s  4,321 ops/s  p95 5.12 ms  errors 0`` while a run goes on."""

    def __init__(self, config: pytest.Config, name: str) -> None:
        self.name = name
        self._file: TextIO | None = None
        self._capman: Any = None
        self._column = 0
        self._shown = False
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or getattr(config, "workerinput", None) is not None:
            return
        # TerminalReporter.isatty: a bool before pytest 9, a callable bool from 9 on.
        isatty = reporter.isatty
        if config.get_verbosity() < -1 or not (isatty() if callable(isatty) else isatty):
            return
        writer = getattr(reporter, "_tw", None)
        file = getattr(writer, "_file", None)
        if file is None or not getattr(writer, "hasmarkup", False):
            return
        self._file = file
        self._column = int(getattr(writer, "width_of_current_line", 0) or 0)
        self._capman = config.pluginmanager.get_plugin("capturemanager")

    @property
    def enabled(self) -> bool:
        return self._file is not None

    def update(self, elapsed_s: float, ops_per_s: float, p95_ms: float, errors: int,
               ops: int) -> None:
        """Redraw the line (the runner's tick callback)."""
        if self._file is None:
            return
        line = (f"  {self.name}  {elapsed_s:6.1f} s  {ops_per_s:>10,.0f} ops/s  "
                f"p95 {p95_ms:8.2f} ms  ops {ops:,}  errors {errors:,}")
        prefix = "" if self._shown else "\n"
        self._write(f"{prefix}\r\x1b[2K{line}")
        self._shown = True

    def close(self) -> None:
        """Erase the line and put the cursor back at the end of pytest's line."""
        if self._file is None or not self._shown:
            return
        self._write(f"\r\x1b[2K\x1b[1A\x1b[{self._column + 1}G")
        self._shown = False

    def _write(self, text: str) -> None:
        assert self._file is not None
        guard = (self._capman.global_and_fixture_disabled() if self._capman is not None
                 else contextlib.nullcontext())
        try:
            with guard:
                self._file.write(text)
                self._file.flush()
        except (OSError, ValueError):
            self._file = None  # the terminal went away: stay silent
