"""Contract layer: every request body the Elasticsearch backend builds, checked strictly against the official
specification of the version that has the feature (8.15, 8.17, and the newest spec for ``linear``, weighted
RRF and ``bbq_hnsw``), and deliberately broken bodies rejected.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from elasticsearch import helpers

from hybrid_search.backends.base import IndexedDocument, IndexSpec
from hybrid_search.backends.cluster import ServerInfo, alias_actions, bm25_body
from hybrid_search.backends.elasticsearch import ElasticsearchBackend, es_hybrid_body, es_index_body, es_knn_body
from hybrid_search.config.settings import BackendSettings, IndexSettings
from hybrid_search.search.interfaces import ServerFusion

ES815, ES817, ESMAIN = (
    "es-8.15-elasticsearch-openapi.json",
    "es-8.17-elasticsearch-openapi.json",
    "es-main-elasticsearch-serverless-openapi.json",
)
STACK = (ES815, ES817)
VEC = np.linspace(-1, 1, 8).astype(np.float32)
FILTERS = (None, {"lang": "en"}, {"lang": "en", "topic": ["a", "b"]}, {"year": {"gte": 2019, "lt": 2022}})


def backend_at(version, **index_kw) -> ElasticsearchBackend:
    b = ElasticsearchBackend(
        BackendSettings(kind="elasticsearch", urls=("http://127.0.0.1:9",)), IndexSettings(**index_kw)
    )
    b.__dict__["server"] = ServerInfo("elasticsearch", version)  # bodies only: nothing connects
    return b


def ok(v, method, path, body):
    errors = v.check_request(method, path, body)
    assert errors == [], errors


def broken(v, method, path, body):
    assert v.check_request(method, path, body), f"broken body passed: {body}"


@pytest.mark.parametrize("name", STACK)
@pytest.mark.parametrize("options", ["hnsw", "int8_hnsw"])
@pytest.mark.parametrize("loading", [True, False])
def test_index_creation(spec, name, options, loading):
    body = backend_at((8, 17, 0), es_vector_index=options).index_body(
        IndexSpec(dims=384, analyzer="english"), loading=loading
    )
    ok(spec(name), "put", "/{index}", body)
    bad = copy.deepcopy(body)
    bad["mappings"]["properties"]["vector"]["dimz"] = bad["mappings"]["properties"]["vector"].pop("dims")
    broken(spec(name), "put", "/{index}", bad)


def test_bbq_index_options_against_the_newest_spec(spec):
    body = es_index_body(IndexSpec(dims=384), index_options="bbq_hnsw")
    mappings = {"mappings": body["mappings"]}  # serverless has no replica or refresh settings
    ok(spec(ESMAIN), "put", "/{index}", mappings)
    broken(spec(ES817), "put", "/{index}", mappings)  # not in 8.17: the version gate is right


@pytest.mark.parametrize("name", STACK)
def test_settings_and_alias_bodies(spec, name):
    b = backend_at((8, 15, 3))
    for body in (b._loading_settings(), b._serving_settings()):
        ok(spec(name), "put", "/{index}/_settings", body)
    ok(
        spec(name),
        "post",
        "/_aliases",
        alias_actions({"docs": (["docs-1"], "docs-2"), "docs-previous": (["docs-0"], "docs-1")}),
    )
    ok(
        spec(name),
        "post",
        "/_aliases",
        alias_actions({"docs": ([], "docs-2"), "docs-previous": ([], None)}, remove_index="docs"),
    )
    broken(spec(name), "post", "/_aliases", {"actions": [{"add": {"indexx": "docs-2", "alias": "docs"}}]})
    broken(spec(name), "put", "/{index}/_settings", {"index": {"refresh_intervall": "1s"}})


@pytest.mark.parametrize("name", STACK)
def test_bulk_action_lines(spec, name):
    b = backend_at((8, 15, 3))
    v = spec(name)
    doc = IndexedDocument("d1", "t", "x", VEC, {"lang": "en"})
    for action in list(b._bulk_actions("idx", [doc])) + [{"_op_type": "delete", "_index": "idx", "_id": "d1"}]:
        header, _source = helpers.expand_action(action)
        assert v.errors(v.schema("_global.bulk:OperationContainer"), header) == []
    assert v.errors(v.schema("_global.bulk:OperationContainer"), {"index": {"_idx": "idx"}})


@pytest.mark.parametrize("name", STACK + (ESMAIN,))
@pytest.mark.parametrize("filters", FILTERS)
def test_bm25_and_knn_search_bodies(spec, name, filters):
    v = spec(name)
    ok(v, "post", "/{index}/_search", bm25_body('what "is" (a) query: AND', 10, filters))
    ok(v, "post", "/{index}/_search", es_knn_body(VEC, 10, 100, filters))
    bad = es_knn_body(VEC, 10, 100, filters)
    bad["knn"]["query_vectorr"] = bad["knn"].pop("query_vector")
    broken(v, "post", "/{index}/_search", bad)
    bad = bm25_body("q", 10, filters)
    bad["querys"] = bad.pop("query")
    broken(v, "post", "/{index}/_search", bad)


@pytest.mark.parametrize(
    "name,version,fusion",
    [
        (ES815, (8, 15, 3), ServerFusion("rrf", rrf_k=20)),
        (ES817, (8, 17, 0), ServerFusion("rrf")),
        (ESMAIN, (9, 1, 0), ServerFusion("rrf", bm25_weight=0.3, knn_weight=0.7)),
        (ESMAIN, (9, 0, 0), ServerFusion("linear", bm25_weight=0.3, knn_weight=0.7)),
    ],
)
@pytest.mark.parametrize("filters", FILTERS)
def test_server_fusion_bodies(spec, name, version, fusion, filters):
    v = spec(name)
    body = es_hybrid_body(
        "hybrid search",
        VEC,
        10,
        bm25_depth=100,
        knn_depth=50,
        num_candidates=200,
        fusion=fusion,
        filters=filters,
        version=version,
    )
    ok(v, "post", "/{index}/_search", body)
    bad = copy.deepcopy(body)
    inner = bad["retriever"][fusion.method]
    inner["rank_windw_size"] = inner.pop("rank_window_size")
    broken(v, "post", "/{index}/_search", bad)


def test_retrievers_the_old_spec_lacks_are_gated(spec):
    from hybrid_search.config.errors import FusionUnsupported

    for fusion, version in (
        (ServerFusion("linear"), (8, 17, 0)),
        (ServerFusion("rrf", bm25_weight=0.2), (8, 17, 0)),
        (ServerFusion("rrf"), (8, 13, 0)),
        (ServerFusion("linear", normalizer="zscore"), (9, 0, 0)),
    ):
        with pytest.raises(FusionUnsupported):
            es_hybrid_body(
                "q",
                VEC,
                10,
                bm25_depth=10,
                knn_depth=10,
                num_candidates=10,
                fusion=fusion,
                filters=None,
                version=version,
            )
    linear = es_hybrid_body(
        "q",
        VEC,
        10,
        bm25_depth=10,
        knn_depth=10,
        num_candidates=10,
        fusion=ServerFusion("linear"),
        filters=None,
        version=(9, 0, 0),
    )
    broken(spec(ES817), "post", "/{index}/_search", linear)  # 8.17's spec has no linear retriever either


@pytest.mark.parametrize("name", STACK)
@pytest.mark.parametrize("log_mapping", ["queries", "ingest"])
def test_log_index_bodies(spec, name, log_mapping):
    from specs import log_request_cases

    from hybrid_search.app.logs import INGEST_LOG_MAPPING, QUERY_LOG_MAPPING

    v = spec(name)
    for method, path, body, valid in log_request_cases(
        QUERY_LOG_MAPPING if log_mapping == "queries" else INGEST_LOG_MAPPING
    ):
        (ok if valid else broken)(v, method, path, body)
    header, _ = helpers.expand_action({"_op_type": "create", "_index": "x-queries", "_id": "a1", "_source": {}})
    assert v.errors(v.schema("_global.bulk:OperationContainer"), header) == []


@pytest.mark.parametrize("name", STACK + (ESMAIN,))
@pytest.mark.parametrize("filters", FILTERS[1:])
def test_incremental_write_bodies(spec, name, filters):
    from specs import incremental_write_requests

    v = spec(name)
    valid, misspelt = incremental_write_requests(filters)
    for method, path, body in valid:
        ok(v, method, path, body)
    broken(v, *misspelt)
