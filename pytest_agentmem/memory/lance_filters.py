"""Checked scopes and filters (:class:`~.validation.Selection`) compiled to a LanceDB SQL condition.

The filter language and its checks are in :mod:`.validation`; LanceDB puts a
filter key into a JSON path, so keys must be identifiers there. Values are
escaped as SQL string literals or formatted as finite numbers, never pasted.
"""

from __future__ import annotations

import json
from typing import Any

from .model import InvalidMemoryError
from .validation import Condition, Selection, check_selection

_COMPARE = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def sql_string(value: str) -> str:
    """``value`` as a SQL string literal (quotes doubled; NUL refused)."""
    if "\x00" in value:
        raise InvalidMemoryError("filter value contains a NUL character")
    return "'" + value.replace("'", "''") + "'"


def _json_text(value: Any) -> str:
    """How LanceDB's ``json_extract`` prints ``value`` (compact, keys sorted, UTF-8 kept)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _equals(key: str, value: Any) -> str:
    """``metadata[key] == value`` with JSON semantics (3 == 3.0; "3" != 3; true != 1)."""
    extracted = f"json_extract(metadata, '$.{key}')"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"TRY_CAST({extracted} AS DOUBLE) = {float(value)!r}"
    # JSON text comparison: a typed getter (json_get_string...) fails the whole
    # query on the first row whose value has another type.
    return f"{extracted} = {sql_string(_json_text(value))}"


def _condition(condition: Condition) -> str:
    key, op, value = condition
    if op == "exists":
        clause = f"json_exists(metadata, '$.{key}')"
        return clause if value else f"NOT {clause}"
    if op in ("eq", "ne"):
        clause = _equals(key, value)
        return clause if op == "eq" else f"NOT coalesce({clause}, false)"
    if op in ("in", "nin"):
        clause = "(" + " OR ".join(_equals(key, item) for item in value) + ")"
        return clause if op == "in" else f"NOT coalesce({clause}, false)"
    return f"TRY_CAST(json_extract(metadata, '$.{key}') AS DOUBLE) {_COMPARE[op]} {float(value)!r}"


def compile_where(selection: Selection) -> str | None:
    """The SQL condition of a checked selection (``None`` when it selects everything)."""
    parts = [f"{name} = {sql_string(value)}" for name, value in selection.scopes]
    parts.extend(_condition(condition) for condition in selection.conditions)
    return " AND ".join(parts) if parts else None


def build_where(*, user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None,
                filters: dict[str, Any] | None = None) -> str | None:
    """The SQL condition of a scoped, filtered query (``None`` when unfiltered).

    ``filters`` speaks the language of every store (:mod:`.validation`); keys
    must be identifiers here (they name a JSON path).
    """
    return compile_where(check_selection(user_id=user_id, agent_id=agent_id, run_id=run_id,
                                         filters=filters, identifier_keys=True))
