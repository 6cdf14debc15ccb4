"""Download LoCoMo's ``locomo10.json`` from its public repository and check its sha256.

::

    python -m pytest_agentmem.datasets.locomo download [--to PATH] [--url URL]

The data (CC BY-NC 4.0) is never shipped with this package: each user fetches it
once. The file is streamed into a temporary file beside the target while its
sha256 is computed; only a file with the expected hash is moved into place
(atomically), anything else is removed, so an interrupted or corrupted download
never leaves a file the scenario would read. Without ``--to`` the file goes where
the LoCoMo scenario looks (:func:`~.locomo.download_target`).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from .._files import atomic_writer
from ..errors import AgentmemError

#: The raw file in LoCoMo's public repository (github.com/snap-research/locomo).
URL = "https://raw.githubusercontent.com/snap-research/locomo/main/data/locomo10.json"
#: Refuse to read more than this (the file is 2,805,274 bytes).
MAX_BYTES = 64 * 1024 * 1024
COMMAND = "python -m pytest_agentmem.datasets.locomo download"


class LocomoDownloadError(AgentmemError):
    """The download failed or gave another file; nothing was left at the target."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(target: Path, *, url: str = URL, sha256: str, timeout: float = 60.0) -> bool:
    """Fetch ``url`` to ``target`` if ``target`` does not already hold the file with ``sha256``.

    Returns ``True`` if it downloaded, ``False`` if the right file was already
    there. Raises :class:`LocomoDownloadError` (nothing written) if the URL cannot
    be read or its content has another hash.
    """
    target = Path(target)
    if target.is_file() and sha256_of(target) == sha256:
        return False
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LocomoDownloadError(f"cannot create {target.parent}: {exc}; pass another --to PATH") from None
    digest = hashlib.sha256()
    size = 0
    with atomic_writer(target, "wb", suffix=".part") as out:  # removed unless it is the right file
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - the user's URL
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    size += len(chunk)
                    if size > MAX_BYTES:
                        raise LocomoDownloadError(f"{url} sent more than {MAX_BYTES:,} bytes: not LoCoMo's "
                                                  "locomo10.json (2.8 MB); check --url")
                    digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise LocomoDownloadError(
                f"cannot download {url}: {reason}. Download data/locomo10.json from "
                f"github.com/snap-research/locomo by other means and pass its path with "
                f"--agentmem-locomo PATH (or $AGENTMEM_LOCOMO); or retry with --url") from None
        got = digest.hexdigest()
        if got != sha256:
            raise LocomoDownloadError(f"{url} gave {size:,} bytes with sha256 {got}, expected {sha256}: "
                                      "another version of LoCoMo or a corrupted download; it was removed")
    return True


def main(argv: Sequence[str] | None, *, sha256: str, default_target: Callable[[], Path]) -> int:
    """The command line (``download [--to PATH] [--url URL]``); returns the exit status.

    ``sha256`` is the expected hash and ``default_target()`` the path written without
    ``--to`` (:mod:`.locomo` passes its own, so this module does not import it).
    """
    parser = argparse.ArgumentParser(
        prog="python -m pytest_agentmem.datasets.locomo",
        description="Fetch LoCoMo's locomo10.json (CC BY-NC 4.0) and check its sha256.")
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("download", help="download locomo10.json where the LoCoMo scenario looks")
    fetch.add_argument("--to", type=Path, default=None, metavar="PATH",
                       help="where to write it (default: $AGENTMEM_LOCOMO, else locomo10.json in "
                            "$AGENTMEM_CACHE_DIR, ~/.cache/pytest-agentmem)")
    fetch.add_argument("--url", default=URL, help=f"where to download it from (default {URL})")
    fetch.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server")
    args = parser.parse_args(argv)
    target = (args.to if args.to is not None else default_target()).expanduser()
    try:
        fetched = download(target, url=args.url, sha256=sha256, timeout=args.timeout)
    except LocomoDownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{'downloaded' if fetched else 'already there'}: {target} (sha256 {sha256[:12]}... ok)")
    if args.to is not None and target.resolve() != default_target().expanduser().resolve():
        print(f"the LoCoMo scenario reads it with: pytest --agentmem-locomo {target} "
              f"(or AGENTMEM_LOCOMO={target})")
    return 0
