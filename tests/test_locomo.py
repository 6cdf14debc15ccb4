"""The LoCoMo loader and evidence recall (reads the shared data; skips without it)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest

from pytest_agentmem.datasets.locomo import (
    LocomoMissing,
    evidence_recall,
    load_locomo,
    locomo_path,
    parse_locomo,
)
from pytest_agentmem.errors import AgentmemError


@pytest.fixture(scope="module")
def locomo(pytestconfig: pytest.Config):  # type: ignore[no-untyped-def]
    try:
        return load_locomo(rootdir=pytestconfig.rootpath)
    except LocomoMissing as exc:
        pytest.skip(str(exc))


def test_counts_and_fields(locomo) -> None:  # type: ignore[no-untyped-def]
    assert len(locomo.turns) == 5882 and len(locomo.conversations) == 10
    assert locomo.conversations[0] == "conv-26"
    first = locomo.turns[0]
    assert (first.conversation_id, first.dia_id, first.speaker, first.session) == ("conv-26", "D1:1", "Caroline", 1)
    assert first.session_date and "Good to see you" in first.text
    assert len(locomo.questions) + locomo.skipped_questions == 1986
    assert 0 < locomo.skipped_questions < 20
    known = {(t.conversation_id, t.dia_id) for t in locomo.turns}
    assert all((q.conversation_id, e) in known for q in locomo.questions for e in q.evidence)


def test_category_filter(pytestconfig: pytest.Config, locomo) -> None:  # type: ignore[no-untyped-def]
    only = load_locomo(rootdir=pytestconfig.rootpath, categories=[1, 4])
    assert {q.category for q in only.questions} == {1, 4}
    assert len(only.questions) == sum(1 for q in locomo.questions if q.category in (1, 4))
    assert Counter(q.category for q in locomo.questions).keys() == {1, 2, 3, 4, 5}


def test_malformed_evidence_is_parsed_or_skipped() -> None:
    sample = {"sample_id": "c", "conversation": {
        "speaker_a": "A", "speaker_b": "B", "session_1_date_time": "d1",
        "session_1": [{"speaker": "A", "dia_id": "D1:1", "text": "hi"},
                      {"speaker": "B", "dia_id": "D1:2", "text": "look", "blip_caption": "a dog"}],
        "session_2": [{"speaker": "A", "dia_id": "D2:1", "text": "yo"}]},
        "qa": [{"question": "q1", "answer": "a", "evidence": ["D1:1; D1:2"], "category": 1},
               {"question": "q2", "answer": "a", "evidence": ["D:11:26"], "category": 1},
               {"question": "q3", "answer": "a", "evidence": ["D9:9"], "category": 2},
               {"question": "q4", "adversarial_answer": "x", "evidence": ["D2:1"], "category": 5}]}
    data = parse_locomo([sample])
    assert [q.evidence for q in data.questions] == [("D1:1", "D1:2"), ("D2:1",)]
    assert data.questions[1].answer == "x" and data.skipped_questions == 2
    assert "[shares a photo: a dog]" in data.turns[1].text and data.turns[2].session_date == ""


@pytest.mark.asyncio
async def test_evidence_recall_scores_sync_and_async_search() -> None:
    data = parse_locomo([{"sample_id": "c", "conversation": {
        "session_1": [{"speaker": "A", "dia_id": f"D1:{i}", "text": str(i)} for i in range(1, 5)]},
        "qa": [{"question": "q", "answer": "", "evidence": ["D1:1", "D1:2"], "category": 1}]}])

    def half(question: str, conversation: str, k: int) -> list[str]:
        return ["D1:2", "D1:3"][:k]

    async def none(question: str, conversation: str, k: int) -> list[str]:
        return []

    assert await evidence_recall(data, half, k=5) == 0.5
    assert await evidence_recall(data, half, k=1) == 0.5
    assert await evidence_recall(data, none) == 0.0
    assert math.isclose(await evidence_recall(data, lambda q, c, k: ["D1:1", "D1:2"]), 1.0)


def test_missing_file_and_wrong_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LocomoMissing, match="AGENTMEM_LOCOMO"):
        load_locomo(tmp_path / "nope.json")
    bad = tmp_path / "locomo.json"
    bad.write_text("[]")
    with pytest.raises(AgentmemError, match="sha256"):
        load_locomo(bad)
    assert load_locomo(bad, verify=False).turns == ()
    monkeypatch.setenv("AGENTMEM_LOCOMO", str(bad))
    assert locomo_path() == bad
    monkeypatch.delenv("AGENTMEM_LOCOMO")
    monkeypatch.setenv("AGENTMEM_CACHE_DIR", str(tmp_path / "cache"))
    # no ../shared/data copy next to the rootdir: where the download command puts it
    assert locomo_path(rootdir="/x/main") == tmp_path / "cache" / "locomo10.json"
