"""The hand-over of a base side started before the candidate re-executed itself (compare.early)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from pytest_agentmem.compare import early
from pytest_agentmem.compare.channel import Endpoint
from pytest_agentmem.compare.git import Worktree, resolve
from pytest_agentmem.compare.launch import BaseSide
from pytest_agentmem.compare.peer import BaseProcess
from pytest_agentmem.config import AB_HANDOVER_ENV


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    _git(path, "init", "-q", "-b", "main")
    _git(path, "config", "user.email", "t@example.invalid")
    _git(path, "config", "user.name", "t")
    (path / "a.txt").write_text("a\n")
    _git(path, "add", "-A")
    _git(path, "commit", "-qm", "base")
    return path


@pytest.fixture
def handover_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(AB_HANDOVER_ENV, raising=False)
    return monkeypatch


def _started(repo: Path, argv: list[str]) -> BaseSide:
    worktree = Worktree(resolve("HEAD", repo))
    endpoint = Endpoint.new()
    process = BaseProcess(argv, cwd=worktree.path, env=dict(os.environ),
                          log_path=worktree.path.parent / "base-pytest.log")
    return BaseSide(worktree, endpoint, process)


def test_no_handover_is_none(handover_env: pytest.MonkeyPatch) -> None:
    assert early.take_over() is None


def test_the_re_executed_candidate_takes_over_what_it_started(repo: Path, handover_env: pytest.MonkeyPatch) -> None:
    side = _started(repo, [sys.executable, "-c", "import time; time.sleep(60)"])
    early._write(side)
    assert oct((side.endpoint.directory / early.HANDOVER_FILE).stat().st_mode & 0o777) == "0o600"
    handover_env.setenv(AB_HANDOVER_ENV, str(side.endpoint.directory))
    taken = early.take_over()
    assert taken is not None and AB_HANDOVER_ENV not in os.environ
    assert taken.process.pid == side.process.pid and taken.process.alive()
    assert taken.endpoint.authkey == side.endpoint.authkey
    assert taken.worktree.path == side.worktree.path
    assert not (side.endpoint.directory / early.HANDOVER_FILE).exists()  # the key is read once
    taken.abandon()
    assert not taken.process.alive() and not psutil.pid_exists(side.process.pid)
    assert not side.process.alive()  # (the original handle, gone with the exec in real life)
    assert len(_git(repo, "worktree", "list").splitlines()) == 1
    assert not side.worktree.path.parent.exists() and not side.endpoint.directory.exists()


def test_a_handover_of_a_process_not_ours_is_refused_and_cleaned_up(
        repo: Path, handover_env: pytest.MonkeyPatch) -> None:
    side = _started(repo, [sys.executable, "-c", "pass"])
    side.process.stop(grace=30)
    early._write(side)
    data = json.loads((side.endpoint.directory / early.HANDOVER_FILE).read_text())
    data["pid"] = 1  # init: not a child of this process
    (side.endpoint.directory / early.HANDOVER_FILE).write_text(json.dumps(data))
    handover_env.setenv(AB_HANDOVER_ENV, str(side.endpoint.directory))
    assert early.take_over() is None
    assert len(_git(repo, "worktree", "list").splitlines()) == 1
    assert not side.endpoint.directory.exists()


def test_a_broken_handover_is_ignored_and_its_folder_removed(handover_env: pytest.MonkeyPatch) -> None:
    folder = Endpoint.new().directory  # the hand-over folder as a run makes it
    (folder / early.HANDOVER_FILE).write_text("{not json")
    handover_env.setenv(AB_HANDOVER_ENV, str(folder))
    assert early.take_over() is None
    assert not folder.exists()


def test_a_handover_naming_a_folder_not_made_for_it_deletes_nothing(
        tmp_path: Path, handover_env: pytest.MonkeyPatch) -> None:
    # The variable names any folder (a user's, a typo, an attacker's choice): a bad
    # handover.json there must not make the run delete it.
    precious = tmp_path / "precious"
    precious.mkdir(mode=0o700)
    (precious / "keep.txt").write_text("data")
    (precious / early.HANDOVER_FILE).write_text("{not json")
    handover_env.setenv(AB_HANDOVER_ENV, str(precious))
    assert early.take_over() is None
    assert (precious / "keep.txt").read_text() == "data"


def test_a_handover_naming_a_foreign_worktree_deletes_only_its_own_folder(
        tmp_path: Path, handover_env: pytest.MonkeyPatch) -> None:
    precious = tmp_path / "project" / "base"
    precious.mkdir(parents=True)
    (precious / "keep.txt").write_text("data")
    endpoint = Endpoint.new()
    (endpoint.directory / early.HANDOVER_FILE).write_text(json.dumps({
        "pid": 1, "argv": ["x"], "log": str(tmp_path / "log"), "worktree": str(precious),
        "ref": "HEAD", "commit": "0" * 40, "repo": str(tmp_path), "authkey": "00"}))
    handover_env.setenv(AB_HANDOVER_ENV, str(endpoint.directory))
    assert early.take_over() is None
    assert (precious / "keep.txt").read_text() == "data"
    assert not endpoint.directory.exists()
