"""Git plumbing of the A/B mode: resolve ``REF``, make and remove the base worktree."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

_GIT_TIMEOUT = 120


@dataclass(frozen=True)
class BaseRef:
    """The base side of a comparison: the ``ref`` as given, its commit, the repo root."""

    ref: str
    commit: str
    repo_root: Path

    @property
    def short(self) -> str:
        return self.commit[:12]


def _git(args: list[str], cwd: Path, timeout: float = _GIT_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False)


def resolve(ref: str, where: Path) -> BaseRef:
    """Resolve ``ref`` in the repository holding ``where``; a usage error says what is wrong."""
    if shutil.which("git") is None:
        raise pytest.UsageError(f"--agentmem-compare {ref}: git is not installed; install git or "
                                "drop --agentmem-compare to gate against stored baselines")
    top = _git(["rev-parse", "--show-toplevel"], where)
    if top.returncode != 0:
        raise pytest.UsageError(
            f"--agentmem-compare {ref}: {where} is not inside a git repository; run pytest from a "
            "git checkout (in CI: actions/checkout with fetch-depth: 0) or drop --agentmem-compare")
    root = Path(top.stdout.strip())
    found = _git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], root)
    if found.returncode != 0 or not found.stdout.strip():
        raise pytest.UsageError(
            f"--agentmem-compare {ref}: unknown revision in {root}; give a branch, tag or commit "
            f"that exists here (git fetch origin first; in CI check out with fetch-depth: 0), "
            f"e.g. --agentmem-compare origin/main")
    return BaseRef(ref=ref, commit=found.stdout.strip(), repo_root=root)


class Worktree:
    """A temporary detached worktree of the base commit, removed by :meth:`remove`."""

    def __init__(self, base: BaseRef) -> None:
        self.base = base
        self._parent = Path(tempfile.mkdtemp(prefix="agentmem-ab-"))  # mode 0700
        self.path = self._parent / "base"
        done = _git(["worktree", "add", "--detach", "--quiet", str(self.path), base.commit],
                    base.repo_root)
        if done.returncode != 0:
            shutil.rmtree(self._parent, ignore_errors=True)
            raise pytest.UsageError(
                f"--agentmem-compare {base.ref}: git worktree add failed: "
                f"{(done.stderr or done.stdout).strip()[-500:]}")
        self.removed = False

    @classmethod
    def adopt(cls, base: BaseRef, path: Path) -> Worktree:
        """The worktree at ``path`` that this process made before it re-executed itself."""
        self = cls.__new__(cls)
        self.base, self.path, self._parent, self.removed = base, path, path.parent, False
        return self

    def remove(self) -> None:
        """Remove the worktree and its administrative files (idempotent)."""
        if self.removed:
            return
        self.removed = True
        try:
            _git(["worktree", "remove", "--force", str(self.path)], self.base.repo_root, timeout=60)
        except (OSError, subprocess.SubprocessError):
            pass
        shutil.rmtree(self._parent, ignore_errors=True)
        try:
            _git(["worktree", "prune"], self.base.repo_root, timeout=60)
        except (OSError, subprocess.SubprocessError):
            pass
