"""LoCoMo evidence recall: the public long-term conversational memory benchmark.

::

    from pytest_agentmem.scenarios.locomo import *  # noqa: F401,F403

Every turn of each conversation is stored as a memory of that conversation,
as ``"<speaker>: <text>"`` (who said it is part of what is remembered; without
it recall@10 falls from 0.45 to 0.31 with the default model), with ``user_id`` =
the conversation id and ``metadata["dia_id"]`` = the turn id; each
question of categories 1-4 is searched in its conversation (once for quality; then,
reworded each time so no cache answers, under load for speed), and the
fraction of its evidence turns among the top k is LoCoMo's retrieval metric
(reference on the same data, a plain TF-IDF retriever over raw turns: recall@5
0.413, recall@10 0.496, recall@25 0.597; the shipped service's hybrid search,
full-text fused with the embedding: 0.538, 0.641, 0.737).

Token savings: the tokens of the ``TOKEN_K`` memories retrieved for a question
against the tokens of its whole conversation (every turn, as stored), counted
with the embedding model's own tokenizer (:mod:`~pytest_agentmem.memory.tokens`),
recorded as ``token_savings`` (1 - retrieved/full, over all questions) with the
tokens per question. The data file is read from
``--agentmem-locomo PATH`` (ini ``agentmem_locomo``, ``$AGENTMEM_LOCOMO``), else
``../shared/data/locomo10.json`` next to the rootdir, else where
``python -m pytest_agentmem.datasets.locomo download`` puts it; the test skips
when it is missing, naming that command. ``$AGENTMEM_LOCOMO_CONVERSATIONS`` limits how many
of the 10 conversations are used (default: all).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from ..config import env_value
from ..datasets.locomo import LocomoMissing, load_locomo
from ..memory.embed_model import EmbedderMissingError
from ..memory.tokens import TokenCounter, token_savings
from ..session import get_session
from .sizing import AB_TOLERANCE

__all__ = ["test_agentmem_scenario_locomo_recall"]

KS = (5, 10, 25)
#: Memories a question puts in the model's context (token savings).
TOKEN_K = 10
#: Questions in flight in the quality pass.
QUALITY_CONCURRENCY = 16


@pytest.mark.agentmem_perf(max_error_rate=0.0, min_recall_at_10=0.60, min_token_savings=0.9,
                            compare_tolerance=AB_TOLERANCE)
async def test_agentmem_scenario_locomo_recall(memory_service: Any, perf: Any,
                                               pytestconfig: pytest.Config) -> None:
    """Store LoCoMo's turns, search its questions under load, score evidence recall@k and token savings."""
    try:
        data = load_locomo(get_session(pytestconfig).settings.locomo_path, rootdir=pytestconfig.rootpath,
                           categories=(1, 2, 3, 4))
        tokens = TokenCounter.load()
    except (LocomoMissing, EmbedderMissingError) as exc:
        pytest.skip(str(exc))
    limit = env_value("AGENTMEM_LOCOMO_CONVERSATIONS")
    conversations = data.conversations[:limit] if limit > 0 else data.conversations
    history_tokens = {}
    for conversation in conversations:
        turns = data.turns_of(conversation)
        texts = [f"{t.speaker}: {t.text}" for t in turns]
        history_tokens[conversation] = sum(tokens.count_many(texts))
        await memory_service.add_batch(texts, user_id=conversation,
                                       metadata=[{"dia_id": t.dia_id, "speaker": t.speaker} for t in turns])
    questions = [q for q in data.questions if q.conversation_id in set(conversations)]
    # what the figures measured: a baseline of other conversations is not compared with them
    perf.describe(dataset="locomo10", conversations=len(conversations), questions=len(questions),
                  memories=sum(len(data.turns_of(c)) for c in conversations))

    # Quality: every question once, as asked (16 at a time: the order does not matter).
    slots = asyncio.Semaphore(QUALITY_CONCURRENCY)

    async def answer(question: Any) -> list[Any]:
        async with slots:
            return list(await memory_service.search(question.question, user_id=question.conversation_id,
                                                    limit=max(KS)))

    answers = await asyncio.gather(*(answer(q) for q in questions))
    found = [[str(m.metadata.get("dia_id")) for m in memories] for memories in answers]
    retrieved_tokens = sum(sum(tokens.count_many(m.content for m in memories[:TOKEN_K])) for memories in answers)
    full_tokens = sum(history_tokens[q.conversation_id] for q in questions)
    recalls = {}
    for k in KS:
        scores = [sum(e in set(found[i][:k]) for e in q.evidence) / len(q.evidence)
                  for i, q in enumerate(questions)]
        recalls[f"recall_at_{k}"] = sum(scores) / len(scores)
    perf.record("locomo", **recalls)
    perf.record("locomo_tokens", token_savings=token_savings(retrieved_tokens, full_tokens),
                retrieved_tokens_per_question=retrieved_tokens / len(questions),
                history_tokens_per_question=full_tokens / len(questions))

    # Speed: the same questions under load, each worded anew (a counter that runs across
    # rounds), so no answer comes from a cache filled by the quality pass or a past round.
    asked = itertools.count()

    async def ask(i: int) -> None:
        n = next(asked)
        question = questions[n % len(questions)]
        await memory_service.search(f"{question.question} (asked {n})",
                                    user_id=question.conversation_id, limit=max(KS))

    result = await perf.run(ask, concurrency=16, total=min(len(questions), 800), name="locomo_search")
    assert result.errors == 0, result.errors_by_type
