"""hybrid-search: hybrid BM25 + dense retrieval with fusion and cross-encoder reranking, on an embedded
backend or on Elasticsearch / OpenSearch.

    from hybrid_search import HybridSearch
    with HybridSearch(index="nq") as hs:
        hs.ingest("corpus.jsonl")
        print(hs.search("who wrote hamlet", mode="hybrid+rerank", top_k=5).hits[0])

Subpackages, lowest first (each imports only those before it): ``config`` (settings, errors), ``search``
(searcher, fusion, filters, hits), ``encoding`` (bi-encoder, model files), ``rerank`` (cross-encoder),
``backends`` (embedded, Elasticsearch, OpenSearch), ``ingest`` (sources, validation, pipeline), ``app``
(client, CLI, evaluation, logs, benchmarks, dashboards). Importing this package loads no model, torch or
engine library.
"""

from importlib.metadata import PackageNotFoundError, version

from hybrid_search.app.client import HybridSearch
from hybrid_search.app.evaluate import EvalReport
from hybrid_search.config.errors import (
    BackendUnavailable,
    BadRecordError,
    ConfigError,
    HybridSearchError,
    IndexingError,
    IndexNotFound,
    QueryError,
    SourceError,
)
from hybrid_search.config.settings import Settings, load_settings
from hybrid_search.ingest.pipeline import IngestSummary
from hybrid_search.search.hits import Hit, SearchResult

try:
    __version__ = version("hybrid-search")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"

__all__ = [
    "BackendUnavailable",
    "BadRecordError",
    "ConfigError",
    "EvalReport",
    "Hit",
    "HybridSearch",
    "HybridSearchError",
    "IndexNotFound",
    "IndexingError",
    "IngestSummary",
    "QueryError",
    "SearchResult",
    "Settings",
    "SourceError",
    "__version__",
    "load_settings",
]
