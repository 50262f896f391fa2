"""Metadata filters: one small language with one meaning, translated by pure functions per engine.

A filter maps a metadata field to a value (equality), to a list of values (any of them) or to a range
(``{"gte": 2019, "lt": 2022}``: any of ``gt``/``gte`` and ``lt``/``lte``); all entries must hold.
``{"lang": "en", "topic": ["sports", "news"], "year": {"gte": 2019}}`` means lang == "en" AND topic in
(sports, news) AND year >= 2019.
Each engine's translation is a dispatch dict from operator to a function, so adding an operator is one
entry per engine and nothing is copied between engines.

The meaning, the same on every backend and in every mode (a contract test runs one table through all):
values are JSON-typed and compared by type: a string matches only that string, a number only an equal
number (``1`` matches ``1.0``), a boolean only that boolean (``true`` never matches ``1``). A range's bounds are
all numbers (compared by value) or all strings (compared by code point, as a keyword range is); booleans
have no range. A document whose field holds a list matches when any element does (for a range: one element
within every bound, as one range query over a field's values). Field names are letters, digits, ``_`` and
``-``: a dotted name is refused (at ingest as in filters), since engines read a dot as a path into nested
objects. A value of another type than the field holds is refused by the client (:func:`check_value_types`)
rather than matching nothing, and CLI text is converted by the field's type (:func:`coerce_text_filters`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

from hybrid_search.config.errors import QueryError
from hybrid_search.config.names import check_field_name

__all__ = [
    "Filter",
    "METADATA_FIELD",
    "check_field_name",
    "check_value_types",
    "clauses",
    "coerce_text_filters",
    "to_query_dsl",
    "to_sql",
]

Scalar: TypeAlias = str | int | float | bool
Filter: TypeAlias = Mapping[str, Scalar | Sequence[Scalar] | Mapping[str, str | int | float]]
RANGE_OPERATORS = ("gte", "gt", "lte", "lt")

METADATA_FIELD = "metadata"
NUMERIC_TYPES = frozenset(
    {"long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float", "unsigned_long"}
)


def clauses(filters: Filter | None) -> list[tuple[str, str, Any]]:
    """Validate ``filters`` and return ``(operator, field, value)`` clauses; operator is ``eq``, ``in`` or
    ``range`` (its value a dict of bounds)."""
    out: list[tuple[str, str, Any]] = []
    for name, value in (filters or {}).items():
        check_field_name(name)
        if isinstance(value, (str, int, float, bool)):
            out.append(("eq", name, value))
        elif isinstance(value, Mapping):
            out.append(("range", name, _range_bounds(name, value)))
        elif isinstance(value, Sequence) and value and all(isinstance(v, (str, int, float, bool)) for v in value):
            out.append(("in", name, list(value)))
        else:
            raise QueryError(
                f"filter {name!r}: give a value, a non-empty list of values or a range such as "
                f'{{"gte": 2019}}, not {value!r}'
            )
    return out


def _range_bounds(name: str, bounds: Mapping[str, Any]) -> dict[str, Any]:
    unknown = [op for op in bounds if op not in RANGE_OPERATORS]
    if not bounds or unknown:
        raise QueryError(
            f"filter {name!r}: a range takes gte, gt, lte or lt (e.g. {{'gte': 2019}}), not {dict(bounds)!r}"
        )
    if ("gt" in bounds and "gte" in bounds) or ("lt" in bounds and "lte" in bounds):
        raise QueryError(f"filter {name!r}: give one lower bound (gt or gte) and one upper bound (lt or lte)")
    kinds = set()
    for op, v in bounds.items():
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float, str))
            or (isinstance(v, float) and not math.isfinite(v))
        ):
            raise QueryError(f"filter {name!r}: range bound {op}={v!r} must be a finite number or a string")
        kinds.add(_value_kind(v))
    if len(kinds) > 1:
        raise QueryError(f"filter {name!r}: a range's bounds are all numbers or all strings, not {dict(bounds)!r}")
    return {op: bounds[op] for op in RANGE_OPERATORS if op in bounds}


# --- Elasticsearch / OpenSearch query DSL (both engines accept the same term / terms clauses) ---
_DSL: dict[str, Callable[[str, Any], dict[str, Any]]] = {
    "eq": lambda f, v: {"term": {f"{METADATA_FIELD}.{f}": {"value": v}}},
    "in": lambda f, v: {"terms": {f"{METADATA_FIELD}.{f}": v}},
    "range": lambda f, v: {"range": {f"{METADATA_FIELD}.{f}": dict(v)}},
}


def to_query_dsl(filters: Filter | None) -> list[dict[str, Any]]:
    """Filter clauses for a ``bool.filter`` list (empty when there is no filter)."""
    return [_DSL[op](name, value) for op, name, value in clauses(filters)]


# --- SQLite over a JSON metadata column (embedded backend) ---
# json_each at the field's path yields the scalar itself (key NULL) or each element of a list (integer key);
# the row's JSON type makes the comparison typed, as the text index's JSON terms are
def _sql_value(value: Any) -> tuple[str, list[Any]]:
    if isinstance(value, bool):
        return ("type = 'true'" if value else "type = 'false'"), []
    if isinstance(value, (int, float)):
        return "(type IN ('integer', 'real') AND value = ?)", [value]
    return "(type = 'text' AND value = ?)", [value]


def _sql_exists(name: str, cond: str, params: list[Any]) -> tuple[str, list[Any]]:
    scalar_or_element = "(key IS NULL OR typeof(key) = 'integer')"
    sql = f"EXISTS (SELECT 1 FROM json_each({METADATA_FIELD}, ?) WHERE {scalar_or_element} AND ({cond}))"
    return sql, [f'$."{name}"', *params]


def _sql_any(name: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    parts = [_sql_value(v) for v in values]
    return _sql_exists(name, " OR ".join(p for p, _ in parts), [x for _, params in parts for x in params])


def _sql_eq(name: str, value: Any) -> tuple[str, list[Any]]:
    return _sql_any(name, [value])


def _sql_in(name: str, values: Any) -> tuple[str, list[Any]]:
    return _sql_any(name, values)


_SQL_COMPARE = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<"}


def _sql_range(name: str, bounds: Mapping[str, Any]) -> tuple[str, list[Any]]:
    # one element within every bound; typed, so a string never compares with a number
    numeric = _value_kind(next(iter(bounds.values()))) == "number"
    typed = "type IN ('integer', 'real')" if numeric else "type = 'text'"
    cond = " AND ".join([typed, *(f"value {_SQL_COMPARE[op]} ?" for op in bounds)])
    return _sql_exists(name, cond, list(bounds.values()))


_SQL: dict[str, Callable[[str, Any], tuple[str, list[Any]]]] = {"eq": _sql_eq, "in": _sql_in, "range": _sql_range}


def to_sql(filters: Filter | None) -> tuple[str, list[Any]]:
    """A SQL ``WHERE`` expression and its parameters; ``("1", [])`` when there is no filter."""
    parts = [_SQL[op](name, value) for op, name, value in clauses(filters)]
    if not parts:
        return "1", []
    return " AND ".join(p for p, _ in parts), [x for _, params in parts for x in params]


# --- values checked and converted by the field's type (what the index's mapping says it holds) ---
def _kind(field_type: str) -> str | None:
    if field_type in NUMERIC_TYPES:
        return "number"
    if field_type == "boolean":
        return "boolean"
    if field_type in ("keyword", "text", "constant_keyword", "wildcard"):
        return "string"
    return None


def _value_kind(value: Scalar) -> str:
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, (int, float)) else "string"


def check_value_types(filters: Filter, types: Mapping[str, str]) -> None:
    """``QueryError`` when a filter value's type differs from what its field holds (``"2019"`` for a numeric
    field would match nothing on one engine and everything equal on another)."""
    for _op, name, value in clauses(filters):
        want = _kind(types.get(name, ""))
        if want is None:
            continue
        values = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
        for v in values:
            if _value_kind(v) != want:
                example = {"number": "2019", "boolean": "true", "string": '"text"'}[want]
                raise QueryError(
                    f"filter {name!r}: the field holds {want}s ({types[name]}), but {v!r} is a {_value_kind(v)}: "
                    f"give a {want} (e.g. {example})"
                )


_SYMBOLS = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<"}


def _from_text(name: str, text: str, field_type: str, op: str = "=") -> Scalar:
    kind = _kind(field_type)
    shown = f"--filter {name}{op}{text}"
    if kind == "boolean":
        if op == "=" and text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise QueryError(f"{shown}: {name!r} holds booleans: give {name}=true or {name}=false (no range)")
    if kind == "number":
        try:
            number = float(text)
        except ValueError:
            raise QueryError(f"{shown}: {name!r} holds numbers ({field_type}): give a number") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise QueryError(f"{shown}: give a finite number")
        return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
    return text


def coerce_text_filters(
    filters: Mapping[str, str | list[str] | Mapping[str, str]], types: Mapping[str, str]
) -> dict[str, Any]:
    """CLI filters (all text, ranges as ``{"gte": "2019"}``) converted to the type each field holds;
    ``QueryError`` for text that is not that type. A field of unknown type keeps its text."""
    out: dict[str, Any] = {}
    for name, value in filters.items():
        check_field_name(name)  # before its type is looked up: a dotted name is refused as such
        field_type = types.get(name, "")
        if isinstance(value, Mapping):
            out[name] = {op: _from_text(name, v, field_type, _SYMBOLS.get(op, op)) for op, v in value.items()}
        elif isinstance(value, list):
            out[name] = [_from_text(name, v, field_type) for v in value]
        else:
            out[name] = _from_text(name, value, field_type)
    return out
