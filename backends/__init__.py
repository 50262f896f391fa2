"""Backends: where documents and vectors are stored and first-stage retrieval runs.

``embedded`` (tantivy BM25 + faiss HNSW + SQLite, no server), ``elasticsearch`` and ``opensearch`` (both on
the shared ``cluster`` base) implement the small protocols in ``base``; ``logsinks`` stores log documents.
Backends depend on ``config`` and ``search`` (hits, filters, the ``Retriever`` protocol). Engine libraries
load only when a backend is constructed, so importing this package is cheap.
"""

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
    open_backend,
    previous_alias,
)
from hybrid_search.backends.logsinks import JsonlLogSink, LogSink

if TYPE_CHECKING:
    from hybrid_search.backends.embedded import EmbeddedBackend

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


def __getattr__(name: str) -> Any:
    if name == "EmbeddedBackend":  # tantivy and faiss load only when it is asked for
        from hybrid_search.backends.embedded import EmbeddedBackend

        return EmbeddedBackend
    raise AttributeError(f"module 'hybrid_search.backends' has no attribute {name!r}")
