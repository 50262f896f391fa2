"""Contract layer for OpenSearch: every request body the backend can build (index creation with knn settings
for each engine and encoder, bulk action lines, settings and alias bodies, ``knn`` queries, ``hybrid``
queries, both search-pipeline processors) checked strictly against the official OpenSearch specification.
For kNN, hybrid and pipelines this is the only check on this machine (the stand-in has none of them), so
every variant is covered, and each has a deliberately broken twin that must fail.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from hybrid_search.backends.base import IndexedDocument, IndexSpec
from hybrid_search.backends.cluster import alias_actions, bm25_body
from hybrid_search.backends.opensearch import os_hybrid_query, os_index_body, os_knn_body, os_pipeline_body
from hybrid_search.config.errors import ConfigError, FusionUnsupported
from hybrid_search.search.interfaces import ServerFusion

SPEC_FILE = "opensearch-openapi.gh-pages.yaml"
VEC = np.linspace(-1, 1, 8).astype(np.float32)
FILTERS = (None, {"lang": "en"}, {"lang": "en", "topic": ["a", "b"]}, {"year": {"gte": 2019, "lt": 2022}})
VERSIONS = ((2, 19, 0), (3, 1, 0))


@pytest.fixture(scope="module")
def v(shared):
    from specs import validator

    path = shared / "specs" / SPEC_FILE
    if not path.exists():
        pytest.skip(f"{path} is absent: the official API specifications are not on this machine")
    return validator(str(path))


def ok(v, method, path, body):
    errors = v.check_request(method, path, body)
    assert errors == [], errors


def broken(v, method, path, body):
    assert v.check_request(method, path, body), f"broken body passed: {body}"


@pytest.mark.parametrize("engine,fp16", [("lucene", False), ("faiss", False), ("faiss", True)])
@pytest.mark.parametrize("similarity", ["dot_product", "cosine"])
def test_index_creation(v, engine, fp16, similarity):
    body = os_index_body(IndexSpec(dims=384, similarity=similarity, analyzer="english"), engine=engine, fp16=fp16)
    ok(v, "put", "/{index}", body)
    bad = copy.deepcopy(body)
    bad["mappings"]["properties"]["vector"]["dimensions"] = bad["mappings"]["properties"]["vector"].pop("dimension")
    broken(v, "put", "/{index}", bad)
    # (index settings are an open map in the specification, since plugins add their own, so a misspelt
    # setting cannot be caught here; the wire test reads the settings back from the server instead)


def test_fp16_needs_faiss():
    with pytest.raises(ConfigError, match="faiss"):
        os_index_body(IndexSpec(dims=8), engine="lucene", fp16=True)


def test_settings_alias_and_bulk_bodies(v):
    for body in (
        {"index": {"refresh_interval": "-1", "number_of_replicas": 0}},
        {"index": {"refresh_interval": "1s", "number_of_replicas": 1}},
    ):
        ok(v, "put", "/{index}/_settings", body)
    ok(v, "post", "/_aliases", alias_actions({"docs": (["docs-1"], "docs-2"), "docs-previous": (["docs-0"], "docs-1")}))
    ok(
        v,
        "post",
        "/_aliases",
        alias_actions({"docs": ([], "docs-2"), "docs-previous": ([], None)}, remove_index="docs"),
    )
    broken(v, "post", "/_aliases", {"actions": [{"add": {"index": "docs-2", "aliass": "docs"}}]})
    from opensearchpy import helpers

    from hybrid_search.backends.opensearch import OpenSearchBackend
    from hybrid_search.config.settings import BackendSettings

    b = OpenSearchBackend(BackendSettings(kind="opensearch", urls=("http://127.0.0.1:9",)))
    doc = IndexedDocument("d1", "t", "x", VEC, {"lang": "en"})
    schema = v.schema("_core.bulk___OperationContainer")
    for action in [*b._bulk_actions("idx", [doc]), {"_op_type": "delete", "_index": "idx", "_id": "d1"}]:
        header, _ = helpers.expand_action(action)
        assert v.errors(schema, header) == []
    assert v.errors(schema, {"index": {"_indx": "idx"}})


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("filters", FILTERS)
def test_bm25_knn_and_hybrid_queries(v, version, filters):
    ok(v, "post", "/{index}/_search", bm25_body('a "quoted" (query) AND: text', 10, filters))
    knn = os_knn_body(VEC, 10, 100, filters, version)
    ok(v, "post", "/{index}/_search", knn)
    bad = copy.deepcopy(knn)
    bad["query"]["knn"]["vector"]["kk"] = bad["query"]["knn"]["vector"].pop("k")
    broken(v, "post", "/{index}/_search", bad)
    hybrid = os_hybrid_query(
        "hybrid", VEC, 10, bm25_depth=100, knn_depth=50, num_candidates=200, filters=filters, version=version
    )
    assert hybrid["query"]["hybrid"]["pagination_depth"] == 100  # size beyond the candidate depth is bounded
    ok(v, "post", "/{index}/_search", hybrid)
    bad = copy.deepcopy(hybrid)
    bad["query"]["hybrid"]["querys"] = bad["query"]["hybrid"].pop("queries")
    broken(v, "post", "/{index}/_search", bad)


@pytest.mark.parametrize(
    "fusion",
    [
        ServerFusion("rrf", rrf_k=60),
        ServerFusion("rrf", rrf_k=10),
        ServerFusion("linear"),
        ServerFusion("linear", normalizer="l2", bm25_weight=0.2, knn_weight=0.6),
    ],
)
def test_search_pipelines(v, fusion):
    body = os_pipeline_body(fusion, (3, 1, 0))
    ok(v, "put", "/_search/pipeline/{id}", body)
    processor = body["phase_results_processors"][0]
    if "normalization-processor" in processor:
        assert sum(processor["normalization-processor"]["combination"]["parameters"]["weights"]) == pytest.approx(1)
    bad = copy.deepcopy(body)
    inner = next(iter(bad["phase_results_processors"][0].values()))
    inner["combinaton"] = inner.pop("combination")
    broken(v, "put", "/_search/pipeline/{id}", bad)


def test_what_opensearch_cannot_fuse_is_refused_before_sending():
    for fusion, version in (
        (ServerFusion("rrf"), (2, 18, 0)),
        (ServerFusion("linear", normalizer="zscore"), (3, 1, 0)),
        (ServerFusion("rrf", bm25_weight=0.1), (3, 1, 0)),
    ):
        with pytest.raises(FusionUnsupported):
            os_pipeline_body(fusion, version)


@pytest.mark.parametrize("log_mapping", ["queries", "ingest"])
def test_log_index_bodies(v, log_mapping):
    from specs import log_request_cases

    from hybrid_search.app.logs import INGEST_LOG_MAPPING, QUERY_LOG_MAPPING

    for method, path, body, valid in log_request_cases(
        QUERY_LOG_MAPPING if log_mapping == "queries" else INGEST_LOG_MAPPING
    ):
        (ok if valid else broken)(v, method, path, body)
    header = {"create": {"_index": "x-queries", "_id": "a1"}}
    assert v.errors(v.schema("_core.bulk___OperationContainer"), header) == []


@pytest.mark.parametrize("name", [SPEC_FILE])
@pytest.mark.parametrize("filters", FILTERS[1:])
def test_incremental_write_bodies(spec, name, filters):
    from specs import incremental_write_requests

    v = spec(name)
    valid, misspelt = incremental_write_requests(filters)
    for method, path, body in valid:
        ok(v, method, path, body)
    broken(v, *misspelt)
