"""The LoCoMo download command, against local ``file://`` URLs (no internet here),
and the ``--agentmem-locomo`` option."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_agentmem.datasets.locomo import DOWNLOAD_COMMAND, SHA256, download_target, locomo_path, main
from pytest_agentmem.datasets.locomo_download import LocomoDownloadError, download


@pytest.fixture
def good_file(pytestconfig: pytest.Config) -> Path:
    path = locomo_path(rootdir=pytestconfig.rootpath)
    if not path.is_file():
        pytest.skip(f"no LoCoMo file to serve from a file:// URL (looked at {path})")
    return path


@pytest.fixture
def bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "served" / "locomo10.json"
    path.parent.mkdir()
    path.write_bytes(b'[{"sample_id": "not LoCoMo"}]' * 1000)
    return path


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_downloads_a_good_file_and_keeps_it(good_file: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "data" / "locomo10.json"
    assert main(["download", "--to", str(target), "--url", good_file.as_uri()]) == 0
    assert target.read_bytes() == good_file.read_bytes()
    assert _leftovers(target.parent) == ["locomo10.json"]
    out = capsys.readouterr().out
    assert f"downloaded: {target}" in out and f"--agentmem-locomo {target}" in out
    # Once there, it is not fetched again (the URL is not even read).
    assert main(["download", "--to", str(target), "--url", "file:///nowhere/at/all.json"]) == 0
    assert "already there" in capsys.readouterr().out


def test_a_corrupted_file_is_refused_and_removed(bad_file: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "data" / "locomo10.json"
    assert main(["download", "--to", str(target), "--url", bad_file.as_uri()]) == 1
    err = capsys.readouterr().err
    assert f"expected {SHA256}" in err and "removed" in err
    assert _leftovers(target.parent) == []


def test_a_wrong_file_already_at_the_target_is_replaced_only_by_a_good_one(
        good_file: Path, bad_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "locomo10.json"
    target.write_text("old")
    with pytest.raises(LocomoDownloadError, match="sha256"):
        download(target, url=bad_file.as_uri(), sha256=SHA256)
    assert target.read_text() == "old" and _leftovers(tmp_path) == ["locomo10.json", "served"]
    assert download(target, url=good_file.as_uri(), sha256=SHA256) is True
    assert target.read_bytes() == good_file.read_bytes()


@pytest.mark.parametrize("url", ["file:///nonexistent/locomo10.json", "http://127.0.0.1:9/locomo10.json",
                                 "not a url"])
def test_an_unreachable_url_is_a_clear_error_and_leaves_nothing(url: str, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "data" / "locomo10.json"
    assert main(["download", "--to", str(target), "--url", url, "--timeout", "5"]) == 1
    err = capsys.readouterr().err
    assert f"cannot download {url}" in err and "--agentmem-locomo PATH" in err
    assert _leftovers(target.parent) == []


def test_the_command_line_writes_where_the_scenario_looks(bad_file: Path, tmp_path: Path) -> None:
    """``python -m pytest_agentmem.datasets.locomo download`` as a user runs it (default target)."""
    env = {**os.environ, "AGENTMEM_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(Path(__file__).parent.parent)}
    env.pop("AGENTMEM_LOCOMO", None)
    run = subprocess.run([sys.executable, "-m", "pytest_agentmem.datasets.locomo", "download",
                          "--url", bad_file.as_uri()], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "expected " + SHA256 in run.stderr, run.stderr
    assert _leftovers(tmp_path / "cache") == []
    run = subprocess.run([sys.executable, "-m", "pytest_agentmem.datasets.locomo", "--help"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "download" in run.stdout


def test_default_target_and_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTMEM_LOCOMO", raising=False)
    monkeypatch.setenv("AGENTMEM_CACHE_DIR", str(tmp_path / "cache"))
    assert download_target() == tmp_path / "cache" / "locomo10.json"
    root = tmp_path / "project"
    root.mkdir()
    assert locomo_path(rootdir=root) == download_target()  # no shared copy: the download place
    shared = tmp_path / "shared" / "data" / "locomo10.json"
    shared.parent.mkdir(parents=True)
    shared.write_text("[]")
    assert locomo_path(rootdir=root).resolve() == shared.resolve()
    monkeypatch.setenv("AGENTMEM_LOCOMO", str(tmp_path / "mine.json"))
    assert download_target() == locomo_path(rootdir=root) == tmp_path / "mine.json"
    assert locomo_path(tmp_path / "given.json", rootdir=root) == tmp_path / "given.json"


def _scenario_project(pytester: pytest.Pytester) -> None:
    # A stand-in memory_service: the scenario skips before it touches it.
    pytester.makeconftest("import pytest\n\n@pytest.fixture\ndef memory_service():\n    return object()\n")
    pytester.makepyfile(test_locomo_scenario="from pytest_agentmem.scenarios.locomo import *  # noqa\n")


def test_the_scenario_skip_names_the_download_command(pytester: pytest.Pytester, tmp_path: Path) -> None:
    _scenario_project(pytester)
    result = pytester.runpytest("--agentmem-perf", "-rs", f"--agentmem-locomo={tmp_path / 'missing.json'}")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([f"*missing.json*`{DOWNLOAD_COMMAND}`*--agentmem-locomo PATH*"])


@pytest.mark.parametrize("where", ["option", "ini", "env"])
def test_the_locomo_option_command_line_over_ini_over_environment(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    _scenario_project(pytester)
    monkeypatch.setenv("AGENTMEM_LOCOMO", "from-env.json")
    if where in ("ini", "option"):
        pytester.makeini("[pytest]\nagentmem_locomo = from-ini.json\n")
    args = ["--agentmem-perf", "-rs"] + (["--agentmem-locomo=from-option.json"] if where == "option" else [])
    result = pytester.runpytest(*args)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([f"*not found at {pytester.path / f'from-{where}.json'}*"])


def test_the_variable_is_read_outside_pytest_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_agentmem.config import env_value

    monkeypatch.setenv("AGENTMEM_LOCOMO", "~/data/locomo10.json")
    assert env_value("AGENTMEM_LOCOMO") == Path("~/data/locomo10.json").expanduser()
