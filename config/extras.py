"""Optional dependencies: import one, or fail with one line that names the extra to install.

    client = require("elasticsearch", extra="elasticsearch", purpose="the Elasticsearch backend")

The error is a ``ConfigError`` (the CLI prints it as one line) and an ``ImportError`` (what callers of an
optional import expect to catch).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from hybrid_search.config.errors import ConfigError

__all__ = ["MissingExtra", "require"]


class MissingExtra(ConfigError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def require(module: str, *, extra: str | None, purpose: str) -> ModuleType:
    """Import ``module``; if it is missing, raise ``MissingExtra`` naming ``hybrid-search[extra]`` (or, for a
    base dependency, ``extra=None``, the reinstall that brings it back)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        if exc.name is not None and exc.name.split(".")[0] != top:
            raise  # the module is there but something it needs is broken: show the real error
        fix = f"pip install 'hybrid-search[{extra}]'" if extra else "pip install --force-reinstall hybrid-search"
        raise MissingExtra(f"{purpose} needs the {top!r} package, which is not installed: {fix}") from exc
