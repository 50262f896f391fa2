"""The one rule for index and alias names, shared by settings (checked when they load, before anything
slow or anything written) and every backend entry point (``hybrid_search.backends.base.checks_names``).

It is the intersection of Elasticsearch's, OpenSearch's and a file system's rules: lowercase letters,
digits, '.', '_' and '-'; starting with a letter or digit (so never '.', '..', '-x' or '_x'); no path
separators; at most 200 characters (engines allow 255 bytes; the builds' timestamp suffixes need room).
"""

from __future__ import annotations

import re

from hybrid_search.config.errors import ConfigError

__all__ = ["check_index_name"]

_INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,199}$")


def check_index_name(name: str) -> None:
    """An index or alias name every backend accepts; ``ConfigError`` otherwise."""
    if not isinstance(name, str) or not _INDEX_NAME.match(name):
        raise ConfigError(
            f"index name {name!r} is not valid: use lowercase letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit, at most 200)"
        )
