"""Each package's public surface is pinned: everything in ``__all__`` exists, nothing public is missing."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "hybrid_search": {
        "HybridSearch",
        "load_settings",
        "Settings",
        "Hit",
        "SearchResult",
        "IngestSummary",
        "EvalReport",
        "HybridSearchError",
        "ConfigError",
        "IndexNotFound",
        "__version__",
    },
    "hybrid_search.config": {
        "Settings",
        "load_settings",
        "Secret",
        "HybridSearchError",
        "ConfigError",
        "BackendUnavailable",
        "IndexingError",
        "QueryError",
        "FusionUnsupported",
        "IndexNotFound",
        "DashboardsError",
        "LogSettings",
    },
    "hybrid_search.search": {
        "HybridSearcher",
        "Hit",
        "SearchResult",
        "Filter",
        "fuse_rrf",
        "fuse_linear",
        "parse_mode",
        "rerank_hits",
        "Retriever",
        "QueryEncoder",
        "Reranker",
        "ServerFusion",
    },
    "hybrid_search.encoding": {"Encoder", "EncodeResult", "PoolingConfig", "resolve_model", "OFFLINE_MODELS"},
    "hybrid_search.rerank": {"CrossEncoderReranker"},
    "hybrid_search.backends": {
        "Backend",
        "IndexBuilder",
        "LogStore",
        "Inspectable",
        "EmbeddedBackend",
        "open_backend",
        "IndexSpec",
        "IndexedDocument",
        "BulkResult",
        "IndexStats",
        "JsonlLogSink",
        "LogSink",
        "previous_alias",
        "check_index_name",
    },
    "hybrid_search.ingest": {
        "run_ingest",
        "open_source",
        "open_query_set",
        "validate",
        "IngestSummary",
        "FieldMap",
        "sample_path",
        "Checkpoint",
    },
    "hybrid_search.app": {
        "HybridSearch",
        "evaluate",
        "EvalReport",
        "QueryLog",
        "QueryLogStats",
        "IngestLog",
        "inspect_index",
        "Inspection",
    },
}


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_exported_members(package):
    module = importlib.import_module(package)
    assert PUBLIC[package] <= set(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_every_error_derives_from_one_base():
    from hybrid_search import config

    for name in config.__all__:
        obj = getattr(config, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, config.HybridSearchError)
