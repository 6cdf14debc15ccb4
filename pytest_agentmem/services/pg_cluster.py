"""A fresh, password-protected PostgreSQL cluster for each local server.

initdb takes most of a server's start (~1 s here); copying its result takes a
tenth of that. So one cluster is made per binaries and server account, kept in
this user's private cache (mode 0700, checked with ``lstat`` before use: see
:mod:`.cache_dirs`), and copied for every server.

Access: host connections need a password (``scram-sha-256`` in pg_hba.conf;
there is no unix socket). The cached cluster's password is set at initdb from
a file (``--pwfile``, never a command line) and kept beside it (mode 0600).
Each server then gets its own random secret: the first connection replaces
the password with a SCRAM verifier computed here, so the new secret itself
never reaches the server, its log or any command line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import ServiceStartError
from .cache_dirs import trusted_entry
from .pg_install import HINT_INSTALL
from .procs import ManagedProcess

SCRAM_ITERATIONS = 4096
SECRET_FILE = "secret"


def new_secret() -> str:
    """A random password: 32 URL-safe characters (192 bits), no quoting needed in a DSN."""
    return secrets.token_urlsafe(24)


def scram_verifier(password: str, *, iterations: int = SCRAM_ITERATIONS, salt: bytes | None = None) -> str:
    """The ``SCRAM-SHA-256$...`` verifier PostgreSQL stores for ``password`` (RFC 5802/7677)."""
    salt = secrets.token_bytes(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _chown(path: Path, account: pwd.struct_passwd | None) -> None:
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)


def _initdb(bindir: Path, staging: Path, account: pwd.struct_passwd | None, secret: str,
            timeout: float) -> None:
    """initdb into ``staging/data`` as ``account``, with password auth for every connection."""
    datadir = staging / "data"
    datadir.mkdir(mode=0o700)
    _chown(datadir, account)
    pwfile = staging / "pwfile"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    _chown(pwfile, account)
    log_path = staging / "initdb.log"
    log_path.touch(mode=0o600)
    init = ManagedProcess([str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres",
                           f"--pwfile={pwfile}", "--auth-host=scram-sha-256",
                           "--auth-local=scram-sha-256", "--encoding=UTF8", "--no-sync",
                           "--locale=C", "--wal-segsize=1"],
                          log_path=log_path, run_as=account)
    try:
        code = init.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        code = -1
    init.stop(grace=0)
    pwfile.unlink()
    if code != 0:
        raise ServiceStartError(f"initdb failed (exit {code}) in {datadir}", log_tail=init.log_tail(),
                                hint="check disk space and that the temp dir allows exec; " + HINT_INSTALL)


def pristine_path(bindir: Path, account: pwd.struct_passwd | None, cache_root: Path) -> Path:
    """Where the cached cluster for these binaries and this server account lives."""
    uid = account.pw_uid if account else os.geteuid()
    stamp = (bindir / "postgres").stat().st_mtime_ns
    key = hashlib.sha256(f"{bindir}:{stamp}:{uid}:scram".encode()).hexdigest()[:12]
    return cache_root / f"pg-pristine-{key}"


def pristine_cluster(bindir: Path, account: pwd.struct_passwd | None, cache_root: Path,
                     timeout: float) -> Path:
    """The cached cluster for these binaries and account (made now if needed); a trusted directory.

    It holds ``data`` (owned by the server's account) and ``secret`` (ours,
    0600); the directory itself is ours and 0700, so no other account, the
    server's included, can reach or alter it.
    """
    pristine = pristine_path(bindir, account, cache_root)
    key = pristine.name.removeprefix("pg-pristine-")
    if trusted_entry(pristine):
        return pristine
    if pristine.exists() or pristine.is_symlink():  # half made or not ours: build elsewhere
        pristine = Path(tempfile.mkdtemp(prefix=f"pg-pristine-{key}-", dir=cache_root))
        pristine.rmdir()
    staging = Path(tempfile.mkdtemp(prefix="pg-pristine-staging-", dir=cache_root))
    try:
        staging.chmod(0o711)  # the account passes through to its data dir and pwfile
        secret = new_secret()
        _initdb(bindir, staging, account, secret, timeout)
        fd = os.open(staging / SECRET_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret)
        (staging / "initdb.log").unlink()
        (staging / ".complete").write_text("ok")
        staging.chmod(0o700)
        try:
            staging.rename(pristine)
        except OSError:
            if not trusted_entry(pristine):
                raise
    finally:  # another process may have won the race: its cluster is as good
        shutil.rmtree(staging, ignore_errors=True)
    return pristine


def clone_cluster(pristine: Path, datadir: Path) -> str:
    """Copy the cached cluster to ``datadir`` (which must not exist); return its password."""
    result = subprocess.run(["cp", "-a", str(pristine / "data"), str(datadir)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise ServiceStartError(f"could not copy the cached cluster {pristine}: {result.stderr.strip()}",
                                hint=f"remove {pristine} and run again")
    return (pristine / SECRET_FILE).read_text().strip()
