"""LoCoMo (Maharana et al., ACL 2024): long conversations with evidence-annotated questions.

The data (CC BY-NC 4.0) is never copied into this package; it is read from a
path given (``--agentmem-locomo`` / ini ``agentmem_locomo`` / ``$AGENTMEM_LOCOMO``),
else ``../shared/data/locomo10.json`` seen from the pytest rootdir if it is there,
else ``locomo10.json`` in ``$AGENTMEM_CACHE_DIR``, where the download command puts it::

    python -m pytest_agentmem.datasets.locomo download [--to PATH] [--url URL]

Its sha256 is checked (:mod:`.locomo_download` fetches and checks it). :func:`evidence_recall` computes
LoCoMo's own retrieval metric: store every turn as a memory of its conversation,
search with the question, count the fraction of the question's evidence turns
among the top k.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AgentmemError

SHA256 = "79fa87e90f04081343b8c8debecb80a9a6842b76a7aa537dc9fdf651ea698ff4"
ENV_VAR = "AGENTMEM_LOCOMO"
FILE_NAME = "locomo10.json"
DEFAULT_RELATIVE = Path("..") / "shared" / "data" / FILE_NAME
DOWNLOAD_COMMAND = "python -m pytest_agentmem.datasets.locomo download"
_EVIDENCE = re.compile(r"D\d+:\d+")
_SESSION = re.compile(r"^session_(\d+)$")


class LocomoMissing(AgentmemError, FileNotFoundError):
    """The LoCoMo file is not where we looked; tests should skip with this message."""


@dataclass(frozen=True)
class Turn:
    conversation_id: str
    dia_id: str
    speaker: str
    text: str
    session: int
    session_date: str


@dataclass(frozen=True)
class Question:
    conversation_id: str
    question: str
    answer: str | None
    evidence: tuple[str, ...]
    category: int


@dataclass(frozen=True)
class Locomo:
    turns: tuple[Turn, ...]
    questions: tuple[Question, ...]
    skipped_questions: int

    @property
    def conversations(self) -> list[str]:
        return sorted({t.conversation_id for t in self.turns})

    def turns_of(self, conversation_id: str) -> list[Turn]:
        return [t for t in self.turns if t.conversation_id == conversation_id]


def download_target() -> Path:
    """Where the download command writes by default: ``$AGENTMEM_LOCOMO`` if set, else
    ``locomo10.json`` in ``$AGENTMEM_CACHE_DIR`` (``~/.cache/pytest-agentmem``)."""
    from ..config import env_value

    explicit = env_value(ENV_VAR)
    return Path(explicit) if explicit is not None else Path(env_value("AGENTMEM_CACHE_DIR")) / FILE_NAME


def locomo_path(path: str | os.PathLike[str] | None = None, *, rootdir: str | os.PathLike[str] | None = None) -> Path:
    """Where the data is: ``path``, else ``$AGENTMEM_LOCOMO``, else ``rootdir/../shared/data``
    if the file is there, else the download command's default (:func:`download_target`)."""
    if path is not None:
        return Path(path)
    from ..config import env_value

    if env_value(ENV_VAR) is not None:
        return download_target()
    shared = Path(rootdir if rootdir is not None else os.getcwd()) / DEFAULT_RELATIVE
    return shared if shared.is_file() else download_target()


def load_locomo(path: str | os.PathLike[str] | None = None, *, rootdir: str | os.PathLike[str] | None = None,
                categories: Iterable[int] | None = None, verify: bool = True) -> Locomo:
    """Read and check LoCoMo; ``categories`` keeps only those question categories (1-5).

    Raises :class:`LocomoMissing` if the file is absent and :class:`AgentmemError`
    if its checksum differs (another version: figures would not compare).
    """
    where = locomo_path(path, rootdir=rootdir)
    if not where.is_file():
        raise LocomoMissing(f"LoCoMo data not found at {where}: get it (CC BY-NC 4.0, not shipped) with "
                            f"`{DOWNLOAD_COMMAND}`, or give its path with --agentmem-locomo PATH "
                            f"(or ${ENV_VAR})")
    raw = where.read_bytes()
    if verify:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != SHA256:
            raise AgentmemError(f"{where} has sha256 {digest}, expected {SHA256}: another version of "
                                "LoCoMo; pass verify=False to use it anyway")
    return parse_locomo(json.loads(raw), categories=categories)


def parse_locomo(samples: Sequence[dict[str, Any]], *, categories: Iterable[int] | None = None) -> Locomo:
    wanted = None if categories is None else set(categories)
    turns: list[Turn] = []
    questions: list[Question] = []
    skipped = 0
    for sample in samples:
        cid = str(sample["sample_id"])
        conversation = sample["conversation"]
        known = set()
        sessions = sorted((int(m.group(1)), key) for key in conversation
                          if (m := _SESSION.match(key)))
        for number, key in sessions:
            date = str(conversation.get(f"{key}_date_time", ""))
            for turn in conversation[key]:
                text = str(turn.get("text", ""))
                if turn.get("blip_caption"):
                    text = f"{text} [shares a photo: {turn['blip_caption']}]"
                turns.append(Turn(cid, str(turn["dia_id"]), str(turn["speaker"]), text, number, date))
                known.add(str(turn["dia_id"]))
        for qa in sample.get("qa", ()):
            category = int(qa.get("category", 0))
            if wanted is not None and category not in wanted:
                continue
            ids = tuple(dict.fromkeys(_EVIDENCE.findall(" ".join(map(str, qa.get("evidence") or ())))))
            if not ids or any(i not in known for i in ids):
                skipped += 1
                continue
            answer = qa.get("answer", qa.get("adversarial_answer"))
            questions.append(Question(cid, str(qa["question"]), None if answer is None else str(answer),
                                      ids, category))
    return Locomo(tuple(turns), tuple(questions), skipped)


SearchFn = Callable[[str, str, int], "Awaitable[Sequence[str]] | Sequence[str]"]


async def evidence_recall(data: Locomo, search: SearchFn, *, k: int = 10,
                          questions: Sequence[Question] | None = None) -> float:
    """Mean fraction of each question's evidence dia_ids among the top ``k``.

    ``search(question, conversation_id, k)`` returns the dia_ids of the turns it
    found, best first (sync or async); store each turn with its dia_id first.
    """
    chosen = data.questions if questions is None else questions
    if not chosen:
        raise ValueError("no questions to score")
    total = 0.0
    for q in chosen:
        found = search(q.question, q.conversation_id, k)
        if inspect.isawaitable(found):
            found = await found
        top = set(list(found)[:k])
        total += sum(1 for e in q.evidence if e in top) / len(q.evidence)
    return total / len(chosen)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pytest_agentmem.datasets.locomo download [--to PATH] [--url URL]``."""
    from .locomo_download import main as command

    return command(argv, sha256=SHA256, default_target=download_target)


if __name__ == "__main__":
    sys.exit(main())
