"""Checking and encoding a batch of memories for COPY, fast.

``add_batch`` aims at 0.8x the rows/s of a bare COPY of the same rows, so the
per-row Python work must stay a couple of microseconds, and overlap with the
server's work: rows are prepared in chunks while COPY streams the previous
ones. In a chunk, the vectors are checked in one numpy pass and encoded to
pgvector's binary format in one buffer; the other fields are screened column by
column in C-level passes (``map``, ``set``, ``join``), the metadata dicts encoded
as one JSON list and cut apart, and the COPY records made by ``zip``. Only when
a screen fails do the rows go through the per-row checks, which fall back to
the shared checks of :mod:`.validation` for their error messages.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from decimal import Decimal
from itertools import chain
from typing import Any

import numpy as np

from .model import MAX_CONTENT_CHARS, InvalidMemoryError, Memory
from .validation import (
    INT_RANGE,
    MAX_ID_CHARS,
    check_content,
    check_memory_id,
    check_metadata,
    check_scope,
    check_vector,
    has_lone_surrogate,
)

try:  # pgvector >= 0.4
    from pgvector import Vector
except ImportError:  # pragma: no cover - pgvector 0.3
    from pgvector.utils import Vector  # type: ignore[no-redef]

_JSON_ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(", ", ": ")).encode
#: A JSON string, or (group 1) a float in exponent form with a positive exponent (>= 1e16).
_BIG_FLOAT = re.compile(r'"(?:[^"\\]|\\.)*"|(-?\d+(?:\.\d+)?e\+\d+)')


def keep_floats(text: str) -> str:
    """JSON text in which floats of 1e16 and more keep a decimal point.

    Python writes ``1e16`` as ``1e+16``; jsonb stores it as the numeric
    10000000000000000 and gives it back without a fraction, so it would read
    back as an int. Written ``10000000000000000.0`` it stays a float. The digits
    are those of Python's shortest repr (not the binary value's exact expansion),
    so the stored number equals the one a filter on the same float names.
    """
    if "e+" not in text:
        return text
    return _BIG_FLOAT.sub(lambda m: m[0] if m[1] is None else format(Decimal(m[1]), "f") + ".0", text)


def _ENCODE(value: Any) -> str:  # noqa: N802 - the encoder, as it was named
    return keep_floats(_JSON_ENCODE(value))

_PLAIN_TYPES = frozenset({str, int, bool, float, type(None)})
#: In JSON text of checked-flat values: a NUL (always escaped) or a run of 19+ digits
#: (an integer that may be outside int64; float reprs have at most 17 digits).
_SUSPECT = re.compile(r"\\u0000|\d{19}")


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
    return lambda value: keep_floats("".join(chunks(value, 0)))


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


def encode_vectors(matrix: np.ndarray) -> list[EncodedVector]:
    """Rows of a float32 matrix in pgvector's binary format (dim, unused, big-endian floats).

    Built as one (n, 1 + dim) big-endian array whose first 4 bytes a row are the
    header, then cut into rows: one copy per row.
    """
    n, dim = matrix.shape
    wire = np.empty((n, dim + 1), ">f4")
    wire[:, 1:] = matrix
    header = wire.view(">u2")  # (n, 2 * (dim + 1)): the first two are (dim, 0)
    header[:, 0] = dim
    header[:, 1] = 0
    body = wire.tobytes()
    step = 4 * (dim + 1)
    return [EncodedVector(body[i:i + step]) for i in range(0, n * step, step)]


def check_memories(memories: list[Any]) -> None:
    """Every item a :class:`Memory`, or a clear error naming the first that is not."""
    if set(map(type, memories)) <= {Memory}:
        return
    for index, memory in enumerate(memories):
        if not isinstance(memory, Memory):
            raise InvalidMemoryError(f"add_batch[{index}]: expected a Memory, got {type(memory).__name__}")


def check_matrix(memories: list[Memory], dim: int, first: int = 0) -> np.ndarray:
    """All embeddings as one (n, dim) float32 matrix, or a clear error naming the row
    (``first``: the index of ``memories[0]`` in the batch)."""
    check_memories(memories)
    uniform = True  # every embedding a float32 ndarray of shape (dim,): stack as they are
    for index, memory in enumerate(memories, first):
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
        check_vector(matrix[index], dim, what=f"add_batch[{index + first}] embedding")
    return matrix


def batch_records(memories: list[Memory], dim: int) -> list[tuple[Any, ...]]:
    """COPY records for a batch, all checked before anything is sent (the very
    records ``add_batch`` streams: benchmarks use them for a bare COPY)."""
    return list(iter_records(memories, dim))


#: Rows screened and encoded at a time: COPY sends one chunk's rows (about 0.8 MB
#: at 384 dims) while the next chunk is prepared.
CHUNK_ROWS = 512


def iter_records(memories: list[Memory], dim: int, *,
                 chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[Any, ...]]:
    """COPY records (id, content, user_id, agent_id, run_id, metadata, embedding,
    created_at) of checked rows.

    Only memory rows: their ADD history events are implicit. A generator over
    chunks of ``chunk_rows``, so that COPY streams rows to the server while later
    chunks are being checked; a bad row raises InvalidMemoryError naming it,
    which aborts the COPY. Each chunk's vectors go through :func:`check_matrix`;
    the chunk takes the fast path when every column passes its screen
    (:func:`_columns_pass`) and every metadata dict encodes: its records are then
    a ``zip`` of the columns. Otherwise its rows are checked one by one (which
    finds the first bad row and says what is wrong with it).
    """
    for start in range(0, len(memories), chunk_rows):
        part = memories[start:start + chunk_rows]
        yield from _chunk_records(part, check_matrix(part, dim, start), start)


def _chunk_records(memories: list[Memory], matrix: np.ndarray, first: int) -> Iterator[tuple[Any, ...]]:
    vectors = encode_vectors(matrix)
    ids = [m.id for m in memories]
    contents = [m.content for m in memories]
    scopes = ([m.user_id for m in memories], [m.agent_id for m in memories],
              [m.run_id for m in memories])
    if _columns_pass(ids, contents, scopes):
        encoded = _metadata_json([m.metadata for m in memories])
        if encoded is not None:
            return zip(ids, contents, *scopes, encoded, vectors, [m.created_at for m in memories])
    return _checked_rows(memories, vectors, first)


def _metadata_json(metas: list[Any]) -> list[str] | None:
    """The JSON of each metadata dict, or None: "look row by row".

    Flat dicts (str keys; str/int/bool/float/None values, screened in C passes)
    are encoded as one JSON list, cut apart at ``}, {``: JSON text never holds a
    raw NUL, so the cuts are marked with one, and a string value holding ``}, {``
    shows as a wrong count of pieces. Text that may hold an escaped NUL or an
    integer beyond int64 (:data:`_SUSPECT`), and anything else, goes dict by dict.
    """
    if (set(map(type, metas)) == {dict}
            and set(map(type, chain.from_iterable(metas))) <= {str}
            and set(map(type, chain.from_iterable(map(dict.values, metas)))) <= _PLAIN_TYPES):
        try:
            text = _ENCODE_FLAT(metas)  # ValueError on NaN or infinity
        except ValueError:
            return None
        if not _SUSPECT.search(text) and not has_lone_surrogate(text):
            pieces = text[1:-1].replace("}, {", "}\x00{").split("\x00")
            if len(pieces) == len(metas):
                return pieces
    try:
        return [("{}" if not d else _ENCODE_FLAT(d) if _plain_dict(d) else _ENCODE(check_metadata(d)))
                if type(d) is dict else _ENCODE(check_metadata(d)) for d in metas]
    except InvalidMemoryError:
        return None


def _columns_pass(ids: list[Any], contents: list[Any], scopes: tuple[list[Any], ...]) -> bool:
    """True if every id, content and scope certainly passes its check (column-wise
    passes in C; no row-level Python). False says only "look row by row"."""
    for column, limit in ((ids, MAX_ID_CHARS), (contents, MAX_CONTENT_CHARS)):
        if set(map(type, column)) != {str}:
            return False
        lengths = list(map(len, column))
        joined = "".join(column)
        if min(lengths) < 1 or max(lengths) > limit or "\x00" in joined or has_lone_surrogate(joined):
            return False
    if any(map(str.isspace, contents)):
        return False
    for column in scopes:
        kinds = set(map(type, column))
        if kinds == {type(None)}:
            continue
        if not kinds <= {str, type(None)}:
            return False
        values = [v for v in column if v is not None] if type(None) in kinds else column
        lengths = list(map(len, values))
        joined = "".join(values)
        if min(lengths) < 1 or max(lengths) > MAX_ID_CHARS or "\x00" in joined or has_lone_surrogate(joined):
            return False
    return True


def _checked_rows(memories: list[Memory], vectors: list[EncodedVector],
                  first: int) -> Iterator[tuple[Any, ...]]:
    """The records of a chunk starting at row ``first``, checked one by one (the slow path)."""
    for index, m in enumerate(memories, first):
        mid, content, user, agent, run, meta = m.id, m.content, m.user_id, m.agent_id, m.run_id, m.metadata
        try:
            if not (type(mid) is str and 0 < len(mid) <= MAX_ID_CHARS and "\x00" not in mid
                    and not has_lone_surrogate(mid)):
                check_memory_id(mid)
            if not (type(content) is str and 0 < len(content) <= MAX_CONTENT_CHARS
                    and not content.isspace() and "\x00" not in content and not has_lone_surrogate(content)):
                check_content(content)
            for value, name in ((user, "user_id"), (agent, "agent_id"), (run, "run_id")):
                if value is not None and not (type(value) is str and 0 < len(value) <= MAX_ID_CHARS
                                              and "\x00" not in value and not has_lone_surrogate(value)):
                    check_scope(value, name)
            if type(meta) is dict and not meta:
                meta_json = "{}"
            elif _plain_dict(meta):
                meta_json = _ENCODE_FLAT(meta)
            else:
                meta_json = _ENCODE(check_metadata(meta))
        except InvalidMemoryError as exc:
            raise InvalidMemoryError(f"add_batch[{index}]: {exc}") from None
        yield (mid, content, user, agent, run, meta_json, vectors[index - first], m.created_at)


def _plain_dict(value: Any) -> bool:
    """A flat dict of str keys to str/int64/bool/finite float/None, without NUL: valid
    without recursion."""
    if type(value) is not dict:
        return False
    low, high = INT_RANGE
    for key, item in value.items():
        if type(key) is not str or "\x00" in key or has_lone_surrogate(key):
            return False
        kind = type(item)
        if kind is str:
            if "\x00" in item or has_lone_surrogate(item):
                return False
        elif kind is int:
            if not low <= item <= high:
                return False
        elif kind is bool or item is None:
            continue
        elif kind is not float or not math.isfinite(item):
            return False
    return True
