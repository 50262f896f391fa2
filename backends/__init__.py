"""Backends: where documents and vectors are stored and first-stage retrieval runs.

``embedded/`` (tantivy BM25 + faiss HNSW + SQLite, no server), ``elasticsearch`` and ``opensearch`` (both on
the shared ``cluster/`` package) implement the small protocols in ``base``; ``logsinks`` stores log
documents. ``open_backend`` is the registry: a kind names the module and class that implement it, imported
only when that backend is opened, so importing this package is cheap and no engine module imports it back.
Backends depend on ``config`` and ``search`` (hits, filters, the ``Retriever`` protocol).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hybrid_search.backends.base import (
    Backend,
    BulkResult,
    IndexBuilder,
    IndexedDocument,
    IndexSpec,
    IndexStats,
    Inspectable,
    LogStore,
    check_index_name,
    previous_alias,
)
from hybrid_search.backends.logsinks import JsonlLogSink, LogSink

if TYPE_CHECKING:
    from hybrid_search.backends.embedded import EmbeddedBackend
    from hybrid_search.config.settings import Settings

__all__ = [
    "Backend",
    "BulkResult",
    "EmbeddedBackend",
    "IndexBuilder",
    "IndexSpec",
    "IndexStats",
    "IndexedDocument",
    "Inspectable",
    "JsonlLogSink",
    "LogSink",
    "LogStore",
    "check_index_name",
    "open_backend",
    "previous_alias",
]


@dataclass(frozen=True, slots=True)
class _Engine:
    module: str  # under hybrid_search.backends
    cls: str
    title: str
    extra: str | None = None  # the pip extra its client comes with
    requires: tuple[str, ...] = ()  # modules that extra installs

    def open(self, settings: Settings) -> Backend:
        from hybrid_search.config.extras import require

        for module in self.requires:
            require(module, extra=self.extra or "", purpose=f"the {self.title} backend")
        cls = getattr(importlib.import_module(f"hybrid_search.backends.{self.module}"), self.cls)
        backend: Backend = cls.from_settings(settings)
        return backend


# kind -> where its implementation lives: adding an engine is one entry here and its package
ENGINES = {
    "embedded": _Engine("embedded", "EmbeddedBackend", "embedded"),
    "elasticsearch": _Engine(
        "elasticsearch", "ElasticsearchBackend", "Elasticsearch", "elasticsearch", ("elasticsearch", "tenacity")
    ),
    "opensearch": _Engine("opensearch", "OpenSearchBackend", "OpenSearch", "opensearch", ("opensearchpy", "tenacity")),
}


def open_backend(settings: Settings) -> Backend:
    """The backend the settings name. Nothing connects until first use."""
    from hybrid_search.config.errors import ConfigError

    engine = ENGINES.get(settings.backend.kind)
    if engine is None:
        raise ConfigError(f"unknown backend {settings.backend.kind!r}: use {', '.join(ENGINES)}")
    return engine.open(settings)


def __getattr__(name: str) -> Any:
    if name == "EmbeddedBackend":  # tantivy and faiss load only when it is asked for
        from hybrid_search.backends.embedded import EmbeddedBackend

        return EmbeddedBackend
    raise AttributeError(f"module 'hybrid_search.backends' has no attribute {name!r}")
