"""Files written so that a reader never sees half of one, and the tail of a log."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "w", *, suffix: str = ".tmp") -> Iterator[IO[Any]]:
    """A file to write ``path`` through: a temporary file in the same folder, flushed,
    synced and moved into place with ``os.replace`` when the block ends; removed if
    the block raises.

    Concurrent writers (pytest-xdist workers) and a crash mid-write leave either
    the old file or the new one, never a mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader never sees half of it (:func:`atomic_writer`)."""
    with atomic_writer(path) as handle:
        handle.write(text)


def tail_lines(path: Path, lines: int) -> str:
    """The last ``lines`` lines of the text file ``path`` ("" when it cannot be read)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
