"""After a fault run: was anything acknowledged lost, anything deleted served, any cache wrong?

Record the workload's writes through a :class:`WriteLog` (it notes when each
write started and when it was acknowledged, or the error it ended with), then
:func:`audit` them against the store::

    log = WriteLog()
    async def op(i):
        if i % 4 == 0:
            await log.add(memory_service, f"note {i}", user_id="u")
        ...
    result, _ = await asyncio.gather(perf.run(op, ...), chaos())
    report = await audit(log, memory_service.repository, service=memory_service,
                         faults=agentmem_faults, queries=[("note 7", {"user_id": "u"})])
    report.assert_clean()   # "acknowledged 812, found 812, wrong 0, ..."

Updates are logged too (``await log.update(memory_service, memory_id, text)``):
each memory must hold the content of its last acknowledged write (add or
update); an update still in flight, or one whose call overlapped that last
one, may have landed instead (either content is accepted). Any other content
is ``changed``. Updates of memories added before the log began are checked the same way. ``acknowledged`` counts acknowledged writes (adds and
updates); those of a memory that is gone all count as lost.

The audit reads through ``target.get(memory_id)`` only (a missing memory: a
:class:`~.model.MemoryNotFoundError`, any ``KeyError`` or ``None``), so it
checks a user's own ``memory_service`` as well as a repository.

Writes are judged by when they were acknowledged against the faults' window
(from the first fault's start to the last one's end, ``time.monotonic``):

- acknowledged before the first fault: must be readable, whatever the fault
  (lost ones are ``lost_before_fault``; durability is off on test servers, see
  :mod:`pytest_agentmem.services.faults` for what a crash of Postgres may lose);
- acknowledged during or after the faults: must be readable (``lost_after``);
- in flight (the write raised or was cancelled): in doubt, the store may or may
  not hold it; counted (``in_doubt``) and, where the store can be listed, how
  many of them did land (``in_doubt_stored``), never counted as lost;
- acknowledged deletes: the memory must be gone from the store and from every
  search answer (``deleted_served``);
- each query of ``queries``: the service's answer (through its caches) must
  name the same memories as the store's own answer (``stale_reads``);
- the graph's loaded in-memory indexes must hold exactly the relations in
  Postgres (``graph_wrong``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .model import MemoryNotFoundError

#: The metadata key under which a WriteLog tags each memory it adds (to find in-flight writes).
AUDIT_KEY = "_agentmem_audit"


@dataclass
class Write:
    """One write as the client saw it (``time.monotonic`` times)."""

    key: str
    kind: str  # "add", "update" or "delete"
    started: float
    acked: float | None = None
    error: str | None = None
    memory_id: str | None = None
    content: str | None = None

    @property
    def in_flight(self) -> bool:
        """Not acknowledged: it raised, was cancelled, or never returned."""
        return self.acked is None


@dataclass
class WriteLog:
    """The writes of a workload, with when each was acknowledged (or how it failed)."""

    writes: list[Write] = field(default_factory=list)

    def _begin(self, kind: str, memory_id: str | None = None) -> Write:
        write = Write(key=f"w{len(self.writes)}", kind=kind, started=time.monotonic(), memory_id=memory_id)
        self.writes.append(write)
        return write

    async def add(self, target: Any, text: str, *, metadata: dict[str, Any] | None = None,
                  **scopes: Any) -> Any:
        """``await target.add(text, metadata=..., **scopes)`` (a MemoryService), logged."""
        write = self._begin("add")
        write.content = text
        try:
            memory = await target.add(text, metadata={**(metadata or {}), AUDIT_KEY: write.key}, **scopes)
        except BaseException as exc:
            write.error = f"{type(exc).__name__}: {exc}"[:200]
            raise
        write.acked = time.monotonic()
        write.memory_id = memory.id
        return memory

    async def update(self, target: Any, memory_id: str, text: str) -> Any:
        """``await target.update(memory_id, text)`` (a MemoryService), logged."""
        write = self._begin("update", memory_id)
        write.content = text
        try:
            memory = await target.update(memory_id, text)
        except BaseException as exc:
            write.error = f"{type(exc).__name__}: {exc}"[:200]
            raise
        write.acked = time.monotonic()
        return memory

    async def delete(self, target: Any, memory_id: str) -> None:
        """``await target.delete(memory_id)``, logged."""
        write = self._begin("delete", memory_id)
        try:
            await target.delete(memory_id)
        except BaseException as exc:
            write.error = f"{type(exc).__name__}: {exc}"[:200]
            raise
        write.acked = time.monotonic()

    def acknowledged_adds(self) -> list[Write]:
        return [w for w in self.writes if w.kind == "add" and not w.in_flight]

    def acknowledged(self) -> int:
        """How many adds and updates were acknowledged."""
        return sum(1 for w in self.writes if w.kind in ("add", "update") and not w.in_flight)


@dataclass
class AuditReport:
    """What :func:`audit` found; ``ok`` when nothing acknowledged was lost and nothing was wrong."""

    acknowledged: int = 0
    found: int = 0
    lost_before_fault: int = 0
    lost_after: int = 0
    changed: int = 0
    in_doubt: int = 0
    in_doubt_stored: int | None = None
    deleted: int = 0
    deleted_served: int = 0
    queries: int = 0
    stale_reads: int = 0
    graph_users: int = 0
    graph_wrong: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.lost_before_fault + self.lost_after

    @property
    def wrong(self) -> int:
        """Everything that should not be: lost or changed writes, deleted memories served,
        stale cached answers, graph index drift."""
        return self.lost + self.changed + self.deleted_served + self.stale_reads + self.graph_wrong

    @property
    def ok(self) -> bool:
        return self.wrong == 0

    def __str__(self) -> str:
        doubt = (f", in flight {self.in_doubt}" +
                 (f" ({self.in_doubt_stored} stored)" if self.in_doubt_stored is not None else ""))
        return (f"acknowledged {self.acknowledged}, found {self.found}, wrong {self.wrong} "
                f"(lost before fault {self.lost_before_fault}, lost after {self.lost_after}, "
                f"changed {self.changed}){doubt}; deleted {self.deleted}, served {self.deleted_served}; "
                f"queries {self.queries}, stale {self.stale_reads}; "
                f"graph users {self.graph_users}, wrong {self.graph_wrong}")

    def to_dict(self) -> dict[str, Any]:
        return {"acknowledged": self.acknowledged, "found": self.found, "lost": self.lost,
                "lost_before_fault": self.lost_before_fault, "lost_after": self.lost_after,
                "changed": self.changed, "in_doubt": self.in_doubt, "in_doubt_stored": self.in_doubt_stored,
                "deleted": self.deleted, "deleted_served": self.deleted_served, "queries": self.queries,
                "stale_reads": self.stale_reads, "graph_users": self.graph_users,
                "graph_wrong": self.graph_wrong, "wrong": self.wrong}

    def assert_clean(self) -> None:
        """Raise ``AssertionError`` with the report and its first problems unless ``ok``."""
        if not self.ok:
            raise AssertionError(f"audit: {self}\n" + "\n".join(self.problems[:20]))


def fault_window(faults: Any) -> tuple[float, float] | None:
    """``(first start, last end)`` of the faults in ``faults.history`` (or a list of them)."""
    history = list(getattr(faults, "history", faults) or [])
    if not history:
        return None
    now = time.monotonic()
    return (min(f.started for f in history),
            max(f.ended if f.ended is not None else now for f in history))


#: Reads the audit keeps in flight at once.
AUDIT_READS = 16


async def read_memory(target: Any, memory_id: str) -> Any:
    """``target.get(memory_id)``, or ``None`` when no memory has this id."""
    try:
        return await target.get(memory_id)
    except (MemoryNotFoundError, KeyError):
        return None


def accepted_contents(writes: Sequence[Write]) -> tuple[str | None, set[str | None]]:
    """(the last acknowledged content, every content the store may hold) of one memory's writes."""
    acked = [w for w in writes if not w.in_flight]
    last = max(acked, key=lambda w: w.acked or 0.0)
    accepted = {last.content}
    for w in writes:
        # an update in flight may have landed; one that overlapped the last may have committed after it
        if w.kind == "update" and (w.in_flight or (w.acked or 0.0) > last.started):
            accepted.add(w.content)
    return last.content, accepted


async def audit(log: WriteLog, repository: Any, *, service: Any = None, faults: Any = None,
                queries: Iterable[tuple[str, dict[str, Any]]] = (), graph: Any = None,
                graph_users: Sequence[str] = (), limit: int = 10) -> AuditReport:
    """Check the store against what ``log`` says was acknowledged (see the module doc).

    ``repository`` is anything with ``get(memory_id)``: a repository, or the
    ``memory_service`` itself (a user's system offers no more than its API).
    """
    report = AuditReport()
    window = fault_window(faults)
    first_fault = window[0] if window else float("inf")
    deletes = {w.memory_id: w for w in log.writes if w.kind == "delete"}
    deleted_ids = {mid for mid, w in deletes.items() if not w.in_flight}

    by_memory: dict[str, list[Write]] = {}
    for write in log.writes:
        # an acknowledged add, or an update (of a memory added before the log began, too);
        # a deleted memory is judged as a delete below (or in doubt when the delete was in flight)
        if ((write.kind == "add" and not write.in_flight or write.kind == "update")
                and write.memory_id is not None and write.memory_id not in deletes):
            by_memory.setdefault(write.memory_id, []).append(write)
    by_memory = {mid: writes for mid, writes in by_memory.items() if any(not w.in_flight for w in writes)}
    gate = asyncio.Semaphore(AUDIT_READS)

    async def read(memory_id: str) -> Any:
        async with gate:
            return await read_memory(repository, memory_id)

    ids = list(by_memory)
    stored = await asyncio.gather(*(read(mid) for mid in ids))
    for memory_id, memory in zip(ids, stored):
        writes = by_memory[memory_id]
        acked = [w for w in writes if not w.in_flight]
        report.acknowledged += len(acked)
        if memory is None:
            for write in acked:
                when = "before" if write.acked is not None and write.acked < first_fault else "during/after"
                if when == "before":
                    report.lost_before_fault += 1
                else:
                    report.lost_after += 1
                report.problems.append(f"lost ({when} the faults): {write.key} {write.kind} {memory_id}")
            continue
        expected, accepted = accepted_contents(writes)
        if memory.content in accepted:
            report.found += len(acked)
        else:
            report.found += len(acked) - 1
            report.changed += 1
            report.problems.append(f"changed: {memory_id}: {memory.content!r} != {expected!r} "
                                   "(its last acknowledged version)")

    for memory_id in deleted_ids:
        report.deleted += 1
        if await read_memory(repository, memory_id) is None:
            continue
        report.deleted_served += 1
        report.problems.append(f"deleted but still in the store: {memory_id}")

    in_flight = [w for w in log.writes if w.kind == "add" and w.in_flight]
    report.in_doubt = len(in_flight)
    if in_flight:
        keys = await stored_audit_keys(repository)
        if keys is not None:
            report.in_doubt_stored = sum(1 for w in in_flight if w.key in keys)

    for text, scopes in queries:
        report.queries += 1
        if service is None:
            continue
        served = await service.search(text, limit=limit, **scopes)
        uncached = getattr(service, "search_uncached", None)  # the same ranking (hybrid...), no cache
        if uncached is not None:
            truth = await uncached(text, limit=limit, **scopes)
        else:
            truth = await repository.search(await service.embedder.embed_one(text), limit=limit, **scopes)
        served_ids, true_ids = [m.id for m in served], [m.id for m in truth]
        gone = [mid for mid in served_ids if mid in deleted_ids]
        if gone:
            report.deleted_served += len(gone)
            report.problems.append(f"search {text!r} {scopes} served deleted memories {gone}")
        if set(served_ids) != set(true_ids):
            report.stale_reads += 1
            report.problems.append(f"search {text!r} {scopes}: served {len(served_ids)} ids, the store "
                                   f"answers {len(true_ids)}; {len(set(served_ids) - set(true_ids))} "
                                   "not in the store's answer")

    if graph is not None:
        for user in graph_users:
            loaded = getattr(graph, "_indexes", {}).get(user)
            if loaded is None:
                continue  # not loaded: the next query loads it from Postgres
            report.graph_users += 1
            held = {(loaded.names[s], loaded.predicates[p], loaded.names[o]) for s, p, o in loaded.edges}
            truth_rel = {tuple(r) for r in await graph.relations(user_id=user)}
            if held != truth_rel:
                report.graph_wrong += 1
                report.problems.append(f"graph index of {user!r}: {len(held - truth_rel)} relations not in "
                                       f"Postgres, {len(truth_rel - held)} missing")
    return report


async def stored_audit_keys(repository: Any) -> set[str] | None:
    """The audit keys of every memory in ``repository`` (Postgres repositories; else ``None``)."""
    pool, table = getattr(repository, "pool", None), getattr(repository, "table", None)
    if pool is None or not isinstance(table, str) or not hasattr(pool, "acquire"):
        return None
    async with pool.acquire() as conn:
        rows = await conn.fetch(f"SELECT metadata->>$1 FROM {table} WHERE metadata ? $1", AUDIT_KEY)
    return {row[0] for row in rows}
