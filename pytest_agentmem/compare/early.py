"""Start the base side while the candidate re-executes itself.

In A/B mode the candidate's pytest process re-executes itself with a fixed
memory layout (:mod:`.determinism`). Were the base started only by the
re-executed process, the candidate would wait, at its first run, for the whole
of the base's start-up (interpreter, plugins, collection). So the first process
starts the base just before its exec (the layout is already fixed for the
children it starts), writes what it started into the link's private folder
(mode 0700) and names that folder in ``AGENTMEM_AB_HANDOVER``; the re-executed
process, the same process and so still the base's parent, takes it over
(:func:`take_over`) at once. Both start up at the same time. Should anything
go wrong on the way, the re-executed candidate starts the base itself, as
without this.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from ..config import AB_HANDOVER_ENV, Settings
from .channel import Endpoint
from .determinism import BeforeExec, exec_size, padded_to
from .git import BaseRef, Worktree
from .launch import BaseSide, check_usage, start_base
from .peer import BaseProcess

HANDOVER_FILE = "handover.json"


def starter(config: pytest.Config, settings: Settings) -> BeforeExec | None:
    """The ``before_exec`` of the re-exec that starts the base; None if the run cannot compare.

    (The re-executed process then reports the usage error.)
    """
    try:
        base = check_usage(config, settings)
    except pytest.UsageError:
        return None

    def start(argv: list[str]) -> Callable[[], None]:
        endpoint = Endpoint.new()
        os.environ[AB_HANDOVER_ENV] = str(endpoint.directory)
        target = exec_size(argv, dict(os.environ))  # what the re-executed candidate will hold
        try:
            side = start_base(config, base, endpoint, lambda a, env: padded_to(a, env, target))
            _write(side)
        except Exception:  # noqa: BLE001 - the re-executed candidate starts the base itself
            os.environ.pop(AB_HANDOVER_ENV, None)
            return lambda: None

        def undo() -> None:
            os.environ.pop(AB_HANDOVER_ENV, None)
            side.abandon()

        return undo

    return start


def _write(side: BaseSide) -> None:
    path = side.endpoint.directory / HANDOVER_FILE
    data = {"pid": side.process.pid, "argv": side.process.argv, "log": str(side.process.log_path),
            "worktree": str(side.worktree.path), "ref": side.worktree.base.ref,
            "commit": side.worktree.base.commit, "repo": str(side.worktree.base.repo_root),
            "authkey": side.endpoint.authkey.hex()}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out)


#: Name prefixes of the temporary folders an A/B run makes (channel.Endpoint.new, git.Worktree).
ENDPOINT_PREFIX = "agentmem-ab-sock-"
WORKTREE_PREFIX = "agentmem-ab-"


def made_by_us(path: Path, prefix: str) -> bool:
    """Whether ``path`` is a folder an A/B run of this user made: removable without harm.

    A temporary folder named ``prefix*`` directly in the temp dir, a real directory (no
    symlink), owned by this user and private (mode 0700). Whatever else the hand-over
    names (the variable, or a worktree in the file) is left alone.
    """
    try:
        info = os.lstat(path)
    except (OSError, ValueError):
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
            and stat.S_IMODE(info.st_mode) == 0o700 and path.name.startswith(prefix)
            and Path(os.path.realpath(path.parent)) == Path(os.path.realpath(tempfile.gettempdir())))


def take_over() -> BaseSide | None:
    """The base side this process started before it re-executed, if any (the variable is cleared)."""
    folder = os.environ.pop(AB_HANDOVER_ENV, None)
    if not folder:
        return None
    directory = Path(folder)
    if not made_by_us(directory, ENDPOINT_PREFIX):
        return None  # not a hand-over folder: read nothing from it, delete nothing
    try:
        data = json.loads((directory / HANDOVER_FILE).read_text())
        (directory / HANDOVER_FILE).unlink()
        endpoint = Endpoint(directory, bytes.fromhex(data["authkey"]))
        base = BaseRef(ref=data["ref"], commit=data["commit"], repo_root=Path(data["repo"]))
        worktree_path = Path(data["worktree"])
        if worktree_path.name != "base" or not made_by_us(worktree_path.parent, WORKTREE_PREFIX):
            raise ValueError(f"{worktree_path} is no worktree of an A/B run")
        worktree = Worktree.adopt(base, worktree_path)
    except (OSError, ValueError, KeyError, TypeError):
        Endpoint(directory, b"").remove()
        return None
    try:
        process = BaseProcess.adopt(int(data["pid"]), list(data["argv"]), Path(data["log"]))
    except (ChildProcessError, ValueError, TypeError):  # not our child: nothing of ours runs
        worktree.remove()
        endpoint.remove()
        return None
    return BaseSide(worktree, endpoint, process)
