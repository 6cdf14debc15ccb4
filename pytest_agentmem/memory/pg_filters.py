"""Metadata filters compiled (for the Postgres repository) to parameterised SQL over a ``jsonb`` column.

Keys and values from users never reach the SQL text: each becomes a bind
parameter (``$n``). The SQL text depends only on the *shape* of the filter
(which operators, how many), so asyncpg's statement cache stays small.

Filter language (a dict, all conditions AND-ed)::

    {"topic": "pets"}                  equality (scalar: uses the GIN index via @>)
    {"tags": {"eq": ["a", "b"]}}       equality with a list/dict value (exact)
    {"n": {"gt": 3, "lte": 9}}         numeric comparisons: gt, gte, lt, lte
    {"topic": {"ne": "work"}}          not equal (rows without the key match)
    {"topic": {"in": ["a", "b"]}}      one of; ``nin``: none of (missing key matches)
    {"topic": {"exists": True}}        the key is present (False: absent)

Anything else raises :class:`InvalidMemoryError` naming the supported operators.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from .model import InvalidMemoryError, check_metadata

OPERATORS = ("eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "exists")
_COMPARE = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
MAX_FILTER_CONDITIONS = 64


@dataclass
class Where:
    """An AND of SQL conditions with their bind parameters, numbered from ``first``."""

    first: int
    clauses: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    def param(self, value: Any) -> str:
        self.params.append(value)
        return f"${self.first + len(self.params) - 1}"

    def add(self, clause: str) -> None:
        self.clauses.append(clause)

    @property
    def empty(self) -> bool:
        return not self.clauses

    def sql(self) -> str:
        return " AND ".join(self.clauses) if self.clauses else "TRUE"

    def key(self) -> tuple[Any, ...]:
        """A hashable identity of this filter (SQL shape and values)."""
        return (self.sql(), *(tuple(p) if isinstance(p, list) else p for p in self.params))


def check_scope(value: Any, name: str) -> str | None:
    """A user/agent/run id: None or a non-empty str of at most 255 chars without NUL."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 255 or "\x00" in value:
        raise InvalidMemoryError(f"{name} must be a non-empty str of at most 255 characters "
                                 f"without NUL, got {value!r:.80}")
    return value


def add_scope(where: Where, *, user_id: Any = None, agent_id: Any = None, run_id: Any = None) -> None:
    for column, value in (("user_id", user_id), ("agent_id", agent_id), ("run_id", run_id)):
        if check_scope(value, column) is not None:
            where.add(f"{column} = {where.param(value)}")


def add_metadata_filters(where: Where, filters: Any, *, column: str = "metadata") -> None:
    """Append the conditions of ``filters`` (see the module doc) to ``where``."""
    if filters is None:
        return
    if not isinstance(filters, dict):
        raise InvalidMemoryError(f"filters must be a dict, got {type(filters).__name__}")
    if len(filters) > MAX_FILTER_CONDITIONS:
        raise InvalidMemoryError(f"filters has {len(filters)} keys, more than {MAX_FILTER_CONDITIONS}")
    contains: dict[str, Any] = {}
    for key, spec in filters.items():
        if not isinstance(key, str):
            raise InvalidMemoryError(f"filter keys must be str, got {key!r}")
        if isinstance(spec, dict):
            _add_operators(where, column, key, spec)
        elif _is_scalar(spec):
            contains[key] = spec
        elif isinstance(spec, (list, tuple)):
            raise InvalidMemoryError(f"filter {key!r}: a list value is ambiguous; use "
                                     f"{{'in': [...]}} for one-of or {{'eq': [...]}} for equality")
        else:
            raise InvalidMemoryError(f"filter {key!r}: unsupported value of type {type(spec).__name__}")
    if contains:
        check_metadata(contains)
        where.add(f"{column} @> {where.param(_dumps(contains))}::jsonb")


def _add_operators(where: Where, column: str, key: str, spec: dict[Any, Any]) -> None:
    if not spec:
        raise InvalidMemoryError(f"filter {key!r}: empty operator dict; supported: {', '.join(OPERATORS)}")
    for op, value in spec.items():
        if op not in OPERATORS:
            raise InvalidMemoryError(f"filter {key!r}: unsupported operator {op!r}; "
                                     f"supported: {', '.join(OPERATORS)}")
        if op == "exists":
            if not isinstance(value, bool):
                raise InvalidMemoryError(f"filter {key!r}: 'exists' takes True or False")
            clause = f"{column} ? {where.param(key)}"
            where.add(clause if value else f"NOT ({clause})")
        elif op in ("eq", "ne"):
            _check_value(key, op, value)
            if _is_scalar(value) and value is not None:
                clause = f"{column} @> {where.param(_dumps({key: value}))}::jsonb"
            else:
                clause = (f"{column} -> {where.param(key)} = "
                          f"{where.param(_dumps(value))}::jsonb")
            where.add(clause if op == "eq" else f"NOT coalesce({clause}, false)")
        elif op in ("in", "nin"):
            if not isinstance(value, (list, tuple)) or not value:
                raise InvalidMemoryError(f"filter {key!r}: {op!r} takes a non-empty list")
            for item in value:
                _check_value(key, op, item)
            clause = (f"{column} -> {where.param(key)} = ANY({where.param([_dumps(v) for v in value])}"
                      "::jsonb[])")
            where.add(clause if op == "in" else f"NOT coalesce({clause}, false)")
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidMemoryError(f"filter {key!r}: {op!r} takes a finite number, got {value!r:.80}")
            k = where.param(key)
            # CASE, not AND: the cast must never see a non-number.
            where.add(f"CASE WHEN jsonb_typeof({column} -> {k}) = 'number' THEN "
                      f"({column} ->> {k})::numeric {_COMPARE[op]} {where.param(str(value))}::numeric "
                      "ELSE false END")


def _check_value(key: str, op: str, value: Any) -> None:
    try:
        check_metadata({key: value})
    except InvalidMemoryError as exc:
        raise InvalidMemoryError(f"filter {key!r}: {op!r} value: {exc}") from None


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)
