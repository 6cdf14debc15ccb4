"""Vectors with neighbour structure, for index and recall benchmarks.

Random i.i.d. vectors have no neighbours worth finding (recall@10 ~0.05 for any
index), so index benchmarks use points drawn around cluster centres instead.
"""

from __future__ import annotations

import numpy as np


def clustered_vectors(n: int, dim: int, *, clusters: int = 100, spread: float = 0.35,
                      seed: int = 0) -> np.ndarray:
    """``n`` unit vectors (float32) scattered around ``clusters`` random centres."""
    if n < 1 or dim < 2 or clusters < 1:
        raise ValueError("need n >= 1, dim >= 2 and clusters >= 1")
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, clusters, size=n)
    noise = rng.standard_normal((n, dim)).astype(np.float32) * np.float32(spread / np.sqrt(dim))
    points = centres[labels] + noise
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32, copy=False)


def query_vectors(base: np.ndarray, n: int, *, jitter: float = 0.2, seed: int = 1) -> np.ndarray:
    """``n`` queries near randomly chosen points of ``base`` (so they have true neighbours)."""
    rng = np.random.default_rng(seed)
    picks = base[rng.integers(0, len(base), size=n)]
    dim = base.shape[1]
    queries = picks + rng.standard_normal(picks.shape).astype(np.float32) * np.float32(jitter / np.sqrt(dim))
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def exact_top_k(base: np.ndarray, queries: np.ndarray, k: int,
                mask: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` nearest rows of ``base`` by cosine, per query (ground truth).

    ``mask`` (bool, len(base)) restricts the candidates, for filtered search.
    """
    b = base / np.linalg.norm(base, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q @ b.T
    if mask is not None:
        sims = np.where(mask[None, :], sims, -np.inf)
    k = min(k, int(mask.sum()) if mask is not None else len(base))
    top = np.argpartition(-sims, kth=k - 1, axis=1)[:, :k]
    order = np.take_along_axis(sims, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def recall_at_k(found: list[list[int]] | np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k found, over queries."""
    scores = []
    for got, want in zip(found, truth):
        want_set = set(int(x) for x in want)
        if not want_set:
            continue
        scores.append(len(want_set.intersection(int(x) for x in got)) / len(want_set))
    return float(np.mean(scores)) if scores else 0.0
