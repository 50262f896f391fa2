"""Real-engine layer: the same contract suite and server-side fusion against real Elasticsearch 8.x and 9.x
started by testcontainers. Skips, with the reason, where no Docker daemon answers; runs unchanged where
one does.
"""

from __future__ import annotations

import numpy as np
import pytest
from backend_contract import SPEC, BackendContract, corpus, unit
from servers import docker_available

from hybrid_search.backends.elasticsearch import ElasticsearchBackend
from hybrid_search.config.settings import BackendSettings, IndexSettings
from hybrid_search.search.interfaces import ServerFusion

pytestmark = [pytest.mark.docker, pytest.mark.integration]

IMAGES = ["docker.elastic.co/elasticsearch/elasticsearch:8.15.3", "docker.elastic.co/elasticsearch/elasticsearch:9.1.5"]


@pytest.fixture(scope="module", params=IMAGES, ids=["es8", "es9"])
def es_url(request):
    reason = docker_available()
    if reason:
        pytest.skip(reason)
    from testcontainers.elasticsearch import ElasticSearchContainer

    container = ElasticSearchContainer(request.param, mem_limit="2G")
    container.with_env("xpack.license.self_generated.type", "trial")  # retrievers need more than basic
    with container:
        yield container.get_url()


@pytest.fixture()
def backend(es_url):
    with ElasticsearchBackend(BackendSettings(kind="elasticsearch", urls=(es_url,)), IndexSettings(replicas=0)) as b:
        yield b


class TestRealElasticsearchContract(BackendContract):
    pass


@pytest.mark.parametrize("method", ["rrf", "linear"])
def test_server_side_fusion_on_a_real_engine(backend, method):
    backend.ensure_index("fusion", SPEC)
    backend.upsert("fusion", corpus())
    backend.refresh("fusion")
    fusion = ServerFusion(method=method)
    query_vec = unit(0, 0, 0, 0, 0, 0, 0, 1.0)
    if method == "linear" and backend.server.version < (8, 18, 0):
        pytest.skip(f"linear retriever needs 8.18+, this image is {backend.server.version_text}")
    hits = backend.search_hybrid(
        "fusion", "tomato soup", query_vec, 3, bm25_depth=10, knn_depth=10, num_candidates=20, fusion=fusion
    )
    assert hits[0].doc_id in {"d7", "d9"} and np.isfinite(hits[0].score)
    backend.drop_index("fusion")
