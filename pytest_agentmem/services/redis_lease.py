"""A database of a shared (external) Redis, leased by this run so no other run empties it.

``redis_client`` empties its database before every test; on a Redis that
several runs share (CI jobs in containers, whose pids repeat), two runs on one
database would wipe each other's data mid-test. Each run therefore leases a
database: it holds one connection selected on it, named
``agentmem-lease-<run id>``. Another run sees that connection in ``CLIENT
LIST`` and moves on to the next database; of two runs that arrive at once, the
one whose lease connection is older (smaller client id) keeps the database. A
lease ends with its connection, so a run killed outright leaves no lock behind.
Nothing is written into the database itself.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import ServiceStartError
from ..redact import redact_url

LEASE_PREFIX = "agentmem-lease-"
#: How many databases up from the preferred one a lease is looked for (the server's
#: own limit, 16 by default, ends the search sooner).
DEFAULT_DATABASES = 256


def with_db(url: str, db: int) -> str:
    """``url`` selecting database ``db``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def preferred_db(url: str, worker_id: str) -> int:
    """The URL's database plus the pytest-xdist worker's index (``gw3`` -> +3)."""
    match = re.search(r"(\d+)$", worker_id or "")
    offset = int(match.group(1)) if match else 0
    return int(urlsplit(url).path.strip("/") or 0) + offset


class RedisLease:
    """Holds this run's database on a shared Redis until :meth:`release`."""

    def __init__(self, url: str, run_id: str, *, first_db: int, databases: int = DEFAULT_DATABASES) -> None:
        self.url = url
        self.name = f"{LEASE_PREFIX}{run_id}"
        self.first_db = first_db
        self.databases = databases
        self.db: int | None = None
        self._conn: Any = None

    def acquire(self) -> int:
        """Lease the first database from ``first_db`` up that no other run holds; return it."""
        import redis

        if self.db is not None:
            return self.db
        for db in range(self.first_db, self.first_db + self.databases):
            conn = redis.Redis.from_url(with_db(self.url, db), single_connection_client=True,
                                        client_name=self.name, socket_timeout=10)
            try:
                mine = int(conn.client_id())
                clients = conn.client_list()
            except redis.exceptions.ResponseError as exc:
                conn.close()
                if "out of range" in str(exc).lower():
                    break  # past the server's last database
                # CLIENT is not allowed to this user: no lease possible, use the preferred database.
                self.db = self.first_db
                return self.db
            rivals = [int(c["id"]) for c in clients
                      if str(c.get("name", "")).startswith(LEASE_PREFIX) and c.get("name") != self.name
                      and int(c.get("db", -1)) == db]
            if all(mine < rival for rival in rivals):
                self.db, self._conn = db, conn
                return db
            conn.close()
        raise ServiceStartError(
            f"no free database on the shared Redis at {redact_url(self.url)}: every database from "
            f"{self.first_db} up is leased by another run",
            hint="give each run its own Redis (or a URL with a database number no other run uses), "
                 "or raise the server's 'databases' setting")

    def release(self) -> None:
        """End the lease (closes its connection)."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn, self.db = None, None
