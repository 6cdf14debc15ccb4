"""The link between the two pytest processes of an A/B run.

A :class:`multiprocessing.connection.Listener` on a unix socket inside a private
directory (mode 0700) of the candidate, with a random authentication key that the
peer processes receive in their environment (never on a command line). Each peer
first names its participant (``base``, ``base.2``, ``candidate.2``...: one of the
run's, once); then one request at a time: it sends ``(method, args)`` and blocks
for the answer, which a thread of the candidate serves by calling the
:class:`Coordinator`.

The :class:`Endpoint` (directory, address, key) can be chosen before the
listener exists: the base may be started before the candidate re-executes
itself (:mod:`.early`), and its client then waits for the socket to appear.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from ..config import AB_ADDRESS_ENV as ADDRESS_ENV
from ..config import AB_AUTHKEY_ENV as AUTHKEY_ENV  # the link's key, in the base's environment only
from ..config import AB_PARTICIPANT_ENV as PARTICIPANT_ENV
from .coordinator import Coordinator, Participant

#: Methods of the coordinator the base may call.
ALLOWED = frozenset({"hello", "arrive", "turn", "done", "more", "finish", "test_finished"})
#: How long the base waits for the candidate's socket to appear (the candidate may be re-executing).
CONNECT_WAIT_S = 120.0


@dataclass(frozen=True)
class Endpoint:
    """Where the link listens and the key that authenticates it."""

    directory: Path  # private (mode 0700), removed with the link
    authkey: bytes

    @property
    def address(self) -> str:
        return str(self.directory / "peer.sock")

    @classmethod
    def new(cls) -> Endpoint:
        return cls(Path(tempfile.mkdtemp(prefix="agentmem-ab-sock-")), secrets.token_bytes(32))

    def environment(self, participant: Participant = "base") -> dict[str, str]:
        """What a peer process needs to connect, as ``participant``."""
        return {ADDRESS_ENV: self.address, AUTHKEY_ENV: self.authkey.hex(), PARTICIPANT_ENV: participant}

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class PeerServer:
    """Serves the peer processes' calls on the coordinator, a thread each."""

    def __init__(self, coordinator: Coordinator, endpoint: Endpoint | None = None) -> None:
        self.coordinator = coordinator
        self.endpoint = endpoint or Endpoint.new()
        self._listener = Listener(self.endpoint.address, family="AF_UNIX", authkey=self.endpoint.authkey)
        self._conns: list[Connection] = []
        self._joined: set[Participant] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._peers = [p for p in coordinator.members if p != "candidate"]
        self._thread = threading.Thread(target=self._accept, name="agentmem-ab-peer", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        for _ in self._peers:
            try:
                conn = self._listener.accept()
            except Exception as exc:  # noqa: BLE001 - closed listener, or a peer without the key
                if not self._closed:
                    self.coordinator.mark_gone(f"base side could not connect ({exc})")
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), name="agentmem-ab-peer-link", daemon=True).start()

    def _join(self, conn: Connection) -> Participant | None:
        """The participant a new connection says it is (one of the run's, not taken yet)."""
        try:
            method, args = conn.recv()
        except (EOFError, OSError, ValueError, TypeError):  # gone, or not a (method, args) pair
            return None
        who = args[0] if method == "join" and isinstance(args, tuple) and len(args) == 1 else None
        who = who if isinstance(who, str) else None
        with self._lock:
            if who not in self._peers or who in self._joined:
                conn.send(("error", f"expected to join as one of {', '.join(self._peers)}, got {who!r}"))
                return None
            self._joined.add(who)
        conn.send(("ok", None))
        return str(who)

    def _serve(self, conn: Connection) -> None:
        who = self._join(conn)
        if who is None:
            if not self._closed:
                self.coordinator.mark_gone("a peer process could not join the run")
            return
        finished = False
        try:
            while True:
                try:
                    method, args = conn.recv()
                except (EOFError, OSError):
                    break
                if method == "bye":  # the peer is done with every test: its closing is no loss
                    finished = True
                    conn.send(("ok", None))
                    continue
                if method not in ALLOWED:
                    conn.send(("error", f"unknown call {method!r}"))
                    continue
                try:
                    answer = getattr(self.coordinator, method)(who, *args)
                except Exception as exc:  # noqa: BLE001 - reported to the peer
                    conn.send(("error", f"{type(exc).__name__}: {exc}"))
                    continue
                conn.send(("ok", answer))
        finally:
            if not self._closed and not finished:
                self.coordinator.mark_gone(f"{who} side closed its connection")

    def close(self) -> None:
        self._closed = True
        self.coordinator.end("run ended")
        with self._lock:
            closers = [c.close for c in self._conns] + [self._listener.close]
        for closer in closers:
            try:
                closer()
            except OSError:
                pass
        self.endpoint.remove()


class PeerError(RuntimeError):
    """The candidate refused a call, or the link broke."""


def _connect(address: str, authkey: bytes, wait_s: float) -> Connection:
    """Connect, waiting up to ``wait_s`` for a socket that does not accept yet."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return Client(address, family="AF_UNIX", authkey=authkey)
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


class PeerClient:
    """A peer's end: the coordinator's methods, called over the socket as ``participant``."""

    def __init__(self, address: str, authkey: bytes, wait_s: float = CONNECT_WAIT_S,
                 participant: Participant = "base") -> None:
        self._conn = _connect(address, authkey, wait_s)
        self._lock = threading.Lock()
        self.participant = participant
        self.call("join", participant)

    @classmethod
    def from_environment(cls) -> PeerClient:
        address = os.environ.get(ADDRESS_ENV, "")
        key = os.environ.get(AUTHKEY_ENV, "")
        if not address or not key:
            raise PeerError(f"the A/B base side needs {ADDRESS_ENV} and {AUTHKEY_ENV}; it is started "
                            "by --agentmem-compare, not by hand")
        return cls(address, bytes.fromhex(key), participant=os.environ.get(PARTICIPANT_ENV) or "base")

    def call(self, method: str, *args: Any) -> Any:
        with self._lock:
            try:
                self._conn.send((method, args))
                status, answer = self._conn.recv()
            except (EOFError, OSError) as exc:
                raise PeerError(f"lost the link to the candidate side ({exc})") from None
        if status != "ok":
            raise PeerError(str(answer))
        return answer

    def close(self) -> None:
        """Say goodbye (this side is done: its closing is no loss), then close."""
        try:
            self.call("bye")
        except PeerError:
            pass
        try:
            self._conn.close()
        except OSError:
            pass
