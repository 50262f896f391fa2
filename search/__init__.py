"""Search: the backend protocol and its embedded implementation, fusion, the hybrid searcher, evaluation.

Importing this package is cheap: engine libraries (tantivy, faiss) load only when ``EmbeddedBackend`` is
first touched, and torch only when a model is used.
"""

from typing import Any

from search.backend import Backend, BulkResult, IndexedDocument, IndexSpec, IndexStats, ServerFusion, open_backend
from search.filters import Filter
from search.fusion import FUSERS, NORMALIZERS, fuse, fuse_linear, fuse_rrf, normalize_minmax, normalize_zscore
from search.hits import Hit, SearchResult
from search.inspection import Inspection, inspect_index
from search.logs import JsonlLogSink, LogSink, QueryLog, QueryLogStats
from search.searcher import HybridSearcher, parse_mode

__all__ = [
    "FUSERS",
    "NORMALIZERS",
    "Backend",
    "BulkResult",
    "EmbeddedBackend",
    "Filter",
    "Hit",
    "HybridSearcher",
    "IndexSpec",
    "IndexStats",
    "IndexedDocument",
    "Inspection",
    "JsonlLogSink",
    "LogSink",
    "QueryLog",
    "QueryLogStats",
    "SearchResult",
    "ServerFusion",
    "fuse",
    "fuse_linear",
    "fuse_rrf",
    "inspect_index",
    "normalize_minmax",
    "normalize_zscore",
    "open_backend",
    "parse_mode",
]


def __getattr__(name: str) -> Any:
    if name == "EmbeddedBackend":
        from search.embedded import EmbeddedBackend

        return EmbeddedBackend
    raise AttributeError(f"module 'search' has no attribute {name!r}")
