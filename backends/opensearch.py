"""The OpenSearch backend (2.19+ and 3.x) on the official ``opensearch-py`` client.

Everything both engines agree on (connection errors, alias builds, resilient bulk, rejects, count check,
duplicates access) comes from ``ClusterBackend``; this module holds what differs: ``index.knn`` with a
``knn_vector`` field (lucene or faiss HNSW, optional fp16 scalar quantisation), the ``knn`` query with its
filter inside, learned-sparse search on ``rank_features`` (``neural_sparse`` with client-encoded
``query_tokens`` where the neural-search plugin is installed, plain ``rank_feature`` clauses otherwise), and
server-side fusion of any two or three legs through a ``hybrid`` query and a search pipeline that the backend
creates or updates idempotently (``normalization-processor``: min_max or l2 with weighted arithmetic_mean;
``score-ranker-processor`` RRF from 2.19). Without the neural-search plugin the ``fusion_refusal`` capability says
so and the pipeline fuses in the client; a server that refuses at run time is remembered the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hybrid_search.backends.base import IndexSpec
from hybrid_search.backends.cluster import bodies
from hybrid_search.backends.cluster.store import ClientLibrary, ClusterBackend
from hybrid_search.config.errors import ConfigError, FusionUnsupported
from hybrid_search.search.filters import METADATA_FIELD, Filter, to_query_dsl
from hybrid_search.search.interfaces import ServerFusion
from hybrid_search.search.request import Dense, FusionSpec, Leg, SearchRequest, Sparse, two_leg_request

__all__ = [
    "OpenSearchBackend",
    "os_fused_query",
    "os_hybrid_query",
    "os_index_body",
    "os_knn_body",
    "os_leg_query",
    "os_neural_sparse_body",
    "os_neural_sparse_query",
    "os_pipeline_body",
    "os_pipeline_refusal",
    "os_sparse_body",
]

KNN_PLUGIN = "opensearch-knn"
NEURAL_PLUGIN = "opensearch-neural-search"
SCORE_RANKER_SINCE = (2, 19, 0)
PAGINATION_DEPTH_SINCE = (2, 19, 0)
METHOD_PARAMETERS_SINCE = (2, 16, 0)
NORMALIZATION = {"minmax": "min_max", "l2": "l2"}  # OpenSearch has no z-score technique
TWO_LEGS = ("bm25", "knn")


def os_index_body(
    spec: IndexSpec,
    *,
    engine: str = "lucene",
    fp16: bool = False,
    ef_search: int = 100,
    replicas: int = 1,
    refresh_interval: str = "1s",
) -> dict[str, Any]:
    """``index.knn`` settings and a mapping with analysed text, an HNSW ``knn_vector`` and keyword metadata.
    An index of passages puts the HNSW vectors in a ``nested`` field of passages with their spans (the
    document's first-passage vector is kept unindexed, as a ``float`` array, for corpus-wide jobs)."""
    if fp16 and engine != "faiss":
        raise ConfigError("the fp16 scalar-quantisation encoder needs the faiss engine: set opensearch_engine=faiss")
    parameters: dict[str, Any] = {"m": spec.hnsw_m, "ef_construction": spec.hnsw_ef_construction}
    if fp16:
        parameters["encoder"] = {"name": "sq", "parameters": {"type": "fp16"}}
    analyzer, analysis = bodies.text_analysis(spec.analyzer)
    return {
        "settings": {
            "index": {
                "knn": True,
                "knn.algo_param.ef_search": ef_search,
                "number_of_replicas": replicas,
                "refresh_interval": refresh_interval,
            },
            **({"analysis": analysis} if analysis else {}),
        },
        "mappings": {
            "_meta": {bodies.SPEC_META_KEY: spec.to_dict()},
            "dynamic_templates": [bodies.metadata_dynamic_template()],
            "properties": {
                **{f: {"type": "text", "analyzer": analyzer} for f in bodies.TEXT_FIELDS},
                **_os_vector_fields(spec, engine, parameters),
                METADATA_FIELD: {"type": "object"},
                bodies.HASH_FIELD: {"type": "keyword", "index": False},
                **({bodies.SPARSE_FIELD: {"type": "rank_features"}} if spec.sparse_model else {}),
            },
        },
    }


def _os_vector_fields(spec: IndexSpec, engine: str, parameters: dict[str, Any]) -> dict[str, Any]:
    hnsw = {
        "type": "knn_vector",
        "dimension": spec.dims,
        "space_type": "innerproduct" if spec.similarity == "dot_product" else "cosinesimil",
        "method": {"name": "hnsw", "engine": engine, "parameters": parameters},
    }
    if not spec.passages:
        return {bodies.VECTOR_FIELD: hnsw}
    span = {"type": "integer", "index": False}
    return {
        bodies.VECTOR_FIELD: {"type": "float", "index": False},
        bodies.PASSAGES_FIELD: {
            "type": "nested",
            "properties": {bodies.VECTOR_FIELD: hnsw, "start": span, "end": span},
        },
    }


def os_sparse_body(vector: Mapping[str, float], k: int, filters: Filter | None) -> dict[str, Any]:
    """Learned-sparse search on a ``rank_features`` field: one ``rank_feature`` clause per query token,
    linear, boosted by the token's weight, so the score is the dot product (any OpenSearch, no plugin)."""
    should = [
        {"rank_feature": {"field": f"{bodies.SPARSE_FIELD}.{token}", "linear": {}, "boost": float(weight)}}
        for token, weight in vector.items()
    ]
    query: dict[str, Any] = {"bool": {"should": should, "minimum_should_match": 1}}
    dsl = to_query_dsl(filters)
    if dsl:
        query["bool"]["filter"] = dsl
    return {"size": k, "query": query, "_source": {"excludes": bodies.SOURCE_EXCLUDES}}


def os_neural_sparse_query(vector: Mapping[str, float], filters: Filter | None) -> dict[str, Any]:
    """The neural-search plugin's ``neural_sparse`` query with client-encoded ``query_tokens`` (2.14+) on the
    ``rank_features`` field: the same dot product as ``os_sparse_body``, in one clause; filtered in a bool."""
    query: dict[str, Any] = {
        "neural_sparse": {bodies.SPARSE_FIELD: {"query_tokens": {t: float(w) for t, w in vector.items()}}}
    }
    dsl = to_query_dsl(filters)
    if dsl:
        query = {"bool": {"must": [query], "filter": dsl}}
    return query


def os_neural_sparse_body(vector: Mapping[str, float], k: int, filters: Filter | None) -> dict[str, Any]:
    return {
        "size": k,
        "query": os_neural_sparse_query(vector, filters),
        "_source": {"excludes": bodies.SOURCE_EXCLUDES},
    }


def os_knn_query(
    vector: np.ndarray,
    k: int,
    num_candidates: int,
    filters: Filter | None,
    version: tuple[int, int, int],
    passages: int = 0,
) -> dict[str, Any]:
    """The ``knn`` query; a filter goes inside it, so the engine filters while it searches the graph.
    ``passages`` > 0: a ``nested`` query over the passage vectors (a document scores as its best passage,
    ``score_mode: max``) with the best ``passages`` passages as ``inner_hits``; the metadata filter stays on
    the document, outside the nested query."""
    clause: dict[str, Any] = {"vector": [float(x) for x in np.asarray(vector).ravel()], "k": k}
    dsl = to_query_dsl(filters)
    if dsl and not passages:
        clause["filter"] = {"bool": {"filter": dsl}}
    if version >= METHOD_PARAMETERS_SINCE:
        clause["method_parameters"] = {"ef_search": max(num_candidates, k)}
    if not passages:
        return {"knn": {bodies.VECTOR_FIELD: clause}}
    nested = {
        "nested": {
            "path": bodies.PASSAGES_FIELD,
            "query": {"knn": {bodies.PASSAGE_VECTOR: clause}},
            "score_mode": "max",
            "inner_hits": bodies.inner_hits_body(passages),
        }
    }
    return {"bool": {"must": [nested], "filter": dsl}} if dsl else nested


def os_knn_body(
    vector: np.ndarray,
    k: int,
    num_candidates: int,
    filters: Filter | None,
    version: tuple[int, int, int],
    passages: int = 0,
) -> dict[str, Any]:
    return {
        "size": k,
        "query": os_knn_query(vector, k, num_candidates, filters, version, passages),
        "_source": {"excludes": bodies.SOURCE_EXCLUDES},
    }


def os_pipeline_refusal(
    fusion: FusionSpec, version: tuple[int, int, int], legs: Sequence[str] = TWO_LEGS
) -> str | None:
    """Why no search pipeline of this OpenSearch version fuses ``legs`` the way ``fusion`` asks, or ``None``."""
    weights = fusion.leg_weights(legs)
    if fusion.method == "rrf":
        if version < SCORE_RANKER_SINCE:
            return "RRF in a search pipeline needs OpenSearch 2.19+"
        if weights is not None:
            return "OpenSearch's score-ranker-processor has no per-query weights"
        return None
    if fusion.normalizer not in NORMALIZATION:
        return f"OpenSearch's normalization-processor has no {fusion.normalizer} technique"
    if weights is not None and sum(weights) <= 0:
        return "fusion weights sum to zero"
    return None


def os_pipeline_body(
    fusion: FusionSpec | ServerFusion, version: tuple[int, int, int], legs: Sequence[str] = TWO_LEGS
) -> dict[str, Any]:
    """The search pipeline that fuses a ``hybrid`` query's sub-query results (one per leg, in order)."""
    spec = fusion.spec() if isinstance(fusion, ServerFusion) else fusion
    reason = os_pipeline_refusal(spec, version, legs)
    if reason is not None:
        raise FusionUnsupported(reason)
    if spec.method == "rrf":
        processor: dict[str, Any] = {
            "score-ranker-processor": {"combination": {"technique": "rrf", "rank_constant": spec.k}}
        }
    else:
        raw = [spec.weight(name) for name in legs]
        weights = [w / sum(raw) for w in raw]  # the processor wants them to sum to 1
        processor = {
            "normalization-processor": {
                "normalization": {"technique": NORMALIZATION[spec.normalizer]},
                "combination": {"technique": "arithmetic_mean", "parameters": {"weights": weights}},
            }
        }
    described = " + ".join(legs).replace("bm25", "BM25").replace("knn", "kNN")
    return {"description": f"hybrid-search: {described} fusion", "phase_results_processors": [processor]}


def os_leg_query(
    leg: Leg, request: SearchRequest, version: tuple[int, int, int], passages: bool = False
) -> dict[str, Any]:
    """One ``hybrid`` sub-query per leg: ``match`` for BM25, ``knn``, and ``neural_sparse`` for the sparse leg."""
    if isinstance(leg, Dense):
        assert request.vector is not None, "the pipeline encodes before it fuses"
        return os_knn_query(
            request.vector, leg.depth, leg.num_candidates, request.filters, version, request.passages if passages else 0
        )
    if isinstance(leg, Sparse):
        assert request.sparse_vector is not None, "the pipeline encodes before it fuses"
        return os_neural_sparse_query(request.sparse_vector, request.filters)
    return bodies.bm25_query(request.query, request.filters)


def os_fused_query(request: SearchRequest, version: tuple[int, int, int], passages: bool = False) -> dict[str, Any]:
    """The ``hybrid`` search body over the request's legs; ``pagination_depth`` bounds each sub-query's results
    (2.19+)."""
    k = request.candidates
    hybrid: dict[str, Any] = {"queries": [os_leg_query(leg, request, version, passages) for leg in request.legs]}
    if version >= PAGINATION_DEPTH_SINCE:
        hybrid["pagination_depth"] = max(*(leg.depth for leg in request.legs), k)
    return {"size": k, "query": {"hybrid": hybrid}, "_source": {"excludes": bodies.SOURCE_EXCLUDES}}


def os_hybrid_query(
    query: str, vector: np.ndarray, k: int, *, version: tuple[int, int, int], **legs: Any
) -> dict[str, Any]:
    """Deprecated two-leg form of ``os_fused_query`` (``legs``: bm25_depth, knn_depth, num_candidates, filters)."""
    return os_fused_query(two_leg_request(query, vector, k, fusion=FusionSpec(), **legs), version)


def pipeline_name(body: dict[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
    return f"hybrid-search-{digest}"


class OpenSearchBackend(ClusterBackend):
    """``--backend opensearch``: see the module docstring."""

    name = "opensearch"
    distribution = "opensearch"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pipelines: set[str] = set()

    def _make_client(self) -> Any:
        from opensearchpy import OpenSearch

        s = self.settings
        kwargs: dict[str, Any] = {
            "timeout": s.request_timeout,
            "max_retries": s.max_retries,
            "retry_on_timeout": True,
            "verify_certs": s.verify_certs,
        }
        auth = self._auth()
        if "basic_auth" in auth:
            kwargs["http_auth"] = auth["basic_auth"]
        elif "api_key" in auth:
            kwargs["headers"] = {"Authorization": f"ApiKey {auth['api_key']}"}
        if s.ca_certs:
            kwargs["ca_certs"] = str(s.ca_certs)
        return OpenSearch(hosts=list(s.urls), **kwargs)

    def _library(self) -> ClientLibrary:
        from opensearchpy import ConnectionError, ConnectionTimeout, SSLError, TransportError, helpers

        return ClientLibrary((ConnectionError, ConnectionTimeout, SSLError), TransportError, helpers)

    def status_of(self, exc: BaseException) -> int | None:
        status = getattr(exc, "status_code", None)
        return status if isinstance(status, int) else None

    def _probe(self) -> bodies.ServerInfo:
        version = self.client.info()["version"]
        plugins = frozenset(p.get("component", "") for p in self.client.cat.plugins(format="json"))
        return bodies.ServerInfo(
            distribution=version.get("distribution", "elasticsearch"),
            version=bodies.parse_version(version["number"]),
            plugins=plugins,
        )

    def index_body(self, spec: IndexSpec, *, loading: bool) -> dict[str, Any]:
        s = self.index_settings
        serving = self._serving_settings()["index"]
        return os_index_body(
            spec,
            engine=s.opensearch_engine,
            fp16=s.opensearch_fp16,
            ef_search=s.hnsw_ef_search,
            replicas=0 if loading else serving["number_of_replicas"],
            refresh_interval="-1" if loading else serving["refresh_interval"],
        )

    def similarity(self, score: float) -> float:
        # innerproduct (the space for normalised models) scores d + 1 for d >= 0 and 1 / (1 - d) below
        if score >= 1.0:
            return score - 1.0
        return 1.0 - 1.0 / score if score > 0 else -1.0

    def knn_body(
        self, vector: np.ndarray, k: int, num_candidates: int, filters: Filter | None, passages: int = 0
    ) -> dict[str, Any]:
        return os_knn_body(vector, k, num_candidates, filters, self.server.version, passages)

    def sparse_body(self, vector: Mapping[str, float], k: int, filters: Filter | None) -> dict[str, Any]:
        if NEURAL_PLUGIN in self.server.plugins:
            return os_neural_sparse_body(vector, k, filters)
        return os_sparse_body(vector, k, filters)  # plain rank_feature clauses: the same scores, no plugin

    def dialect_fusion_refusal(self, request: SearchRequest) -> str | None:
        if NEURAL_PLUGIN not in self.server.plugins:
            return f"OpenSearch at {self.urls_text} has no neural-search plugin"
        if request.fusion is None or len(request.legs) < 2:
            return "a search of one leg has nothing to fuse"
        return os_pipeline_refusal(request.fusion, self.server.version, request.leg_names)

    def fused_body(self, request: SearchRequest, passages: bool = False) -> dict[str, Any]:
        assert request.fusion is not None, "checked by fusion_refusal"
        pipeline = os_pipeline_body(request.fusion, self.server.version, request.leg_names)
        name = pipeline_name(pipeline)
        if name not in self._pipelines:  # PUT is idempotent; once per process is enough
            self.call(
                "put search pipeline",
                self.client.transport.perform_request,
                "PUT",
                f"/_search/pipeline/{name}",
                body=pipeline,
            )
            self._pipelines.add(name)
        return {"pipeline": name, "body": os_fused_query(request, self.server.version, passages)}

    def _hybrid_search(self, index: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        return self.search_body(index, body["body"], params={"search_pipeline": body["pipeline"]})
