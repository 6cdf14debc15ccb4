"""Input checks shared by every store: ids, scopes, contents, vectors, metadata, filters.

The Postgres repository, the LanceDB store, the graph store and the service call
these before anything reaches a driver, so every store rejects the same bad input
with the same :class:`~pytest_agentmem.memory.model.InvalidMemoryError`, naming
the field. Filters are parsed here into :class:`Condition` triples (key,
operator, value); the backends (:mod:`.pg_filters`, :mod:`.lance_filters`)
only compile them.

Filter language (a dict, all conditions AND-ed)::

    {"topic": "pets"}                  equality with a scalar
    {"tags": {"eq": ["a", "b"]}}       equality with a list/dict value (exact)
    {"n": {"gt": 3, "lte": 9}}         numeric comparisons: gt, gte, lt, lte
    {"topic": {"ne": "work"}}          not equal (rows without the key match)
    {"topic": {"in": ["a", "b"]}}      one of; ``nin``: none of (missing key matches)
    {"topic": {"exists": True}}        the key is present (False: absent)

Anything else raises :class:`InvalidMemoryError` naming the supported operators.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .model import MAX_CONTENT_CHARS, InvalidMemoryError, Memory

#: Longest memory id and scope id (user, agent, run), in characters.
MAX_ID_CHARS = 255
#: Most conditions (keys) one filter may hold.
MAX_FILTER_CONDITIONS = 64
#: Most values an ``in``/``nin`` filter may list (LanceDB's condition grows with each).
MAX_IN_VALUES = 1000
#: Deepest nesting of lists and dicts in metadata.
MAX_METADATA_DEPTH = 32
#: Integers in metadata and filters: int64, which every store reads back exactly.
INT_RANGE = (-2**63, 2**63 - 1)
#: Largest vector dimension (pgvector's limit for an indexed ``vector``).
MAX_DIM = 16_000
OPERATORS = ("eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "exists")
COMPARISONS = ("gt", "gte", "lt", "lte")
SCOPES = ("user_id", "agent_id", "run_id")
#: Table names (and prefixes): lower case, so that SQL never needs to quote them.
TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,40}")
#: Filter keys of stores that put the key into a JSON path (LanceDB).
IDENTIFIER_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _show(value: Any) -> str:
    """``repr(value)`` cut to 80 characters, for error messages (never raises)."""
    try:
        return f"{value!r:.80}"
    except ValueError:  # an int of more than 4300 digits
        return f"<{type(value).__name__}>"


def has_lone_surrogate(text: str) -> bool:
    """True if ``text`` holds a lone surrogate (U+D800..U+DFFF), which UTF-8 cannot encode."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


SURROGATE = "a lone surrogate (U+D800..U+DFFF), which UTF-8 cannot encode"


# --------------------------------------------------------------------------- configuration


def check_dim(dim: Any) -> int:
    """A vector dimension: an int in 1..:data:`MAX_DIM`."""
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_DIM:
        raise InvalidMemoryError(f"dim must be an int in 1..{MAX_DIM} (pgvector's limit), got {_show(dim)}")
    return dim


def check_table_name(name: Any, what: str = "table") -> str:
    """A table name or prefix matching :data:`TABLE_NAME`."""
    if not isinstance(name, str) or not TABLE_NAME.fullmatch(name):
        raise InvalidMemoryError(f"{what} must match {TABLE_NAME.pattern}, got {_show(name)}")
    return name


# --------------------------------------------------------------------------- memories


def check_memory_id(memory_id: Any) -> str:
    """A memory id: a non-empty str of at most :data:`MAX_ID_CHARS` characters without NUL."""
    if not isinstance(memory_id, str) or not memory_id or len(memory_id) > MAX_ID_CHARS \
            or "\x00" in memory_id or has_lone_surrogate(memory_id):
        raise InvalidMemoryError(f"memory id must be a non-empty str of at most {MAX_ID_CHARS} "
                                 f"characters without NUL, got {_show(memory_id)}")
    return memory_id


def check_scope(value: Any, name: str) -> str | None:
    """A user/agent/run id: None or a non-empty str of at most :data:`MAX_ID_CHARS` chars without NUL."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS or "\x00" in value \
            or has_lone_surrogate(value):
        raise InvalidMemoryError(f"{name} must be a non-empty str of at most {MAX_ID_CHARS} characters "
                                 f"without NUL or lone surrogates, got {_show(value)}")
    return value


def check_vector(vector: Any, dim: int, *, what: str = "embedding") -> np.ndarray:
    """Return ``vector`` as a float32 array of length ``dim``, or raise clearly."""
    if vector is None:
        raise InvalidMemoryError(f"{what} is missing; embed the text first (expected {dim} dims)")
    try:
        array = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidMemoryError(f"{what} is not numeric: {exc}") from None
    if array.ndim != 1 or array.shape[0] != dim:
        raise InvalidMemoryError(f"{what} has shape {array.shape}, expected ({dim},): "
                                 "was it made by another model?")
    if not np.isfinite(array).all():
        raise InvalidMemoryError(f"{what} holds NaN or infinite values")
    if not float(np.linalg.norm(array)) > 0.0:
        raise InvalidMemoryError(f"{what} is all zeros; cosine distance is undefined for it")
    return array


def check_content(content: Any) -> str:
    """Return ``content`` if it is a non-empty text within :data:`MAX_CONTENT_CHARS`."""
    if not isinstance(content, str):
        raise InvalidMemoryError(f"content must be a str, got {type(content).__name__}")
    if not content.strip():
        raise InvalidMemoryError("content is empty")
    if len(content) > MAX_CONTENT_CHARS:
        raise InvalidMemoryError(f"content has {len(content):,} characters, more than the "
                                 f"limit of {MAX_CONTENT_CHARS:,}; split it into several memories")
    if "\x00" in content:
        raise InvalidMemoryError("content contains a NUL character")
    if has_lone_surrogate(content):
        raise InvalidMemoryError(f"content contains {SURROGATE}")
    return content


def check_texts(texts: Any) -> Sequence[str]:
    """Return ``texts`` if it is a list of valid contents; the error names the bad one."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InvalidMemoryError(f"texts must be a list of str, got {type(texts).__name__}")
    for index, text in enumerate(texts):
        try:
            check_content(text)
        except InvalidMemoryError as exc:
            raise InvalidMemoryError(f"text {index}: {exc}") from None
    return texts


def check_limit(limit: Any) -> int:
    """A search limit: an int in 1..10000."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
        raise InvalidMemoryError(f"limit must be an int between 1 and 10000, got {_show(limit)}")
    return limit


def check_metadata(metadata: Any) -> dict[str, Any]:
    """Metadata must be a JSON-able dict: str keys, finite numbers, int64 integers,
    no NUL character, at most :data:`MAX_METADATA_DEPTH` levels of nesting."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidMemoryError(f"metadata must be a dict, got {type(metadata).__name__}")
    _check_json(metadata, "metadata", 1)
    return metadata


def _check_json(value: Any, path: str, depth: int) -> None:
    if isinstance(value, (dict, list, tuple)) and depth > MAX_METADATA_DEPTH:
        raise InvalidMemoryError(f"{path} is nested more than {MAX_METADATA_DEPTH} levels deep")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidMemoryError(f"{path} keys must be str, got {_show(key)}")
            if "\x00" in key:
                raise InvalidMemoryError(f"{path} key {_show(key)} contains a NUL character")
            if has_lone_surrogate(key):
                raise InvalidMemoryError(f"{path} key {_show(key)} contains {SURROGATE}")
            _check_json(item, f"{path}[{_show(key)}]", depth + 1)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]", depth + 1)
    elif isinstance(value, str):
        if "\x00" in value:
            raise InvalidMemoryError(f"{path} contains a NUL character")
        if has_lone_surrogate(value):
            raise InvalidMemoryError(f"{path} contains {SURROGATE}")
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        _check_int(value, path)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidMemoryError(f"{path} is {value}, which JSON cannot hold")
    else:
        raise InvalidMemoryError(f"{path} has a {type(value).__name__}, which JSON cannot hold")


def _check_int(value: int, what: str) -> None:
    if not INT_RANGE[0] <= value <= INT_RANGE[1]:
        text = str(value) if value.bit_length() <= 256 else f"an integer of {value.bit_length()} bits"
        raise InvalidMemoryError(f"{what} is {text}, outside the 64-bit integer range "
                                 f"{INT_RANGE[0]}..{INT_RANGE[1]}; store it as a string")


def check_memory(memory: Any, dim: int) -> np.ndarray:
    """Check every field of a :class:`Memory` to be stored; returns its checked vector."""
    if not isinstance(memory, Memory):
        raise InvalidMemoryError(f"expected a Memory, got {type(memory).__name__}")
    check_memory_id(memory.id)
    check_content(memory.content)
    for name in SCOPES:
        check_scope(getattr(memory, name), name)
    check_metadata(memory.metadata)
    return check_vector(memory.embedding, dim)


def check_update(memory_id: Any, content: Any, embedding: Any, metadata: Any,
                 dim: int) -> tuple[str | None, np.ndarray | None, dict[str, Any] | None]:
    """Check the arguments of ``update``: the id and at least one of the new values.

    Returns the new content, vector and metadata (None where unchanged).
    """
    check_memory_id(memory_id)
    if content is None and embedding is None and metadata is None:
        raise InvalidMemoryError("update needs content, embedding or metadata: "
                                 "give content, embedding or metadata to change")
    return (None if content is None else check_content(content),
            None if embedding is None else check_vector(embedding, dim),
            None if metadata is None else check_metadata(metadata))


# --------------------------------------------------------------------------- scopes and filters


class Condition(NamedTuple):
    """One checked filter condition: ``metadata[key] <op> value``."""

    key: str
    op: str
    value: Any


@dataclass(frozen=True)
class Selection:
    """The checked scopes and filter conditions of a query (all AND-ed)."""

    scopes: tuple[tuple[str, str], ...] = ()  # (column, value) of each named scope
    conditions: tuple[Condition, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.scopes and not self.conditions


def check_selection(*, user_id: Any = None, agent_id: Any = None, run_id: Any = None,
                    filters: Any = None, identifier_keys: bool = False) -> Selection:
    """Check scopes and a filter spec into a :class:`Selection`.

    ``identifier_keys``: the store puts filter keys into a JSON path, so they
    must match :data:`IDENTIFIER_KEY`.
    """
    scopes = tuple((name, value) for name, value in
                   (("user_id", check_scope(user_id, "user_id")),
                    ("agent_id", check_scope(agent_id, "agent_id")),
                    ("run_id", check_scope(run_id, "run_id"))) if value is not None)
    return Selection(scopes, tuple(check_filters(filters, identifier_keys=identifier_keys)))


def check_filters(filters: Any, *, identifier_keys: bool = False) -> list[Condition]:
    """Parse a filter spec (see the module doc) into conditions, or raise naming the bad part."""
    if filters is None:
        return []
    if not isinstance(filters, dict):
        raise InvalidMemoryError(f"filters must be a dict of metadata key -> value, got {type(filters).__name__}")
    if len(filters) > MAX_FILTER_CONDITIONS:
        raise InvalidMemoryError(f"filters has {len(filters)} keys, more than {MAX_FILTER_CONDITIONS}")
    conditions: list[Condition] = []
    for key, spec in filters.items():
        _check_filter_key(key, identifier_keys)
        if isinstance(spec, dict):
            conditions.extend(_operator_conditions(key, spec))
        elif spec is None or isinstance(spec, (str, int, float, bool)):
            _check_filter_value(key, "eq", spec)
            conditions.append(Condition(key, "eq", spec))
        elif isinstance(spec, (list, tuple)):
            raise InvalidMemoryError(f"filter {_show(key)}: a list value is ambiguous; use "
                                     f"{{'in': [...]}} for one-of or {{'eq': [...]}} for equality")
        else:
            raise InvalidMemoryError(f"filter {_show(key)}: unsupported value of type {type(spec).__name__}")
    return conditions


def _check_filter_key(key: Any, identifier: bool) -> None:
    if not isinstance(key, str):
        raise InvalidMemoryError(f"filter keys must be str, got {_show(key)}")
    if "\x00" in key:
        raise InvalidMemoryError(f"filter key {_show(key)} contains a NUL character")
    if has_lone_surrogate(key):
        raise InvalidMemoryError(f"filter key {_show(key)} contains {SURROGATE}")
    if identifier and not IDENTIFIER_KEY.fullmatch(key):
        raise InvalidMemoryError(f"filter key {_show(key)} is not allowed: metadata filter keys must be "
                                 "identifiers (letters, digits, underscore; at most 64 characters)")


def _operator_conditions(key: str, spec: dict[Any, Any]) -> list[Condition]:
    if not spec:
        raise InvalidMemoryError(f"filter {_show(key)}: empty operator dict; supported: {', '.join(OPERATORS)}")
    conditions = []
    for op, value in spec.items():
        if op not in OPERATORS:
            raise InvalidMemoryError(f"filter {_show(key)}: unsupported operator {_show(op)}; "
                                     f"supported: {', '.join(OPERATORS)}")
        if op == "exists":
            if not isinstance(value, bool):
                raise InvalidMemoryError(f"filter {_show(key)}: 'exists' takes True or False")
        elif op in ("eq", "ne"):
            _check_filter_value(key, op, value)
        elif op in ("in", "nin"):
            if not isinstance(value, (list, tuple)) or not value:
                raise InvalidMemoryError(f"filter {_show(key)}: {_show(op)} takes a non-empty list")
            if len(value) > MAX_IN_VALUES:
                raise InvalidMemoryError(f"filter {_show(key)}: {_show(op)} takes at most {MAX_IN_VALUES} values, "
                                         f"got {len(value)}")
            for item in value:
                _check_filter_value(key, op, item)
            value = list(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            _check_int(value, f"filter {_show(key)}: {_show(op)} value")
        elif not isinstance(value, float) or not math.isfinite(value):
            raise InvalidMemoryError(f"filter {_show(key)}: {_show(op)} takes a finite number, got {_show(value)}")
        conditions.append(Condition(key, op, value))
    return conditions


def _check_filter_value(key: str, op: str, value: Any) -> None:
    try:
        check_metadata({key: value})
    except InvalidMemoryError as exc:
        raise InvalidMemoryError(f"filter {_show(key)}: {_show(op)} value: {exc}") from None


def is_scalar(value: Any) -> bool:
    """A JSON scalar (None, str, number, bool)."""
    return value is None or isinstance(value, (str, int, float, bool))
