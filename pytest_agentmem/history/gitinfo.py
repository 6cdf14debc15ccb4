"""Which commit and branch a run measured: from the CI's environment, else from git.

GitHub Actions (``GITHUB_SHA``, ``GITHUB_HEAD_REF`` of a pull request or
``GITHUB_REF_NAME``), GitLab CI (``CI_COMMIT_SHA``, ``CI_COMMIT_REF_NAME``) and
Jenkins-style ``GIT_COMMIT`` / ``GIT_BRANCH`` are read first; outside CI, or for
what they leave out, ``git`` is asked in the rootdir. A folder that is not a git
checkout gives ``None`` values, never an error.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    text = done.stdout.strip()
    return text if done.returncode == 0 and text else None


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def git_info(root: Path) -> dict[str, str | None]:
    """``{"commit", "branch", "commit_time"}`` of the checkout at ``root`` (``None`` where unknown)."""
    commit = _env("GITHUB_SHA", "CI_COMMIT_SHA", "GIT_COMMIT")
    branch = _env("GITHUB_HEAD_REF", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME", "GIT_BRANCH")
    if branch and branch.startswith("origin/"):
        branch = branch[len("origin/"):]
    head = _git(root, "rev-parse", "HEAD")
    if commit is None:
        commit = head
    if branch is None:
        name = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
        branch = name if name and name != "HEAD" else None  # detached: no branch
    when = _git(root, "show", "-s", "--format=%cI", commit) if commit else None
    return {"commit": commit, "branch": branch, "commit_time": when}
