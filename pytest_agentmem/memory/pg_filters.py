"""Checked scopes and filters (:class:`~.validation.Selection`) compiled to parameterised SQL
over the Postgres repository's columns and its ``jsonb`` metadata.

Keys and values from users never reach the SQL text: each becomes a bind
parameter (``$n``). The SQL text depends only on the *shape* of the filter
(which operators, how many), so asyncpg's statement cache stays small.
Equality with scalars is one ``@>`` containment (it uses the GIN index); the
filter language and its checks are in :mod:`.validation`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .validation import Condition, Selection, is_scalar

_COMPARE = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


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


def compile_selection(where: Where, selection: Selection, *, column: str = "metadata") -> Where:
    """Append the scopes and conditions of ``selection`` to ``where``; returns it."""
    for name, value in selection.scopes:
        where.add(f"{name} = {where.param(value)}")
    contains: dict[str, Any] = {}
    for condition in selection.conditions:
        if condition.op == "eq" and is_scalar(condition.value):
            contains[condition.key] = condition.value
        else:
            _add_condition(where, column, condition)
    if contains:
        where.add(f"{column} @> {where.param(_dumps(contains))}::jsonb")
    return where


def _add_condition(where: Where, column: str, condition: Condition) -> None:
    key, op, value = condition
    if op == "exists":
        clause = f"{column} ? {where.param(key)}"
        where.add(clause if value else f"NOT ({clause})")
    elif op in ("eq", "ne"):
        if is_scalar(value) and value is not None:
            clause = f"{column} @> {where.param(_dumps({key: value}))}::jsonb"
        else:
            clause = f"{column} -> {where.param(key)} = {where.param(_dumps(value))}::jsonb"
        where.add(clause if op == "eq" else f"NOT coalesce({clause}, false)")
    elif op in ("in", "nin"):
        clause = (f"{column} -> {where.param(key)} = ANY({where.param([_dumps(v) for v in value])}"
                  "::jsonb[])")
        where.add(clause if op == "in" else f"NOT coalesce({clause}, false)")
    else:
        k = where.param(key)
        # CASE, not AND: the cast must never see a non-number.
        where.add(f"CASE WHEN jsonb_typeof({column} -> {k}) = 'number' THEN "
                  f"({column} ->> {k})::numeric {_COMPARE[op]} {where.param(str(value))}::numeric "
                  "ELSE false END")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)
