"""Start the base side: its worktree, command line, environment and process.

Used by :class:`~.plugin.CompareCandidate` at session start, or earlier by
:mod:`.early` while the candidate re-executes itself.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..config import COMPARE_ARGS_ENV, Settings, env_value
from .channel import Endpoint
from .coordinator import side_of
from .git import BaseRef, Worktree, resolve
from .peer import BOOTSTRAP, BaseProcess, base_environment, base_sys_path, import_roots, tool_root

#: Pads the base's environment (``argv``, ``env`` -> ``env``) to the candidate's size.
Padding = Callable[[list[str], dict[str, str]], dict[str, str]]


@dataclass
class BaseSide:
    """A started base side: its worktree, its link's endpoint and its process."""

    worktree: Worktree
    endpoint: Endpoint
    process: BaseProcess

    def abandon(self) -> None:
        """Stop the process and remove everything (the candidate never took it over)."""
        try:
            self.process.stop(grace=0.0)
        finally:
            self.endpoint.remove()
            self.worktree.remove()


def check_usage(config: pytest.Config, settings: Settings) -> BaseRef:
    """The base of ``--agentmem-compare REF``; a usage error when the run cannot compare."""
    assert settings.compare
    if getattr(config.option, "numprocesses", None):
        raise pytest.UsageError("--agentmem-compare runs the two sides' rounds in turn and cannot "
                                "be combined with pytest-xdist (-n); drop -n")
    if settings.update_baselines:
        raise pytest.UsageError("--agentmem-compare gates against REF in the same run; it does not "
                                "record stored baselines: drop --update-baselines (or run it "
                                "without --agentmem-compare)")
    return resolve(settings.compare, Path(config.invocation_params.dir))


def is_inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return False
    return True


def base_args(config: pytest.Config, repo: Path, worktree: Path) -> list[str]:
    """The candidate's test arguments, paths inside the repository mapped into the worktree."""
    args: list[str] = []
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        for arg in config.args:
            path = Path(arg.split("::", 1)[0])
            if path.is_absolute() and is_inside(path, repo):
                arg = str(worktree / path.resolve().relative_to(repo)) + arg[len(str(path)):]
            args.append(arg)
    return args + env_value(COMPARE_ARGS_ENV)


def start_peer(config: pytest.Config, repo: Path, tree: Path, endpoint: Endpoint, participant: str,
               pad: Padding, log_path: Path) -> BaseProcess:
    """Start the pytest of ``participant`` on ``tree`` (the base's worktree, or ``repo`` itself for
    another candidate process): the candidate's arguments and import roots mapped into ``tree``."""
    tool = tool_root()
    roots = import_roots(repo, sys.path, sys.modules)
    paths = base_sys_path(repo, tree, roots, tool if tool is not None and is_inside(tool, repo) else None)
    invocation = Path(config.invocation_params.dir).resolve()
    cwd = tree / invocation.relative_to(repo) if is_inside(invocation, repo) else tree
    argv = [sys.executable, "-c", BOOTSTRAP.format(paths=paths),
            *base_args(config, repo, tree), "-p", "no:cacheprovider", "-p", "no:xdist",
            "--agentmem-perf", "--agentmem-services=auto", "-q", "-rfE", "--no-header"]
    env = pad(argv, base_environment(endpoint.environment(participant), paths))
    return BaseProcess(argv, cwd=cwd, env=env, log_path=log_path)


def start_base(config: pytest.Config, base: BaseRef, endpoint: Endpoint, pad: Padding) -> BaseSide:
    """Make the worktree of ``base`` and start the base's pytest in it (its servers come later).

    On failure nothing is left: no worktree, no endpoint folder.
    """
    try:
        worktree = Worktree(base)
    except BaseException:
        endpoint.remove()
        raise
    try:
        process = start_peer(config, base.repo_root.resolve(), worktree.path, endpoint, "base", pad,
                             worktree.path.parent / "base-pytest.log")
    except BaseException:
        worktree.remove()
        endpoint.remove()
        raise
    return BaseSide(worktree, endpoint, process)


def start_more(config: pytest.Config, side: BaseSide, members: Sequence[str], pad: Padding) -> dict[str, BaseProcess]:
    """Start the participants of ``members`` beyond ``base`` and ``candidate``: the other base
    processes in the worktree, the other candidate processes in the checkout itself."""
    repo = side.worktree.base.repo_root.resolve()
    started: dict[str, BaseProcess] = {}
    try:
        for participant in members:
            if participant in ("base", "candidate"):
                continue
            tree = side.worktree.path if side_of(participant) == "base" else repo
            started[participant] = start_peer(config, repo, tree, side.endpoint, participant, pad,
                                              side.worktree.path.parent / f"{participant}-pytest.log")
    except BaseException:
        for process in started.values():
            process.stop(grace=0.0)
        raise
    return started
