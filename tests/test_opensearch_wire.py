"""OpenSearch backend over the wire: the real opensearch-py client against the osmem-server stand-in.

osmem-server does index creation (with knn settings and mappings), bulk with per-item results, BM25,
aliases and counts, and nothing of kNN, ``hybrid`` or search pipelines. The shared contract suite runs
unchanged where it applies; its kNN tests are marked as needing a real engine (they run in the
testcontainers layer), never faked here.
"""

from __future__ import annotations

import pytest
from backend_contract import SPEC, BackendContract, corpus
from servers import free_port

from hybrid_search.backends.opensearch import OpenSearchBackend
from hybrid_search.config.errors import BackendUnavailable, FusionUnsupported, QueryError
from hybrid_search.config.settings import BackendSettings, IndexSettings
from hybrid_search.search.interfaces import ServerFusion

pytestmark = pytest.mark.integration

NEEDS_REAL_ENGINE = (
    "osmem-server has no kNN: this test runs on it in test_opensearch_knn_layer.py (exact kNN beside the stand-in)"
    " and against a real OpenSearch in the testcontainers layer"
)


@pytest.fixture(scope="session")
def os_url(osmem_url):
    return osmem_url


def make_backend(url: str) -> OpenSearchBackend:
    return OpenSearchBackend(BackendSettings(kind="opensearch", urls=(url,)), IndexSettings(replicas=0))


@pytest.fixture()
def backend(os_url):
    with make_backend(os_url) as b:
        yield b


class TestOpenSearchContract(BackendContract):
    @pytest.mark.skip(reason=NEEDS_REAL_ENGINE)
    def test_knn_returns_nearest_first(self):
        pass

    @pytest.mark.skip(reason=NEEDS_REAL_ENGINE)
    def test_deleted_documents_vanish(self):
        pass

    @pytest.mark.skip(reason=NEEDS_REAL_ENGINE)
    def test_filters_restrict_bm25_and_knn(self):
        pass


def test_bm25_filter_and_delete_without_knn(backend):
    backend.ensure_index("bm25only", SPEC)
    backend.upsert("bm25only", corpus())
    backend.refresh("bm25only")
    hits = backend.search_bm25("bm25only", "the", 10, {"topic": "finance"})
    assert hits and {h.doc_id for h in hits} <= {"d3", "d4"}
    assert backend.delete("bm25only", ["d3", "nope"]) == 1
    backend.refresh("bm25only")
    assert "d3" not in [h.doc_id for h in backend.search_bm25("bm25only", "stock markets", 5)]
    backend.drop_index("bm25only")


def test_index_is_created_with_knn_settings(backend):
    physical = backend.begin_build("knnidx", SPEC)
    mapping = backend.client.indices.get_mapping(index=physical)[physical]["mappings"]
    vector = mapping["properties"]["vector"]
    assert vector["type"] == "knn_vector" and vector["dimension"] == SPEC.dims
    assert vector["space_type"] == "innerproduct" and vector["method"]["engine"] == "lucene"
    settings = backend.client.indices.get_settings(index=physical)[physical]["settings"]["index"]
    assert str(settings["knn"]).lower() == "true" and settings["refresh_interval"] == "-1"
    backend.upsert(physical, corpus())
    backend.finish_build("knnidx", physical)
    assert backend.count("knnidx") == len(corpus()) and backend.index_spec("knnidx") == SPEC
    backend.drop_index("knnidx")


def test_without_the_neural_plugin_hybrid_falls_back(backend):
    assert backend.server.distribution == "opensearch"
    with pytest.raises(FusionUnsupported, match="neural-search"):
        backend.search_hybrid(
            "x", "q", corpus()[0].vector, 3, bm25_depth=5, knn_depth=5, num_candidates=10, fusion=ServerFusion("rrf")
        )


def test_knn_on_the_stand_in_is_a_clear_query_error(backend):
    backend.ensure_index("noknn", SPEC)
    with pytest.raises(QueryError, match="opensearch rejected"):
        backend.search_knn("noknn", corpus()[0].vector, 3, 10)
    backend.drop_index("noknn")


def test_unreachable_cluster_is_one_clear_error():
    b = make_backend(f"http://127.0.0.1:{free_port()}")
    assert "client" not in b.__dict__
    with pytest.raises(BackendUnavailable, match="opensearch at .* did not answer"):
        b.count("x")


def test_elasticsearch_url_given_to_opensearch_backend_says_so(noida_url):
    with make_backend(noida_url) as b:
        with pytest.raises(BackendUnavailable, match="use --backend elasticsearch"):
            b.count("x")


def test_cli_ingest_and_bm25_search_against_the_stand_in(os_url, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from conftest import REPO, SAMPLE

    common = ["--backend", "opensearch", "--url", os_url, "--data-dir", str(tmp_path), "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "hybrid_search.app.cli", *args, *common],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
            env=env,
        )

    out = run("ingest", str(SAMPLE), "--index", "cli-sample")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["stored"] == 40
    out = run("search", "green tea water temperature", "--index", "cli-sample", "--mode", "bm25", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["hits"][0]["doc_id"] == "d06"
