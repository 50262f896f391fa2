"""The three kNN contract tests osmem-server cannot run, in a layer that runs here.

The real ``OpenSearchBackend`` talks to osmem-server for everything it can (index creation, bulk, deletes,
BM25, filters, aliases). Only a ``_search`` whose body is a ``knn`` query is answered beside it, and only
after that body passes the official OpenSearch specification strictly: the candidates come from
osmem-server itself (the ``filter`` inside the ``knn`` clause runs there as a real bool filter, deleted
documents are really gone), ranked by exact inner product, scored the way OpenSearch's ``innerproduct``
space scores (``1 + d`` for ``d >= 0``, ``1 / (1 - d)`` below). So the backend's own body building, filter
placement, response parsing and score-to-similarity conversion all run, against the embedded backend's
reference behaviour; the contract tests themselves are the unchanged ones. What this cannot show is
OpenSearch's HNSW recall: the real-engine layer (testcontainers) keeps those tests for real engines.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from backend_contract import BackendContract, corpus, unit

from hybrid_search.backends.opensearch import OpenSearchBackend
from hybrid_search.config.settings import BackendSettings, IndexSettings

pytestmark = pytest.mark.integration
SPEC_FILE = "opensearch-openapi.gh-pages.yaml"


def opensearch_score(d: float) -> float:
    """OpenSearch's innerproduct space: what it returns as ``_score`` for inner product ``d``."""
    return 1.0 + d if d >= 0 else 1.0 / (1.0 - d)


class ExactKnnBeside:
    """Answers ``knn`` searches from osmem-server's own documents; everything else goes to osmem-server."""

    def __init__(self, backend: OpenSearchBackend, spec) -> None:
        self.spec, self.transport = spec, backend.client.transport
        self.real = self.transport.perform_request
        self.transport.perform_request = self._perform
        self.answered = 0

    def _perform(self, method, url, *args, **kwargs):
        body, path = kwargs.get("body"), url.split("?")[0]
        if not path.endswith("/_search"):
            return self.real(method, url, *args, **kwargs)
        if isinstance(body, (str, bytes)):
            body = json.loads(body)
        if not (isinstance(body, dict) and "knn" in body.get("query", {})):
            return self.real(method, url, *args, **kwargs)
        errors = self.spec.check_request("post", "/{index}/_search", body)
        assert errors == [], errors  # the body the backend built is valid OpenSearch
        clause = body["query"]["knn"]["vector"]
        query = {"bool": {"filter": clause["filter"]["bool"]["filter"]}} if "filter" in clause else {"match_all": {}}
        index = path.rsplit("/_search", 1)[0].lstrip("/")
        found = self.real("POST", f"/{index}/_search", body={"query": query, "size": 10_000})["hits"]["hits"]
        vector = np.asarray(clause["vector"], dtype=np.float32)
        scored = sorted(
            ((float(np.dot(vector, h["_source"]["vector"])), h) for h in found),
            key=lambda item: (-item[0], item[1]["_id"]),
        )[: min(clause["k"], body["size"])]
        self.answered += 1
        excluded = set(body.get("_source", {}).get("excludes", []))
        hits = [
            {
                "_index": h["_index"],
                "_id": h["_id"],
                "_score": opensearch_score(d),
                "_source": {k: v for k, v in h["_source"].items() if k not in excluded},
            }
            for d, h in scored
        ]
        return {
            "took": 1,
            "timed_out": False,
            "hits": {
                "total": {"value": len(hits), "relation": "eq"},
                "max_score": hits[0]["_score"] if hits else None,
                "hits": hits,
            },
        }


@pytest.fixture(scope="module")
def os_spec(shared):
    from specs import validator

    path = shared / "specs" / SPEC_FILE
    if not path.exists():
        pytest.skip(f"{path} is absent: the official API specifications are not on this machine")
    return validator(str(path))


@pytest.fixture()
def backend(osmem_url, os_spec):
    with OpenSearchBackend(BackendSettings(kind="opensearch", urls=(osmem_url,)), IndexSettings(replicas=0)) as b:
        ExactKnnBeside(b, os_spec)
        yield b


class TestOpenSearchKnnContract:
    """The contract's three kNN tests, unchanged (the rest of it runs on osmem-server in test_opensearch_wire)."""

    index = BackendContract.index
    loaded = BackendContract.loaded
    test_knn_returns_nearest_first = BackendContract.test_knn_returns_nearest_first
    test_deleted_documents_vanish = BackendContract.test_deleted_documents_vanish
    test_filters_restrict_bm25_and_knn = BackendContract.test_filters_restrict_bm25_and_knn


def test_scores_come_back_as_the_similarity_the_embedded_backend_reports(backend, tmp_path):
    from backend_contract import SPEC

    from hybrid_search.backends.embedded import EmbeddedBackend

    docs = corpus()
    backend.drop_index("sims")
    backend.ensure_index("sims", SPEC)
    backend.upsert("sims", docs)
    backend.refresh("sims")
    with EmbeddedBackend(data_dir=tmp_path) as reference:
        reference.ensure_index("sims", SPEC)
        reference.upsert("sims", docs)
        rng = np.random.default_rng(7)
        for probe in [unit(*rng.normal(size=8)) for _ in range(4)]:  # no ties; negative similarities too
            ours = backend.search_knn("sims", probe, 5, 50)
            expected = reference.search_knn("sims", probe, 5, 50)
            assert [h.doc_id for h in ours] == [h.doc_id for h in expected]
            np.testing.assert_allclose([h.score for h in ours], [h.score for h in expected], atol=1e-5)
    backend.drop_index("sims")
