"""Elasticsearch backend over the wire: the real client against the noida-db stand-in (Elasticsearch 8.15).

The shared contract suite runs unchanged; then what only a cluster backend does: alias swap with relaxed
settings, resume of the same physical index, per-item bulk errors, the refused ``linear`` retriever falling
back to client-side fusion, and errors that name the URL. Timings from the stand-in are never reported
as Elasticsearch's.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from backend_contract import SPEC, BackendContract, corpus, unit
from servers import free_port

from hybrid_search.backends.base import IndexedDocument
from hybrid_search.backends.elasticsearch import ElasticsearchBackend
from hybrid_search.config.errors import BackendUnavailable, ConfigError
from hybrid_search.config.settings import BackendSettings, IndexSettings, SearchSettings
from hybrid_search.search.interfaces import ServerFusion
from hybrid_search.search.searcher import HybridSearcher

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def es_url(noida_url):
    return noida_url


def make_backend(url: str, **backend_kw) -> ElasticsearchBackend:
    settings = BackendSettings(kind="elasticsearch", urls=(url,), **backend_kw)
    return ElasticsearchBackend(settings, IndexSettings(replicas=0))


@pytest.fixture()
def backend(es_url):
    with make_backend(es_url) as b:
        yield b


class TestElasticsearchContract(BackendContract):
    pass


def test_construction_does_no_io():
    b = make_backend(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    assert "client" not in b.__dict__ and "server" not in b.__dict__
    with pytest.raises(BackendUnavailable, match=r"did not answer .*check the URL"):
        b.count("anything")


def test_bad_settings_fail_at_construction():
    with pytest.raises(ConfigError, match="needs --url"):
        ElasticsearchBackend(BackendSettings(kind="elasticsearch"))
    with pytest.raises(ConfigError, match="http:// or https://"):
        ElasticsearchBackend(BackendSettings(kind="elasticsearch", urls=("localhost:9200",)))


def test_build_relaxes_then_restores_settings(backend):
    physical = backend.begin_build("swapme", SPEC)
    settings = backend.client.indices.get_settings(index=physical)[physical]["settings"]["index"]
    assert settings["refresh_interval"] == "-1" and str(settings["number_of_replicas"]) == "0"
    backend.upsert(physical, corpus())
    backend.finish_build("swapme", physical)
    settings = backend.client.indices.get_settings(index=physical)[physical]["settings"]["index"]
    assert settings["refresh_interval"] == "1s"
    assert backend.client.indices.get_alias(name="swapme") == {physical: {"aliases": {"swapme": {}}}}
    mapping = backend.client.indices.get_mapping(index=physical)[physical]["mappings"]
    assert mapping["properties"]["vector"]["index_options"]["type"] == "hnsw"
    assert backend.index_spec("swapme").dims == SPEC.dims
    hit = backend.search_knn("swapme", corpus()[1].vector, 1, 10)[0]
    assert hit.doc_id == "d1" and "vector" not in hit.metadata
    backend.drop_index("swapme")
    assert not backend.index_exists(physical)


def test_resume_continues_the_same_physical_index(backend):
    physical = backend.begin_build("resumable", SPEC)
    backend.upsert(physical, corpus()[:5])
    again = backend.begin_build("resumable", SPEC, resume_from=physical)
    assert again == physical
    backend.upsert(physical, corpus()[3:])  # overlaps: upserts replace, never duplicate
    backend.finish_build("resumable", physical)
    assert backend.count("resumable") == len(corpus())
    backend.drop_index("resumable")


def test_per_item_mapping_errors_are_reported(backend):
    backend.ensure_index("items", SPEC)
    bad_dims = IndexedDocument("short", "", "x", np.ones(3, dtype=np.float32), {})
    nan = IndexedDocument("nan", "", "x", np.full(8, np.nan, dtype=np.float32), {})
    result = backend.upsert("items", [corpus()[0], bad_dims, nan])
    assert result.stored == ("d0",)
    reasons = {f.doc_id: (f.status, f.reason) for f in result.failed}
    assert reasons["short"][0] == 400 and "dimensions" in reasons["short"][1]
    assert "finite" in reasons["nan"][1]
    backend.drop_index("items")


def test_rrf_runs_on_the_server(backend, caplog):
    backend.ensure_index("rrf", SPEC)
    backend.upsert("rrf", corpus())
    backend.refresh("rrf")
    fusion = ServerFusion(method="rrf", rrf_k=60)
    hits = backend.search_hybrid(
        "rrf",
        "tomato soup",
        unit(0, 0, 0, 0, 0, 0, 0, 1.0),
        3,
        bm25_depth=10,
        knn_depth=10,
        num_candidates=20,
        fusion=fusion,
    )
    assert hits[0].doc_id in {"d7", "d9"} and hits[0].fusion_score == hits[0].score
    backend.drop_index("rrf")


def test_refused_linear_retriever_falls_back_to_client_fusion(backend, caplog):
    backend.ensure_index("linear", SPEC)
    backend.upsert("linear", corpus())
    backend.refresh("linear")
    server = backend.server
    object.__setattr__(server, "version", (8, 18, 0))  # claim linear support so the server itself refuses
    settings = SearchSettings(fusion="linear", normalizer="minmax", top_k=3, bm25_depth=10, knn_depth=10)

    class QueryEncoder:
        def encode_queries(self, queries):
            return np.stack([unit(0, 0, 0, 0, 0, 0, 0, 1.0) for _ in queries])

        def close(self):
            pass

    searcher = HybridSearcher(backend, index="linear", encoder=QueryEncoder(), settings=settings)
    with caplog.at_level(logging.INFO):
        first = searcher.search("tomato soup")
        second = searcher.search("tomato soup")
    assert first.fusion_location == second.fusion_location == "client"
    assert first.hits[0].doc_id in {"d7", "d9"}
    assert first.hits[0].bm25_score is not None and first.hits[0].knn_score is not None
    assert sum("fusing in the client" in r.message for r in caplog.records) == 1
    assert "linear" in backend._server_fusion_refused
    backend.drop_index("linear")


def test_version_gates(backend):
    old = make_backend(backend.settings.urls[0])
    old.__dict__["server"] = type(backend.server)(distribution="elasticsearch", version=(8, 15, 3))
    old.index_settings = IndexSettings(es_vector_index="bbq_hnsw")
    with pytest.raises(ConfigError, match="bbq_hnsw needs Elasticsearch 8.18"):
        old.ensure_index("never", SPEC)


def test_cli_ingest_and_search_against_the_stand_in(es_url, tmp_path):
    import json
    import subprocess
    import sys

    from conftest import REPO, SAMPLE

    env_args = ["--backend", "elasticsearch", "--url", es_url, "--data-dir", str(tmp_path), "--quiet"]
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "hybrid_search.app.cli", *a, *env_args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    out = run("ingest", str(SAMPLE), "--index", "cli-sample")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["stored"] == 40
    out = run("search", "how does a battery make electricity", "--index", "cli-sample", "--json", "--fusion", "rrf")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["fusion_location"] == "server" and result["hits"][0]["doc_id"] in {"d32", "d31"}


def test_duplicate_mining_over_the_wire(backend):
    from hybrid_search.app.duplicates import mine_duplicates

    backend.ensure_index("dups", SPEC)
    twin = IndexedDocument("d0-copy", "title 0", "the cat sat on the warm mat", corpus()[0].vector, {})
    backend.upsert("dups", [*corpus(), twin])
    backend.refresh("dups")
    pairs = mine_duplicates(backend, "dups", threshold=0.999, top_k=3, chunk=4)
    assert [(p.a_id, p.b_id) for p in pairs] == [("d0", "d0-copy")]
    assert pairs[0].a_text == "title 0 the cat sat on the warm mat"
    backend.drop_index("dups")
