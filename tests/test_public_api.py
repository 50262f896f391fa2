"""Each package's public surface is pinned: everything in ``__all__`` exists, nothing public is missing."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "config": {"Settings", "load_settings", "Secret", "HybridSearchError", "ConfigError", "BackendUnavailable",
               "IndexingError", "QueryError", "FusionUnsupported", "IndexNotFound", "DashboardsError", "LogSettings"},
    "ingest": {"Encoder", "run_ingest", "open_source", "open_query_set", "validate", "IngestSummary", "resolve_model"},
    "search": {"Backend", "HybridSearcher", "Hit", "SearchResult", "EmbeddedBackend", "fuse_rrf", "fuse_linear",
               "open_backend", "QueryLog", "QueryLogStats", "JsonlLogSink", "inspect_index", "Inspection"},
    "rerank": {"CrossEncoderReranker", "Reranker", "rerank_hits"},
}


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_exported_members(package):
    module = importlib.import_module(package)
    assert PUBLIC[package] <= set(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_every_error_derives_from_one_base():
    import config

    for name in config.__all__:
        obj = getattr(config, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, config.HybridSearchError)
