"""The Elasticsearch backend (8.15+ and 9.x) on the official ``elasticsearch`` client.

What differs from OpenSearch lives here: the ``dense_vector`` mapping, the top-level ``knn`` search, and
server-side fusion of any two or three legs (BM25, kNN, learned-sparse ``sparse_vector``) with retrievers
(``rrf`` from 8.14, ``linear`` from 8.18, weighted RRF from 9.1). Where
the server is too old the backend says so by its ``fusion_refusal`` capability, and the pipeline fuses in
the client; a server that lacks the licence or answers that it does not know a retriever raises
``FusionUnsupported`` once, and that refusal is remembered and answered by the capability from then on.
Request bodies are built by the pure functions below, so tests can check each against the official spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from hybrid_search.backends.base import IndexSpec
from hybrid_search.backends.cluster import bodies
from hybrid_search.backends.cluster.store import ClientLibrary, ClusterBackend
from hybrid_search.config.errors import ConfigError, FusionUnsupported
from hybrid_search.search.filters import METADATA_FIELD, Filter, to_query_dsl
from hybrid_search.search.interfaces import ServerFusion
from hybrid_search.search.request import Dense, Leg, SearchRequest, Sparse, two_leg_request

__all__ = [
    "ElasticsearchBackend",
    "es_fused_body",
    "es_fusion_refusal",
    "es_hybrid_body",
    "es_index_body",
    "es_knn_body",
    "es_knn_clause",
    "es_leg_retriever",
    "es_sparse_body",
    "es_sparse_query",
]

RRF_SINCE = (8, 14, 0)
LINEAR_SINCE = (8, 18, 0)
WEIGHTED_RRF_SINCE = (9, 1, 0)
INDEX_OPTIONS_SINCE = {"hnsw": (8, 0, 0), "int8_hnsw": (8, 12, 0), "bbq_hnsw": (8, 18, 0)}
SERVER_NORMALIZERS = {"minmax": ("minmax", LINEAR_SINCE), "l2": ("l2_norm", (9, 1, 0))}  # no server zscore


def es_index_body(
    spec: IndexSpec, *, index_options: str = "hnsw", replicas: int = 1, refresh_interval: str = "1s"
) -> dict[str, Any]:
    """Settings and mappings: analysed title/text, an HNSW ``dense_vector``, keyword metadata. An index of
    passages puts the HNSW vectors in a ``nested`` field of passages (with their spans), as ``semantic_text``
    does, and keeps the document's first-passage vector unindexed (what corpus-wide jobs read)."""
    analyzer, analysis = bodies.text_analysis(spec.analyzer)
    options = {"type": index_options, "m": spec.hnsw_m, "ef_construction": spec.hnsw_ef_construction}
    hnsw = {
        "type": "dense_vector",
        "dims": spec.dims,
        "index": True,
        "similarity": spec.similarity,
        "index_options": options,
    }
    vectors: dict[str, Any] = {bodies.VECTOR_FIELD: hnsw}
    if spec.passages:
        span = {"type": "integer", "index": False}
        vectors = {
            bodies.VECTOR_FIELD: {"type": "dense_vector", "dims": spec.dims, "index": False},
            bodies.PASSAGES_FIELD: {
                "type": "nested",
                "properties": {bodies.VECTOR_FIELD: hnsw, "start": span, "end": span},
            },
        }
    return {
        "settings": {
            "index": {"number_of_replicas": replicas, "refresh_interval": refresh_interval},
            **({"analysis": analysis} if analysis else {}),
        },
        "mappings": {
            "_meta": {bodies.SPEC_META_KEY: spec.to_dict()},
            "dynamic_templates": [bodies.metadata_dynamic_template()],
            "properties": {
                **{f: {"type": "text", "analyzer": analyzer} for f in bodies.TEXT_FIELDS},
                **vectors,
                METADATA_FIELD: {"type": "object"},
                bodies.HASH_FIELD: {"type": "keyword", "index": False},
                **({bodies.SPARSE_FIELD: {"type": "sparse_vector"}} if spec.sparse_model else {}),
            },
        },
    }


def es_sparse_query(vector: Mapping[str, float]) -> dict[str, Any]:
    """The ``sparse_vector`` query with the client-encoded token weights (its score: the dot product)."""
    return {"sparse_vector": {"field": bodies.SPARSE_FIELD, "query_vector": dict(vector)}}


def es_sparse_body(vector: Mapping[str, float], k: int, filters: Filter | None) -> dict[str, Any]:
    """Learned-sparse search: ``es_sparse_query``, filtered without changing the scores."""
    query = es_sparse_query(vector)
    dsl = to_query_dsl(filters)
    if dsl:
        query = {"bool": {"must": [query], "filter": dsl}}
    return {"query": query, "size": k, "_source": {"excludes": bodies.SOURCE_EXCLUDES}}


def es_knn_clause(
    vector: np.ndarray, k: int, num_candidates: int, filters: Filter | None, *, passages: bool = False
) -> dict[str, Any]:
    """The kNN clause shared by the top-level ``knn`` search and the ``knn`` retriever; over the nested
    passage vectors in an index of passages (a document scores as its best passage)."""
    clause: dict[str, Any] = {
        "field": bodies.PASSAGE_VECTOR if passages else bodies.VECTOR_FIELD,
        "query_vector": [float(x) for x in np.asarray(vector).ravel()],
        "k": k,
        "num_candidates": max(num_candidates, k),
    }
    dsl = to_query_dsl(filters)
    if dsl:
        clause["filter"] = dsl
    return clause


def es_knn_body(
    vector: np.ndarray, k: int, num_candidates: int, filters: Filter | None, passages: int = 0
) -> dict[str, Any]:
    """The kNN search; ``passages`` > 0: over the nested passages, each hit with its best ``passages``
    passages as ``inner_hits``."""
    clause = es_knn_clause(vector, k, num_candidates, filters, passages=passages > 0)
    if passages:
        clause["inner_hits"] = bodies.inner_hits_body(passages)
    return {"knn": clause, "size": k, "_source": {"excludes": bodies.SOURCE_EXCLUDES}}


def es_fusion_refusal(request: SearchRequest, version: tuple[int, int, int]) -> str | None:
    """Why this Elasticsearch version cannot fuse ``request`` with a retriever, or ``None`` when it can (any two
    or three of the bm25, knn and sparse legs)."""
    fusion = request.fusion
    if fusion is None or len(request.legs) < 2:
        return "a search of one leg has nothing to fuse"
    if fusion.method == "rrf":
        if version < RRF_SINCE:
            return f"the rrf retriever needs Elasticsearch {_v(RRF_SINCE)}+"
        if fusion.leg_weights(request.leg_names) is not None and version < WEIGHTED_RRF_SINCE:
            return f"weighted rrf needs Elasticsearch {_v(WEIGHTED_RRF_SINCE)}+"
        return None
    if version < LINEAR_SINCE:
        return f"the linear retriever needs Elasticsearch {_v(LINEAR_SINCE)}+"
    normalizer, since = SERVER_NORMALIZERS.get(fusion.normalizer, (None, LINEAR_SINCE))
    if normalizer is None or version < since:
        return f"Elasticsearch {_v(version)}'s linear retriever has no {fusion.normalizer} normalizer"
    return None


def es_leg_retriever(leg: Leg, request: SearchRequest, passages: bool = False) -> dict[str, Any]:
    """The retriever that answers one leg: ``standard`` for BM25 and the sparse leg, ``knn`` for the dense one."""
    dsl = to_query_dsl(request.filters)
    if isinstance(leg, Dense):
        assert request.vector is not None, "the pipeline encodes before it fuses"
        return {"knn": es_knn_clause(request.vector, leg.depth, leg.num_candidates, request.filters, passages=passages)}
    if isinstance(leg, Sparse):
        assert request.sparse_vector is not None, "the pipeline encodes before it fuses"
        query = es_sparse_query(request.sparse_vector)
    else:
        query = bodies.bm25_query(request.query, None)
    standard: dict[str, Any] = {"query": query}
    if dsl:
        standard["filter"] = dsl
    return {"standard": standard}


def es_fused_body(request: SearchRequest, version: tuple[int, int, int], passages: bool = False) -> dict[str, Any]:
    """A ``retriever`` search fusing the request's legs on the server (``rrf``, weighted ``rrf`` or ``linear``
    over one retriever per leg); ``FusionUnsupported`` where this version cannot. ``passages``: the kNN
    retriever searches the nested passage vectors (a retriever has no ``inner_hits``: each hit's best
    passage is then chosen by the query's terms)."""
    reason = es_fusion_refusal(request, version)
    if reason is not None:
        raise FusionUnsupported(reason)
    fusion = request.fusion
    assert fusion is not None  # refusal checked
    k = request.candidates
    window = max(*(leg.depth for leg in request.legs), k)
    parts = [(es_leg_retriever(leg, request, passages), fusion.weight(leg.name)) for leg in request.legs]
    if fusion.method == "rrf":
        retrievers: list[Any] = [r for r, _ in parts]
        if fusion.leg_weights(request.leg_names) is not None:
            retrievers = [{"retriever": r, "weight": w} for r, w in parts]
        retriever = {"rrf": {"retrievers": retrievers, "rank_window_size": window, "rank_constant": fusion.k}}
    else:
        normalizer = SERVER_NORMALIZERS[fusion.normalizer][0]
        retriever = {
            "linear": {
                "retrievers": [{"retriever": r, "weight": w, "normalizer": normalizer} for r, w in parts],
                "rank_window_size": window,
            }
        }
    return {"retriever": retriever, "size": k, "_source": {"excludes": bodies.SOURCE_EXCLUDES}}


def es_hybrid_body(
    query: str, vector: np.ndarray, k: int, *, fusion: ServerFusion, version: tuple[int, int, int], **legs: Any
) -> dict[str, Any]:
    """Deprecated two-leg form of ``es_fused_body`` (``legs``: bm25_depth, knn_depth, num_candidates, filters)."""
    return es_fused_body(two_leg_request(query, vector, k, fusion=fusion.spec(), **legs), version)


def _v(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version[:2]))


class ElasticsearchBackend(ClusterBackend):
    """``--backend elasticsearch``: see the module docstring."""

    name = "elasticsearch"
    distribution = "elasticsearch"

    def _make_client(self) -> Any:
        try:
            from elasticsearch import Elasticsearch
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise ConfigError("the elasticsearch client is missing: pip install 'hybrid-search'") from exc
        s = self.settings
        kwargs: dict[str, Any] = {
            "request_timeout": s.request_timeout,
            "max_retries": s.max_retries,
            "retry_on_timeout": True,
            "verify_certs": s.verify_certs,
            **self._auth(),
        }
        if s.ca_certs:
            kwargs["ca_certs"] = str(s.ca_certs)
        return Elasticsearch(list(s.urls), **kwargs)

    def _library(self) -> ClientLibrary:
        from elastic_transport import ConnectionError, ConnectionTimeout, TlsError
        from elasticsearch import ApiError, helpers

        return ClientLibrary((ConnectionError, ConnectionTimeout, TlsError), ApiError, helpers)

    def status_of(self, exc: BaseException) -> int | None:
        status = getattr(exc, "status_code", None)
        if status is None:
            meta = getattr(exc, "meta", None)
            status = getattr(meta, "status", None)
        return status if isinstance(status, int) else None

    def _probe(self) -> bodies.ServerInfo:
        info = self.client.info()
        version = info["version"]
        distribution = version.get("distribution", "elasticsearch")
        return bodies.ServerInfo(distribution=distribution, version=bodies.parse_version(version["number"]))

    def index_body(self, spec: IndexSpec, *, loading: bool) -> dict[str, Any]:
        option = self.index_settings.es_vector_index
        since = INDEX_OPTIONS_SINCE[option]
        if self.server.version < since:
            raise ConfigError(
                f"{option} needs Elasticsearch {_v(since)}+, this server is "
                f"{self.server.version_text}: choose hnsw or int8_hnsw"
            )
        serving = self._serving_settings()["index"]
        return es_index_body(
            spec,
            index_options=option,
            replicas=0 if loading else serving["number_of_replicas"],
            refresh_interval="-1" if loading else serving["refresh_interval"],
        )

    def similarity(self, score: float) -> float:
        # dot_product and cosine both score (1 + similarity) / 2 for unit vectors
        return 2.0 * score - 1.0

    def knn_body(
        self, vector: np.ndarray, k: int, num_candidates: int, filters: Filter | None, passages: int = 0
    ) -> dict[str, Any]:
        return es_knn_body(vector, k, num_candidates, filters, passages)

    def sparse_body(self, vector: Mapping[str, float], k: int, filters: Filter | None) -> dict[str, Any]:
        return es_sparse_body(vector, k, filters)

    def dialect_fusion_refusal(self, request: SearchRequest) -> str | None:
        return es_fusion_refusal(request, self.server.version)

    def fused_body(self, request: SearchRequest, passages: bool = False) -> dict[str, Any]:
        return es_fused_body(request, self.server.version, passages)
