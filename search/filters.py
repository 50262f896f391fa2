"""Metadata filters: one small language, translated by pure functions per engine.

A filter maps a metadata field to a value (equality) or to a list of values (any of them); all entries must
hold. ``{"lang": "en", "topic": ["sports", "news"]}`` means lang == "en" AND topic in (sports, news).
Each engine's translation is a dispatch dict from operator to a function, so adding an operator is one
entry per engine and nothing is copied between engines.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

from hybrid_search.config.errors import QueryError

__all__ = ["Filter", "METADATA_FIELD", "clauses", "to_query_dsl", "to_sql"]

Scalar: TypeAlias = str | int | float | bool
Filter: TypeAlias = Mapping[str, Scalar | Sequence[Scalar]]

METADATA_FIELD = "metadata"
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


def clauses(filters: Filter | None) -> list[tuple[str, str, Any]]:
    """Validate ``filters`` and return ``(operator, field, value)`` clauses; operator is ``eq`` or ``in``."""
    out: list[tuple[str, str, Any]] = []
    for name, value in (filters or {}).items():
        if not isinstance(name, str) or not _FIELD_NAME.match(name):
            raise QueryError(f"filter field {name!r} is not a valid metadata field name (letters, digits, _ . -)")
        if isinstance(value, (str, int, float, bool)):
            out.append(("eq", name, value))
        elif isinstance(value, Sequence) and value and all(isinstance(v, (str, int, float, bool)) for v in value):
            out.append(("in", name, list(value)))
        else:
            raise QueryError(f"filter {name!r}: give a value or a non-empty list of values, not {value!r}")
    return out


# --- Elasticsearch / OpenSearch query DSL (both engines accept the same term / terms clauses) ---
_DSL: dict[str, Callable[[str, Any], dict[str, Any]]] = {
    "eq": lambda f, v: {"term": {f"{METADATA_FIELD}.{f}": {"value": v}}},
    "in": lambda f, v: {"terms": {f"{METADATA_FIELD}.{f}": v}},
}


def to_query_dsl(filters: Filter | None) -> list[dict[str, Any]]:
    """Filter clauses for a ``bool.filter`` list (empty when there is no filter)."""
    return [_DSL[op](name, value) for op, name, value in clauses(filters)]


# --- SQLite over a JSON metadata column (embedded backend) ---
def _sql_eq(name: str, value: Any) -> tuple[str, list[Any]]:
    return f"json_extract({METADATA_FIELD}, ?) = ?", [f"$.{name}", value]


def _sql_in(name: str, values: Any) -> tuple[str, list[Any]]:
    marks = ",".join("?" * len(values))
    return f"json_extract({METADATA_FIELD}, ?) IN ({marks})", [f"$.{name}", *values]


_SQL: dict[str, Callable[[str, Any], tuple[str, list[Any]]]] = {"eq": _sql_eq, "in": _sql_in}


def to_sql(filters: Filter | None) -> tuple[str, list[Any]]:
    """A SQL ``WHERE`` expression and its parameters; ``("1", [])`` when there is no filter."""
    parts = [_SQL[op](name, value) for op, name, value in clauses(filters)]
    if not parts:
        return "1", []
    return " AND ".join(p for p, _ in parts), [x for _, params in parts for x in params]
