"""Caches under the temp dir that another local user cannot plant or alter.

The temp dir is shared by every account on the machine, so a stable name in it
can be created first by someone else (with binaries of their choosing, run as
root when pytest runs as root). The cache root is therefore per user
(``agentmem-cache-<uid>``) and checked with ``lstat`` before every use: a real
directory (not a symlink), owned by us, not writable by group or others. An
entry inside it is checked the same way. Anything that fails the check is not
used: the cache is rebuilt in a fresh private directory instead.

The root is mode 0711: the unprivileged account a server runs as (when pytest
runs as root) may pass through it to the read-only installation copy it
executes, but may not list or change it.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

ROOT_MODE = 0o711


def is_trusted(path: Path, *, uid: int | None = None) -> bool:
    """True if ``path`` is a real directory owned by ``uid`` (us) that no one else may write."""
    uid = os.geteuid() if uid is None else uid
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == uid
            and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def user_cache_root(base: Path | None = None) -> Path:
    """This user's cache directory under the temp dir, created or checked; never another's.

    Returns ``<tmp>/agentmem-cache-<uid>`` when it is (or can be made) ours and
    private, else a new directory of our own for this run.
    """
    base = Path(tempfile.gettempdir()) if base is None else base
    root = base / f"agentmem-cache-{os.geteuid()}"
    try:
        root.mkdir(mode=0o700)
        root.chmod(ROOT_MODE)
    except FileExistsError:
        pass
    except OSError:
        return _fresh_root(base)
    if is_trusted(root):
        return root
    return _fresh_root(base)


def _fresh_root(base: Path) -> Path:
    root = Path(tempfile.mkdtemp(prefix=f"agentmem-cache-{os.geteuid()}-", dir=base))
    root.chmod(ROOT_MODE)
    return root


def trusted_entry(path: Path) -> bool:
    """True if the cache entry ``path`` exists and passes the ``lstat`` checks (see :func:`is_trusted`)."""
    return is_trusted(path) and (path / ".complete").exists() and not (path / ".complete").is_symlink()
