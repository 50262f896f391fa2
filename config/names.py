"""The rules for index and alias names, shared by settings (checked when they load, before anything slow
or anything written) and every backend entry point (``hybrid_search.backends.base.checks_names``).

:func:`check_index_name` is the syntax every stored name follows: the intersection of Elasticsearch's,
OpenSearch's and a file system's rules: lowercase letters, digits, '.', '_' and '-'; starting with a letter
or digit (so never '.', '..', '-x' or '_x'); no path separators; at most 200 characters (engines allow 255
bytes; the builds' timestamp suffixes need room).

:func:`check_user_index_name` adds the reserved namespace: names the application makes for its own use
can never be taken by a user's index, so no user index can be mistaken for one of them. Reserved are the
names that end like the application's own: ``-previous`` (the kept build of an alias, for rollback),
``-queries`` and ``-ingest`` (the logs), ``-`` followed by 20 digits (a physical build), and the lock
index ``hybrid-search-locks`` of clusters.
"""

from __future__ import annotations

import re

from hybrid_search.config.errors import ConfigError, HybridSearchError, QueryError

__all__ = [
    "LOCK_INDEX",
    "check_field_name",
    "build_alias",
    "build_pattern",
    "check_index_name",
    "check_user_index_name",
    "previous_alias",
    "reserved_reason",
]

_INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,199}$")
_BUILD_SUFFIX = r"-\d{20}"
LOCK_INDEX = "hybrid-search-locks"
_RESERVED_SUFFIXES = {
    "-previous": "the previous build of index {base!r}, kept for rollback",
    "-queries": "the query log of index {base!r}",
    "-ingest": "the ingest log of index {base!r}",
}


def check_index_name(name: str) -> None:
    """An index or alias name every backend accepts; ``ConfigError`` otherwise."""
    if not isinstance(name, str) or not _INDEX_NAME.match(name):
        raise ConfigError(
            f"index name {name!r} is not valid: use lowercase letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit, at most 200)"
        )


def reserved_reason(name: str) -> str | None:
    """What the application uses ``name`` for, when it is one of its own; ``None`` for a free name."""
    if name == LOCK_INDEX:
        return "the writer locks of a cluster"
    for suffix, what in _RESERVED_SUFFIXES.items():
        if name.endswith(suffix) and len(name) > len(suffix):
            return what.format(base=name[: -len(suffix)])
    alias = build_alias(name)
    if alias is not None:
        return f"a physical build of index {alias!r}"
    return None


def check_user_index_name(name: str) -> None:
    """A name a user may give an index: valid, and not in the application's reserved namespace."""
    check_index_name(name)
    why = reserved_reason(name)
    if why is not None:
        raise ConfigError(
            f"index name {name!r} is reserved: it is {why}. Choose another name (names ending in -previous, "
            "-queries, -ingest or -<20 digits> belong to the application)"
        )


def previous_alias(alias: str) -> str:
    """The alias that keeps ``alias``'s previous build searchable until the next build, for ``rollback``."""
    return f"{alias}-previous"


def build_pattern(alias: str) -> re.Pattern[str]:
    """Matches exactly the physical build names of ``alias`` (``<alias>-<20 digits>``)."""
    return re.compile(re.escape(alias) + _BUILD_SUFFIX + "$")


def build_alias(name: str) -> str | None:
    """The alias a physical build name belongs to (``X`` of ``X-<20 digits>``), or ``None`` for any other name."""
    match = re.fullmatch(r"(.+)" + _BUILD_SUFFIX, name)
    return match.group(1) if match else None


_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


def check_field_name(name: object, what: str = "filter field", error: type[HybridSearchError] = QueryError) -> None:
    """A metadata field name every backend treats alike (no dots: engines read one as a path into nested
    objects); ``error`` otherwise. Ingest refuses such a ``--metadata-fields`` entry (``ConfigError``), filters
    such a key (``QueryError``)."""
    if not isinstance(name, str) or not _FIELD_NAME.match(name):
        hint = " (a '.' would be read as a path into nested objects)" if isinstance(name, str) and "." in name else ""
        raise error(
            f"{what} {name!r} is not a valid metadata field name: use letters, digits, '_' and '-', starting "
            f"with a letter or '_', at most 64{hint}"
        )
