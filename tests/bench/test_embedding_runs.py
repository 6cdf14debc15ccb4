"""The two runs of the offline all-MiniLM-L6-v2 side by side: quality and speed (issue 21).

    python -m pytest -p no:cacheprovider -q -s tests/bench/test_embedding_runs.py --agentmem-perf

``float`` is the shipped file as it is (onnxruntime folds its int8 weights into
float products); ``integer`` runs the same int8 weights on integer kernels
(:mod:`pytest_agentmem.memory.embed_quant`). Quality, on LoCoMo's turns (as the
LoCoMo scenario stores them, ``"<speaker>: <text>"``): the cosine of each turn's
integer embedding to its float one, and LoCoMo's dense evidence recall@10 of each
run (every question of categories 1-4 against its conversation's turns, exact
cosine top 10). Speed, the runs interleaved round by round in one process: texts/s
and CPU ms per text of one model run on one thread, in batches of 16 and one text
at a time, and the embedder's coalesced ceiling (single calls from 32 concurrent
callers, both cores) of each run. ``$AGENTMEM_RUNS_TURNS`` limits the turns
scored (default: all 5,882).
"""

from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from pytest_agentmem.datasets.locomo import LocomoMissing, load_locomo
from pytest_agentmem.memory.embed_model import RUNS
from pytest_agentmem.memory.embedder import Embedder, load_model
from pytest_agentmem.session import get_session

ROUNDS = 5
BATCH = 16
SPEED_TEXTS = 128
SINGLE_TEXTS = 32


def _embed(loaded: Any, texts: list[str], batch: int) -> np.ndarray:
    vectors = np.asarray(list(loaded.model.embed(texts, batch_size=batch)), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _embed_by_length(loaded: Any, texts: list[str], batch: int) -> np.ndarray:
    """``_embed`` with batches of similar lengths (less padding), in the order of ``texts``."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    vectors = _embed(loaded, [texts[i] for i in order], batch)
    out = np.empty_like(vectors)
    out[order] = vectors
    return out


def _dense_recall(data: Any, vectors: dict[str, np.ndarray], questions: dict[str, np.ndarray], k: int = 10) -> float:
    scores = []
    index = {t.dia_id + "@" + t.conversation_id: i for i, t in enumerate(data.turns)}
    for conversation in data.conversations:
        rows = [index[t.dia_id + "@" + conversation] for t in data.turns_of(conversation)]
        ids = [data.turns[r].dia_id for r in rows]
        for qi, q in enumerate(data.questions):
            if q.conversation_id != conversation:
                continue
            top = np.argsort(-(vectors["turns"][rows] @ questions[qi]))[:k]
            found = {ids[j] for j in top}
            scores.append(sum(e in found for e in q.evidence) / len(q.evidence))
    return float(np.mean(scores))


@pytest.mark.timeout(2400)
@pytest.mark.agentmem_perf(reference=False)
async def test_embedding_runs_quality_and_speed(perf: Any, pytestconfig: pytest.Config) -> None:
    try:
        data = load_locomo(get_session(pytestconfig).settings.locomo_path, rootdir=pytestconfig.rootpath,
                           categories=(1, 2, 3, 4))
    except LocomoMissing as exc:
        pytest.skip(str(exc))
    runs = {run: load_model(run=run, threads=1) for run in RUNS}
    assert runs["integer"].model_id != runs["float"].model_id
    turns = [f"{t.speaker}: {t.text}" for t in data.turns]
    limit = int(os.environ.get("AGENTMEM_RUNS_TURNS", "0") or 0)
    if limit:
        turns = turns[:limit]

    # Quality: the same turns and questions through both runs.
    with ThreadPoolExecutor(len(runs)) as pool:  # one model thread each
        embedded = dict(zip(runs, pool.map(lambda loaded: _embed_by_length(loaded, turns, BATCH), runs.values())))
    cosine = (embedded["integer"] * embedded["float"]).sum(axis=1)
    metrics: dict[str, float] = {"cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min()),
                                 "cosine_p1": float(np.percentile(cosine, 1)), "turns": len(turns)}
    if not limit:
        asked = [q.question for q in data.questions]
        with ThreadPoolExecutor(len(runs)) as pool:
            vectors = dict(zip(runs, pool.map(lambda loaded: _embed_by_length(loaded, asked, BATCH), runs.values())))
        for run in runs:
            metrics[f"dense_recall_at_10_{run}"] = _dense_recall(
                data, {"turns": embedded[run]}, dict(enumerate(vectors[run])))

    # Speed: one model run on this thread, the runs interleaved round by round.
    sample = turns[:SPEED_TEXTS]
    speed: dict[str, dict[str, list[float]]] = {run: {"b16_tps": [], "b16_cpu_ms": [], "b1_tps": [],
                                                      "b1_cpu_ms": [], "coalesced_tps": []} for run in runs}
    embedders = {run: Embedder(loaded, workers=None) for run, loaded in runs.items()}
    fresh = iter(range(10**9))
    try:
        for loaded in runs.values():
            _embed(loaded, sample[:BATCH], BATCH)  # warm
        for number in range(ROUNDS):
            order = list(runs) if number % 2 == 0 else list(reversed(runs))
            for run in order:
                loaded = runs[run]
                wall, cpu = time.perf_counter(), time.thread_time()
                _embed(loaded, sample, BATCH)
                wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
                speed[run]["b16_tps"].append(len(sample) / wall)
                speed[run]["b16_cpu_ms"].append(cpu / len(sample) * 1000)
                wall, cpu = time.perf_counter(), time.thread_time()
                for text in sample[:SINGLE_TEXTS]:
                    _embed(loaded, [text], 1)
                wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
                speed[run]["b1_tps"].append(SINGLE_TEXTS / wall)
                speed[run]["b1_cpu_ms"].append(cpu / SINGLE_TEXTS * 1000)
                embedder = embedders[run]

                async def single(i: int, embedder: Embedder = embedder) -> None:
                    await embedder.embed_one(f"{sample[next(fresh) % len(sample)]} (call {next(fresh)})")

                result = await perf.run(single, concurrency=32, total=192, warmup=16,
                                        name=f"coalesced-{run}-{number}")
                assert result.errors == 0, result.errors_by_type
                speed[run]["coalesced_tps"].append(result.qps)
    finally:
        for embedder in embedders.values():
            embedder.close()
    for run in runs:
        for name, values in speed[run].items():
            metrics[f"{name}_{run}"] = statistics.median(values)
    for name in ("b16_tps", "b1_tps", "coalesced_tps"):
        metrics[f"{name}_ratio"] = metrics[f"{name}_integer"] / metrics[f"{name}_float"]
    for name in ("b16_cpu_ms", "b1_cpu_ms"):
        metrics[f"{name}_ratio"] = metrics[f"{name}_float"] / metrics[f"{name}_integer"]
    perf.record("embedding_runs", **metrics)
    print(f"\nembedding runs, {ROUNDS} interleaved rounds (medians); quality over {len(turns)} LoCoMo turns")
    for name, value in metrics.items():
        print(f"  {name}: {value:.4f}")
    assert metrics["cosine_min"] >= 0.99, metrics
    if not limit:
        assert abs(metrics["dense_recall_at_10_integer"] - metrics["dense_recall_at_10_float"]) <= 0.01, metrics
