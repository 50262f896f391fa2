"""Real-engine layer for OpenSearch: the full contract suite (kNN included) and server-side fusion through
the ``hybrid`` query and search pipelines, on OpenSearch 2.19 and 3.x started by testcontainers. Skips,
with the reason, where no Docker daemon answers.
"""

from __future__ import annotations

import pytest
from backend_contract import SPEC, BackendContract, corpus, unit
from servers import docker_available

from hybrid_search.backends.opensearch import OpenSearchBackend
from hybrid_search.config.settings import BackendSettings, IndexSettings
from hybrid_search.search.interfaces import ServerFusion

pytestmark = [pytest.mark.docker, pytest.mark.integration]

IMAGES = ["opensearchproject/opensearch:2.19.3", "opensearchproject/opensearch:3.2.0"]


@pytest.fixture(scope="module", params=IMAGES, ids=["os2", "os3"])
def os_url(request):
    reason = docker_available()
    if reason:
        pytest.skip(reason)
    from testcontainers.opensearch import OpenSearchContainer

    with OpenSearchContainer(request.param, security_enabled=False, mem_limit="2G") as container:
        config = container.get_config()
        yield f"http://{config['host']}:{config['port']}"


@pytest.fixture(params=["lucene", "faiss"])
def backend(os_url, request):
    settings = IndexSettings(replicas=0, opensearch_engine=request.param)
    with OpenSearchBackend(BackendSettings(kind="opensearch", urls=(os_url,)), settings) as b:
        yield b


class TestRealOpenSearchContract(BackendContract):
    pass


@pytest.mark.parametrize(
    "fusion",
    [
        ServerFusion("rrf"),
        ServerFusion("linear"),
        ServerFusion("linear", normalizer="l2", bm25_weight=0.3, knn_weight=0.7),
    ],
)
def test_hybrid_query_with_a_search_pipeline(backend, fusion):
    backend.ensure_index("fusion", SPEC)
    backend.upsert("fusion", corpus())
    backend.refresh("fusion")
    hits = backend.search_hybrid(
        "fusion",
        "tomato soup",
        unit(0, 0, 0, 0, 0, 0, 0, 1.0),
        3,
        bm25_depth=10,
        knn_depth=10,
        num_candidates=20,
        fusion=fusion,
    )
    assert hits[0].doc_id in {"d7", "d9"}
    backend.drop_index("fusion")
