"""Search: the request value, the retrieval pipeline, fusion, filters and typed results.

``search`` imports only ``config``. What it needs from storage, the bi-encoder and the cross-encoder is
declared here as small protocols (``search.interfaces``) that those packages implement.
"""

from hybrid_search.search.filters import Filter
from hybrid_search.search.fusion import (
    FUSERS,
    NORMALIZERS,
    fuse,
    fuse_linear,
    fuse_rrf,
    normalize_l2,
    normalize_minmax,
    normalize_zscore,
)
from hybrid_search.search.hits import Hit, SearchResult
from hybrid_search.search.interfaces import (
    QueryEncoder,
    Reranker,
    ResultRecorder,
    Retriever,
    SearchableIndex,
    ServerFusion,
)
from hybrid_search.search.request import (
    MODES,
    Dense,
    FusionSpec,
    Leg,
    Lexical,
    Preset,
    RerankSpec,
    SearchRequest,
    build_request,
    parse_mode,
)
from hybrid_search.search.searcher import BASE_MODES, HybridSearcher, RetrievalPipeline, fuse_legs, rerank_hits

__all__ = [
    "BASE_MODES",
    "MODES",
    "Dense",
    "FusionSpec",
    "Leg",
    "Lexical",
    "Preset",
    "RerankSpec",
    "RetrievalPipeline",
    "SearchRequest",
    "build_request",
    "fuse_legs",
    "FUSERS",
    "NORMALIZERS",
    "Filter",
    "Hit",
    "HybridSearcher",
    "QueryEncoder",
    "Reranker",
    "ResultRecorder",
    "Retriever",
    "SearchResult",
    "SearchableIndex",
    "ServerFusion",
    "fuse",
    "fuse_linear",
    "fuse_rrf",
    "normalize_l2",
    "normalize_minmax",
    "normalize_zscore",
    "parse_mode",
    "rerank_hits",
]
