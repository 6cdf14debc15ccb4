"""The lost-write audit after a load run: adds and updates, read back through the service's API.

Every acknowledged add and update must be readable with the memory's last
acknowledged content; the audit reads through ``get`` only, so it checks a
user's own system as well as the shipped service.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from pytest_agentmem.memory.audit import WriteLog, accepted_contents, audit
from pytest_agentmem.memory.service import MemoryService


class Notes:
    """A user's system reduced to what the audit uses: add, update, get (None when missing)."""

    def __init__(self) -> None:
        self.rows: dict[str, str] = {}
        self.fail_after_commit = False

    async def add(self, text: str, **scopes: Any) -> Any:
        memory_id = f"m{len(self.rows)}"
        self.rows[memory_id] = text
        return type("Stored", (), {"id": memory_id, "content": text})()

    async def update(self, memory_id: str, text: str) -> Any:
        self.rows[memory_id] = text
        if self.fail_after_commit:
            raise ConnectionError("connection lost before the answer")
        return None

    async def get(self, memory_id: str) -> Any:
        text = self.rows.get(memory_id)
        return None if text is None else type("Stored", (), {"id": memory_id, "content": text})()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_audit_finds_a_lost_and_a_wrong_write_through_the_service(memory_repo: Any,
                                                                            embedder: Any) -> None:
    service = MemoryService(memory_repo, embedder.per_test())
    log = WriteLog()
    kept = await log.add(service, "Alice has a grey cat called Pixel", user_id="u")
    await log.update(service, kept.id, "Alice has a grey cat called Pixel and a dog")
    await log.update(service, kept.id, "Alice has a dog called Max")
    lost = await log.add(service, "Bob is travelling to Japan", user_id="u")
    wrong = await log.add(service, "Carmen works as a nurse", user_id="u")
    clean = await audit(log, service)
    assert (clean.acknowledged, clean.found, clean.wrong) == (5, 5, 0), clean
    assert str(clean).startswith("acknowledged 5, found 5, wrong 0")

    await memory_repo.delete(lost.id)  # behind the service's back
    await memory_repo.update(wrong.id, content="Carmen works as a pilot")  # likewise
    report = await audit(log, service)
    assert (report.acknowledged, report.found, report.lost, report.changed) == (5, 3, 1, 1), report
    with pytest.raises(AssertionError, match="acknowledged 5, found 3, wrong 2") as failed:
        report.assert_clean()
    assert f"changed: {wrong.id}: 'Carmen works as a pilot' != 'Carmen works as a nurse'" in str(failed.value)
    assert f"lost (before the faults): w3 add {lost.id}" in str(failed.value)


@pytest.mark.asyncio
async def test_a_memory_must_hold_its_last_acknowledged_version() -> None:
    notes, log = Notes(), WriteLog()
    memory = await log.add(notes, "v0")
    for version in ("v1", "v2"):
        await log.update(notes, memory.id, version)
    assert (await audit(log, notes)).ok
    notes.rows[memory.id] = "v1"  # an older acknowledged version came back
    report = await audit(log, notes)
    assert (report.acknowledged, report.found, report.changed) == (3, 2, 1)
    notes.rows.clear()  # the user's get answers None: lost, every write of it
    report = await audit(log, notes)
    assert (report.acknowledged, report.found, report.lost) == (3, 0, 3)


@pytest.mark.asyncio
async def test_an_update_in_flight_may_have_landed() -> None:
    notes, log = Notes(), WriteLog()
    memory = await log.add(notes, "v0")
    notes.fail_after_commit = True
    with pytest.raises(ConnectionError):
        await log.update(notes, memory.id, "v1")  # committed, but never acknowledged
    report = await audit(log, notes)
    assert (report.acknowledged, report.found, report.wrong) == (1, 1, 0), report
    notes.rows[memory.id] = "v0"  # or it did not land: both are right
    assert (await audit(log, notes)).ok


@pytest.mark.asyncio
async def test_updates_of_memories_added_before_the_log_are_checked() -> None:
    notes, log = Notes(), WriteLog()
    seeded = await notes.add("seeded")  # not logged (a data set loaded before the run)
    await log.update(notes, seeded.id, "updated")
    assert (await audit(log, notes)).ok
    notes.rows[seeded.id] = "seeded"
    report = await audit(log, notes)
    assert (report.acknowledged, report.changed) == (1, 1)


def test_overlapping_acknowledged_updates_accept_either_order() -> None:
    log = WriteLog()
    now = time.monotonic()
    first, second = log._begin("update", "m"), log._begin("update", "m")
    first.content, first.started, first.acked = "a", now, now + 2.0  # the two calls overlapped
    second.content, second.started, second.acked = "b", now + 1.0, now + 1.5
    last, accepted = accepted_contents([first, second])
    assert last == "a" and accepted == {"a", "b"}
