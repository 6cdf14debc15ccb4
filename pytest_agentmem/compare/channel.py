"""The link between the two pytest processes of an A/B run.

A :class:`multiprocessing.connection.Listener` on a unix socket inside a private
directory (mode 0700) of the candidate, with a random authentication key that the
base process receives in its environment (never on a command line). One
request at a time: the base sends ``(method, args)`` and blocks for the answer;
a thread of the candidate serves it by calling the :class:`Coordinator`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from ..config import AB_ADDRESS_ENV as ADDRESS_ENV
from ..config import AB_AUTHKEY_ENV as AUTHKEY_ENV  # the link's key, in the base's environment only
from .coordinator import Coordinator

#: Methods of the coordinator the base may call.
ALLOWED = frozenset({"hello", "arrive", "turn", "done", "more", "finish", "test_finished"})


class PeerServer:
    """Serves the base process's calls on the coordinator, in a thread."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self._dir = Path(tempfile.mkdtemp(prefix="agentmem-ab-sock-"))
        self.address = str(self._dir / "peer.sock")
        self.authkey = secrets.token_bytes(32)
        self._listener = Listener(self.address, family="AF_UNIX", authkey=self.authkey)
        self._conn: Connection | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="agentmem-ab-peer", daemon=True)
        self._thread.start()

    def environment(self) -> dict[str, str]:
        """What the base process needs to connect."""
        return {ADDRESS_ENV: self.address, AUTHKEY_ENV: self.authkey.hex()}

    def _serve(self) -> None:
        try:
            conn = self._listener.accept()
        except Exception as exc:  # noqa: BLE001 - closed listener, or a peer without the key
            if not self._closed:
                self.coordinator.mark_gone(f"base side could not connect ({exc})")
            return
        self._conn = conn
        try:
            while True:
                try:
                    method, args = conn.recv()
                except (EOFError, OSError):
                    break
                if method not in ALLOWED:
                    conn.send(("error", f"unknown call {method!r}"))
                    continue
                try:
                    answer = getattr(self.coordinator, method)("base", *args) if method != "hello" \
                        else self.coordinator.hello(*args)
                except Exception as exc:  # noqa: BLE001 - reported to the peer
                    conn.send(("error", f"{type(exc).__name__}: {exc}"))
                    continue
                conn.send(("ok", answer))
        finally:
            if not self._closed:
                self.coordinator.mark_gone("base side closed its connection")

    def close(self) -> None:
        self._closed = True
        self.coordinator.end("run ended")
        for closer in (getattr(self._conn, "close", None), self._listener.close):
            try:
                if closer is not None:
                    closer()
            except OSError:
                pass
        shutil.rmtree(self._dir, ignore_errors=True)


class PeerError(RuntimeError):
    """The candidate refused a call, or the link broke."""


class PeerClient:
    """The base's end: the coordinator's methods, called over the socket."""

    def __init__(self, address: str, authkey: bytes) -> None:
        self._conn = Client(address, family="AF_UNIX", authkey=authkey)
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls) -> PeerClient:
        address = os.environ.get(ADDRESS_ENV, "")
        key = os.environ.get(AUTHKEY_ENV, "")
        if not address or not key:
            raise PeerError(f"the A/B base side needs {ADDRESS_ENV} and {AUTHKEY_ENV}; it is started "
                            "by --agentmem-compare, not by hand")
        return cls(address, bytes.fromhex(key))

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
        try:
            self._conn.close()
        except OSError:
            pass
