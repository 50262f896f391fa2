"""Fusing the learned-sparse leg on the server: Elasticsearch retrievers and OpenSearch ``hybrid`` queries over
any two or three legs, every body checked against the official specs (``neural_sparse``, a plugin query the
OpenSearch spec lacks, against its documented shape), and RRF over three legs run on noida-db, where the
server's fused ranking must equal the client's."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from conftest import SAMPLE

from hybrid_search.backends.cluster import bodies
from hybrid_search.backends.elasticsearch import es_fused_body, es_fusion_refusal
from hybrid_search.backends.opensearch import (
    os_fused_query,
    os_neural_sparse_body,
    os_pipeline_body,
    os_pipeline_refusal,
)
from hybrid_search.config.settings import SearchSettings, load_settings
from hybrid_search.search.request import Dense, FusionSpec, Lexical, SearchRequest, Sparse

VEC = np.linspace(-1, 1, 8).astype(np.float32)
TOKENS = {"tea": 1.98, "##ing": 0.4, "green": 1.8}
FILTERS = (None, {"lang": "en"}, {"lang": "en", "topic": ["a", "b"]})
LEGS = {"bm25": Lexical(100), "knn": Dense(50, 200), "sparse": Sparse(80)}
COMBOS = (("bm25", "sparse"), ("knn", "sparse"), ("bm25", "knn", "sparse"))


def request(legs: tuple[str, ...], fusion: FusionSpec, filters=None) -> SearchRequest:
    return SearchRequest(
        query="green tea",
        legs=tuple(LEGS[name] for name in legs),
        top_k=10,
        fusion=fusion,
        filters=filters,
        vector=VEC,
        sparse_vector=TOKENS,
    )


def errors(v, body: dict[str, Any], path: str = "/{index}/_search", method: str = "post") -> list:
    return v.check_request(method, path, body)


# filters once per spec and fusion, on the three-leg body (the two-leg spec tests check each filter shape)
LEGS_AND_FILTERS = [
    (("bm25", "sparse"), None),
    (("knn", "sparse"), FILTERS[1]),
    (("bm25", "knn", "sparse"), FILTERS[2]),
]


@pytest.mark.parametrize("legs,filters", LEGS_AND_FILTERS)
@pytest.mark.parametrize(
    "name,version,fusion",
    [
        ("es-8.15-elasticsearch-openapi.json", (8, 15, 3), FusionSpec.of("rrf", k=20)),
        ("es-8.17-elasticsearch-openapi.json", (8, 17, 0), FusionSpec.of("rrf")),
        (
            "es-main-elasticsearch-serverless-openapi.json",
            (9, 1, 0),
            FusionSpec.of("rrf", weights={"bm25": 0.2, "knn": 0.5, "sparse": 0.3}),
        ),
        (
            "es-main-elasticsearch-serverless-openapi.json",
            (9, 1, 0),
            FusionSpec.of("linear", weights={"bm25": 0.2, "knn": 0.5, "sparse": 0.3}, normalizer="l2"),
        ),
    ],
)
def test_elasticsearch_retrievers_over_the_sparse_leg_follow_the_spec(spec, legs, filters, name, version, fusion):
    body = es_fused_body(request(legs, fusion, filters), version)
    v = spec(name)
    assert errors(v, body) == []
    inner = body["retriever"][fusion.method]
    assert len(inner["retrievers"]) == len(legs) and inner["rank_window_size"] == max(LEGS[n].depth for n in legs)
    text = repr(body)
    assert ("sparse_vector" in text) and ("'knn'" in text) == ("knn" in legs)
    bad = copy.deepcopy(body)
    retrievers = bad["retriever"][fusion.method]["retrievers"]
    sparse = retrievers[-1].get("retriever", retrievers[-1])
    sparse["standard"]["query"]["sparse_vector"]["query_vectors"] = sparse["standard"]["query"]["sparse_vector"].pop(
        "query_vector"
    )
    assert errors(v, bad), "a misspelt sparse_vector key must fail"


def test_elasticsearch_refuses_what_its_version_cannot_fuse():
    three = ("bm25", "knn", "sparse")
    weighted = FusionSpec.of("rrf", weights={"bm25": 0.2, "knn": 0.5, "sparse": 0.3})
    assert es_fusion_refusal(request(three, FusionSpec.of("rrf")), (8, 15, 0)) is None
    assert "9.1" in (es_fusion_refusal(request(three, weighted), (8, 17, 0)) or "")
    assert "8.18" in (es_fusion_refusal(request(three, FusionSpec.of("linear", normalizer="minmax")), (8, 15, 0)) or "")
    one = SearchRequest(query="q", legs=(Sparse(10),), sparse_vector=TOKENS)
    assert es_fusion_refusal(one, (9, 1, 0)) == "a search of one leg has nothing to fuse"


# The neural_sparse query as documented (docs.opensearch.org, "Neural sparse query", 2.11+; raw query_tokens
# 2.14+): one field, holding query_tokens (token -> weight) or query_text with a model_id / analyzer.
NEURAL_SPARSE_KEYS = {"query_text", "query_tokens", "model_id", "analyzer", "max_token_score", "boost", "_name"}


def neural_sparse_errors(clause: Mapping[str, Any]) -> list[str]:
    out = []
    if set(clause) != {"neural_sparse"}:
        return [f"not a neural_sparse clause: {sorted(clause)}"]
    fields = clause["neural_sparse"]
    if not isinstance(fields, dict) or len(fields) != 1:
        return ["neural_sparse names exactly one rank_features field"]
    ((field, params),) = fields.items()
    if field != bodies.SPARSE_FIELD:
        out.append(f"field {field!r} is not the index's rank_features field")
    unknown = set(params) - NEURAL_SPARSE_KEYS
    if unknown:
        out.append(f"unknown keys {sorted(unknown)}")
    if ("query_tokens" in params) == ("query_text" in params):
        out.append("exactly one of query_tokens and query_text")
    tokens = params.get("query_tokens", {})
    if not isinstance(tokens, dict) or not all(
        isinstance(t, str) and isinstance(w, float) and w > 0 for t, w in tokens.items()
    ):
        out.append("query_tokens maps tokens to positive weights")
    return out


def _neural_clauses(node: Any, found: list) -> Any:
    """``node`` with each neural_sparse clause (collected into ``found``) replaced by match_all, so the rest of
    the body can be checked against the OpenSearch spec, which has no plugin queries."""
    if isinstance(node, dict):
        if "neural_sparse" in node:
            found.append(node)
            return {"match_all": {}}
        return {k: _neural_clauses(v, found) for k, v in node.items()}
    if isinstance(node, list):
        return [_neural_clauses(v, found) for v in node]
    return node


# the OpenSearch spec's query schema is slow to check (a filtered hybrid body takes ~20 s here): filters are
# checked once, on the three-leg body, as the knn and hybrid spec tests check them on the two-leg ones
@pytest.mark.parametrize("legs,filters", [*LEGS_AND_FILTERS[:1], (("knn", "sparse"), None), LEGS_AND_FILTERS[2]])
def test_opensearch_hybrid_over_the_sparse_leg_follows_the_spec(spec, legs, filters):
    v = spec("opensearch-openapi.gh-pages.yaml")
    body = os_fused_query(request(legs, FusionSpec.of("rrf"), filters), (3, 1, 0))
    found: list = []
    rest = _neural_clauses(body, found)
    assert len(found) == 1 and neural_sparse_errors(found[0]) == []
    assert errors(v, rest) == [] and len(body["query"]["hybrid"]["queries"]) == len(legs)
    broken = copy.deepcopy(found[0])
    broken["neural_sparse"][bodies.SPARSE_FIELD]["query_token"] = broken["neural_sparse"][bodies.SPARSE_FIELD].pop(
        "query_tokens"
    )
    assert neural_sparse_errors(broken)


@pytest.mark.parametrize("legs", COMBOS)
@pytest.mark.parametrize(
    "fusion",
    [FusionSpec.of("rrf", k=40), FusionSpec.of("linear", weights={"bm25": 0.2, "knn": 0.5, "sparse": 0.3})],
)
def test_opensearch_pipelines_over_the_sparse_leg_follow_the_spec(spec, legs, fusion):
    v = spec("opensearch-openapi.gh-pages.yaml")
    pipeline = os_pipeline_body(fusion, (3, 1, 0), legs)
    assert errors(v, pipeline, "/_search/pipeline/{id}", "put") == []
    if fusion.method == "linear":
        weights = pipeline["phase_results_processors"][0]["normalization-processor"]["combination"]["parameters"]
        expected = np.asarray([fusion.weight(n) for n in legs])
        np.testing.assert_allclose(weights["weights"], expected / expected.sum())


def test_a_standalone_neural_sparse_search_has_the_documented_shape(spec):
    v = spec("opensearch-openapi.gh-pages.yaml")
    for filters in (None, FILTERS[1]):
        body = os_neural_sparse_body(TOKENS, 10, filters)
        found: list = []
        assert errors(v, _neural_clauses(body, found)) == [] and len(found) == 1
        assert neural_sparse_errors(found[0]) == []
    weighted = FusionSpec.of("rrf", weights={"bm25": 0.2, "knn": 0.5, "sparse": 0.3})
    assert "weights" in (os_pipeline_refusal(weighted, (3, 1, 0), ("bm25", "knn", "sparse")) or "")
    assert os_pipeline_refusal(FusionSpec.of("rrf"), (3, 1, 0), ("bm25", "knn", "sparse")) is None


@pytest.mark.integration
def test_three_legs_fuse_on_elasticsearch_as_in_the_client(noida_url, encoder, splade, tmp_path):
    """noida-db runs ``retriever.rrf`` over a standard (BM25), a knn and a standard (sparse_vector) retriever:
    the fused ranking equals the client's RRF over the same three legs."""
    from hybrid_search.backends.elasticsearch import ElasticsearchBackend
    from hybrid_search.config.settings import BackendSettings, IndexSettings
    from hybrid_search.ingest.pipeline import run_ingest
    from hybrid_search.ingest.sources import open_source
    from hybrid_search.search.searcher import RetrievalPipeline

    with ElasticsearchBackend(BackendSettings(kind="elasticsearch", urls=(noida_url,)), IndexSettings()) as es:
        settings = load_settings(overrides={"data_dir": str(tmp_path)})
        run_ingest(open_source(SAMPLE), es, encoder, settings, alias="fuse3", sparse_encoder=splade)
        rrf = SearchSettings(fusion="rrf", rrf_k=20, bm25_depth=30, knn_depth=30, sparse_depth=30)
        server = RetrievalPipeline(es, index="fuse3", encoder=encoder, sparse_encoder=splade, settings=rrf)
        client_settings = rrf.model_copy(update={"server_fusion": False})
        client = RetrievalPipeline(es, index="fuse3", encoder=encoder, sparse_encoder=splade, settings=client_settings)
        for query in ("what temperature water for green tea", "how do batteries make electricity", "bread"):
            for mode in ("hybrid3", "bm25+sparse", "knn+sparse"):
                ours, theirs = client.search(query, mode=mode, top_k=10), server.search(query, mode=mode, top_k=10)
                assert theirs.fusion_location == "server" and ours.fusion_location == "client"
                np.testing.assert_allclose(
                    [h.fusion_score for h in theirs.hits], [h.fusion_score for h in ours.hits], rtol=1e-5
                )
                # the same documents at each fused score (a document in one leg at rank r ties with another
                # leg's document at rank r; engines order ties their own way)
                assert _by_score(theirs.hits) == _by_score(ours.hits), (query, mode)
        es.drop_index("fuse3")


def _by_score(hits) -> dict[float, set[str]]:
    out: dict[float, set[str]] = {}
    for h in hits:
        out.setdefault(round(h.fusion_score, 6), set()).add(h.doc_id)
    out.pop(min(out), None)  # the lowest score's tie may straddle the cut: either engine may keep either document
    return out
