"""Disk and network bytes of the test process and of the service processes.

- Disk: ``read_bytes`` / ``write_bytes`` of ``/proc/<pid>/io`` (through psutil):
  what a process made the storage layer read or write (page-cache hits are not
  reads). For the services, the sum over their process trees as listed by
  ``service_pids()`` (Postgres' postmaster and backends, Redis).
- Network: the bytes this process's TCP connections sent (acknowledged by the
  peer) and received, read with ``getsockopt(TCP_INFO)`` on each of its
  sockets (``tcpi_bytes_acked`` / ``tcpi_bytes_received``, Linux 4.2+). A
  service's traffic with the test process is the mirror image of these;
  connections opened and closed between two readings are not counted (pools
  keep theirs open for the run). Unix-domain sockets are not network and are
  left out.

Counters are cumulative; a run's figures are differences of two readings.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable, Iterable
from typing import Any

import psutil

#: Offsets of tcpi_bytes_acked and tcpi_bytes_received in Linux's struct tcp_info.
_TCP_INFO_SIZE = 136
_BYTES_ACKED = 120
_BYTES_RECEIVED = 128
_TCP_INFO = getattr(socket, "TCP_INFO", 11)


def tcp_bytes_of_this_process() -> tuple[float, float] | None:
    """``(sent, received)`` bytes over this process's open TCP sockets (None if unreadable)."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    sent = received = 0
    for name in fds:
        try:
            fd = int(name)
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            dup = os.dup(fd)
        except (OSError, ValueError):
            continue
        try:
            sock = socket.socket(fileno=dup)
        except OSError:
            os.close(dup)
            continue
        try:
            if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
                continue
            raw = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_SIZE)
            if len(raw) >= _BYTES_RECEIVED + 8:
                sent += struct.unpack_from("Q", raw, _BYTES_ACKED)[0]
                received += struct.unpack_from("Q", raw, _BYTES_RECEIVED)[0]
        except OSError:
            continue
        finally:
            sock.detach()
            os.close(dup)
    return float(sent), float(received)


def _disk(pids: Iterable[int]) -> tuple[float, float] | None:
    read = write = 0.0
    seen = False
    for pid in set(pids):
        try:
            counters = psutil.Process(pid).io_counters()
        except (psutil.Error, AttributeError, OSError):
            continue
        read += counters.read_bytes
        write += counters.write_bytes
        seen = True
    return (read, write) if seen else None


class IOReader:
    """Cumulative I/O counters of this process and of the services ``service_pids()`` lists."""

    def __init__(self, service_pids: Callable[[], Iterable[int]] | None = None) -> None:
        self._service_pids = service_pids
        self._pids: list[int] = []

    def read(self, *, relist: bool = True) -> dict[str, float]:
        """The counters now: ``process_disk_read``/``_write``, ``process_net_sent``/``_received``,
        ``services_disk_read``/``_write`` (bytes; a key is missing where it cannot be read).

        ``relist``: list the service processes anew (a walk of ``/proc``, tens of
        milliseconds on a busy host); False reuses the last list, as the samples taken
        during a round do (a backend born during the round is counted from the next listing).
        """
        out: dict[str, float] = {}
        mine = _disk([os.getpid()])
        if mine is not None:
            out["process_disk_read"], out["process_disk_write"] = mine
        net = tcp_bytes_of_this_process()
        if net is not None:
            out["process_net_sent"], out["process_net_received"] = net
        if self._service_pids is not None:
            if relist:
                try:
                    self._pids = list(self._service_pids())
                except (psutil.Error, OSError):
                    self._pids = []
            theirs = _disk(self._pids) if self._pids else None
            if theirs is not None:
                out["services_disk_read"], out["services_disk_write"] = theirs
        return out


def io_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """``after - before`` in bytes for the counters both readings hold (never negative)."""
    return {k: max(0.0, after[k] - before[k]) for k in after if k in before}


def merge_io(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """The byte counts of several rounds summed."""
    out: dict[str, float] = {}
    for figures in rounds:
        for key, value in figures.items():
            if isinstance(value, (int, float)):
                out[key] = out.get(key, 0.0) + float(value)
    return out
