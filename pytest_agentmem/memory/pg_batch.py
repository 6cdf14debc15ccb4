"""Checking and encoding a batch of memories for COPY, fast.

``add_batch`` aims at 0.8x the rows/s of a bare COPY of the same rows, so the
per-row Python work must stay a few microseconds: every vector is checked in
one numpy pass and encoded to pgvector's binary format in one ``astype``;
per-row checks take a fast path and only fall back to the shared checks of
:mod:`.model` (for their error messages) when something looks wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from .model import (
    MAX_CONTENT_CHARS,
    InvalidMemoryError,
    Memory,
    check_content,
    check_metadata,
    check_vector,
)
from .pg_filters import check_scope

try:  # pgvector >= 0.4
    from pgvector import Vector
except ImportError:  # pragma: no cover - pgvector 0.3
    from pgvector.utils import Vector  # type: ignore[no-redef]

MAX_ID_CHARS = 255
_ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(", ", ": ")).encode
_PLAIN = (str, int, bool)


def _flat_encoder() -> Any:
    """json's C encoder, built once: ``JSONEncoder.encode`` rebuilds it on every call,
    which is most of the cost for small dicts. Only for already checked flat dicts."""
    make = getattr(json.encoder, "c_make_encoder", None)
    basestring = getattr(json.encoder, "c_encode_basestring", None)
    if make is None or basestring is None:  # pragma: no cover - pure-Python json
        return _ENCODE

    def fail(value: Any) -> Any:
        raise TypeError(f"not JSON: {type(value).__name__}")

    chunks = make(None, fail, basestring, None, ": ", ", ", False, False, False)
    return lambda value: "".join(chunks(value, 0))


_ENCODE_FLAT = _flat_encoder()


class EncodedVector(Vector):  # type: ignore[misc]
    """A vector already in pgvector's binary wire format.

    pgvector's asyncpg codec sends ``v.to_binary()`` for any :class:`Vector`, so
    handing it these skips its per-row conversion (array copy, byte swap, pack).
    """

    __slots__ = ("_wire",)

    def __init__(self, wire: bytes) -> None:  # noqa: D107 - no super(): no float copy
        self._wire = wire

    def to_binary(self) -> bytes:
        return self._wire


def dumps(value: Any) -> str:
    return _ENCODE(value)


def check_memory_id(memory_id: Any) -> str:
    if not isinstance(memory_id, str) or not memory_id or len(memory_id) > MAX_ID_CHARS \
            or "\x00" in memory_id:
        raise InvalidMemoryError(f"memory id must be a non-empty str of at most {MAX_ID_CHARS} "
                                 f"characters without NUL, got {memory_id!r:.80}")
    return memory_id


def encode_vectors(matrix: np.ndarray) -> list[EncodedVector]:
    """Rows of a float32 matrix in pgvector's binary format (dim, unused, big-endian floats)."""
    n, dim = matrix.shape
    header = np.array([dim, 0], ">u2").tobytes()
    body = np.ascontiguousarray(matrix, dtype=">f4").tobytes()
    step = 4 * dim
    return [EncodedVector(header + body[i * step:(i + 1) * step]) for i in range(n)]


def check_matrix(memories: list[Memory], dim: int) -> np.ndarray:
    """All embeddings as one (n, dim) float32 matrix, or a clear error naming the row."""
    uniform = True  # every embedding a float32 ndarray of shape (dim,): stack as they are
    for index, memory in enumerate(memories):
        if type(memory) is not Memory and not isinstance(memory, Memory):
            raise InvalidMemoryError(f"add_batch[{index}]: expected a Memory, got {type(memory).__name__}")
        embedding = memory.embedding
        if type(embedding) is not np.ndarray or embedding.shape != (dim,):
            check_vector(embedding, dim, what=f"add_batch[{index}] embedding")  # raises or passes
            uniform = False
        elif embedding.dtype.char != "f":
            uniform = False
    try:
        if uniform:
            matrix = np.concatenate([m.embedding for m in memories]).reshape(len(memories), dim)
        else:
            matrix = np.stack([np.asarray(m.embedding, dtype=np.float32) for m in memories])
    except (TypeError, ValueError) as exc:
        raise InvalidMemoryError(f"add_batch: embeddings are not numeric vectors of {dim} dims: "
                                 f"{exc}") from None
    bad = ~np.isfinite(matrix).all(axis=1) | ~(np.einsum("ij,ij->i", matrix, matrix) > 0)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        check_vector(matrix[index], dim, what=f"add_batch[{index}] embedding")
    return matrix


def batch_records(memories: list[Memory], dim: int) -> list[tuple[Any, ...]]:
    """COPY records for a batch, all checked before anything is sent (the very
    records ``add_batch`` streams: benchmarks use them for a bare COPY)."""
    return list(iter_records(memories, dim, check_matrix(memories, dim)))


def iter_records(memories: list[Memory], dim: int, matrix: np.ndarray) -> Iterator[tuple[Any, ...]]:
    """COPY records (id, content, user_id, agent_id, run_id, metadata, embedding,
    created_at), checking each row as it goes (``matrix`` from :func:`check_matrix`).

    A generator, so that COPY can stream rows to the server while later rows
    are still being checked; a bad row raises InvalidMemoryError, which aborts
    the COPY. Only memory rows: their ADD history events are implicit.
    """
    vectors = encode_vectors(matrix)
    for index, m in enumerate(memories):
        mid, content, user, agent, run, meta = m.id, m.content, m.user_id, m.agent_id, m.run_id, m.metadata
        try:
            if not (type(mid) is str and 0 < len(mid) <= MAX_ID_CHARS and "\x00" not in mid):
                check_memory_id(mid)
            if not (type(content) is str and 0 < len(content) <= MAX_CONTENT_CHARS
                    and not content.isspace() and "\x00" not in content):
                check_content(content)
            for value, name in ((user, "user_id"), (agent, "agent_id"), (run, "run_id")):
                if value is not None and not (type(value) is str and 0 < len(value) <= 255
                                              and "\x00" not in value):
                    check_scope(value, name)
            if type(meta) is dict and not meta:
                meta_json = "{}"
            elif _plain_dict(meta):
                meta_json = _ENCODE_FLAT(meta)
            else:
                meta_json = _ENCODE(check_metadata(meta))
        except InvalidMemoryError as exc:
            raise InvalidMemoryError(f"add_batch[{index}]: {exc}") from None
        yield (mid, content, user, agent, run, meta_json, vectors[index], m.created_at)


def _plain_dict(value: Any) -> bool:
    """A flat dict of str keys to str/int/bool/finite float/None: valid without recursion."""
    if type(value) is not dict:
        return False
    for key, item in value.items():
        if type(key) is not str:
            return False
        kind = type(item)
        if kind in _PLAIN or item is None:
            continue
        if kind is float and math.isfinite(item):
            continue
        return False
    return True
