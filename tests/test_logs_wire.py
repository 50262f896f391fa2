"""Query and ingest logs over the wire: the real clients against noida-db (Elasticsearch 8.15 stand-in) and
osmem-server (OpenSearch stand-in). The log indexes get the strict mappings the code declares (read back),
an ingest leaves its summary, searches land in ``<alias>-queries``, ``inspect`` shows all of it, and a
burst against a hung writer neither blocks a search nor loses count. osmem-server has no kNN, so its
searches are BM25; the documents and mappings are the same code either way.
"""

from __future__ import annotations

import threading

import pytest
from servers import free_port

from hybrid_search.app.inspection import inspect_index
from hybrid_search.app.logs import INGEST_LOG_MAPPING, QUERY_LOG_MAPPING, QueryLog
from hybrid_search.backends.elasticsearch import ElasticsearchBackend
from hybrid_search.backends.logsinks import check_document, mapping_fields
from hybrid_search.backends.opensearch import OpenSearchBackend
from hybrid_search.config.settings import BackendSettings, IndexSettings, LogSettings, load_settings
from hybrid_search.ingest.sources import open_source
from hybrid_search.search.searcher import HybridSearcher

pytestmark = pytest.mark.integration

ENGINES = {
    "elasticsearch": ("noida_url", ElasticsearchBackend, ("bm25", "knn", "hybrid", "hybrid+rerank")),
    "opensearch": ("osmem_url", OpenSearchBackend, ("bm25", "bm25+rerank")),
}


def _backend(kind, url):
    _, cls, _ = ENGINES[kind]
    return cls(BackendSettings(kind=kind, urls=(url,)), IndexSettings(replicas=0))


@pytest.fixture(scope="module", params=sorted(ENGINES))
def engine(request):
    return request.param, request.getfixturevalue(ENGINES[request.param][0])


@pytest.fixture(scope="module")
def ingested(engine, encoder, tmp_path_factory):
    from conftest import SAMPLE, logged_ingest

    kind, url = engine
    settings = load_settings(overrides={"data_dir": str(tmp_path_factory.mktemp(f"logs-{kind}"))})
    with _backend(kind, url) as backend:
        for name in ("logged", "logged-ingest", "logged-queries"):
            backend.drop_index(name)
        summary = logged_ingest(open_source(SAMPLE), backend, encoder, settings, alias="logged")
        yield kind, backend, summary


def _read_back(backend, name):
    body = next(iter(backend.client.indices.get_mapping(index=name).values()))["mappings"]
    backend.refresh(name)
    docs = backend.client.search(index=name, body={"size": 500, "query": {"match_all": {}}})["hits"]["hits"]
    return body, [d["_source"] for d in docs]


def test_ingest_summary_lands_in_a_strictly_mapped_index(ingested):
    kind, backend, summary = ingested
    mapping, docs = _read_back(backend, "logged-ingest")
    assert mapping["dynamic"] == "strict"
    assert mapping_fields(mapping) == mapping_fields(INGEST_LOG_MAPPING)  # nothing guessed, nothing missing
    (doc,) = docs
    assert check_document(doc, INGEST_LOG_MAPPING) == []
    assert (doc["status"], doc["physical"], doc["backend"]) == ("completed", summary.physical, kind)
    assert (doc["read"], doc["stored"], doc["rejected"]) == (40, 40, 0)
    refused = backend.log_sink()
    with pytest.raises(Exception, match="refused 1 documents"):  # the cluster itself enforces the mapping
        refused.append("logged-ingest", [{"@timestamp": "2026-01-01T00:00:00Z", "unmapped": 1}])


def test_searches_are_logged_and_inspect_shows_everything(ingested, encoder, reranker):
    kind, backend, summary = ingested
    modes = ENGINES[kind][2]
    qlog = QueryLog(backend.log_sink(), index="logged", backend=kind, settings=LogSettings(flush_seconds=0.05))
    searcher = HybridSearcher(backend, index="logged", encoder=encoder, reranker=reranker, query_log=qlog)
    results = [searcher.search("how long should green tea steep", mode=m) for m in modes]
    results.append(searcher.search("zzzqqq xyzzy", mode="bm25"))
    stats = qlog.close()
    assert (stats.recorded, stats.written, stats.dropped, stats.failed) == (len(results),) * 2 + (0, 0)
    mapping, docs = _read_back(backend, "logged-queries")
    assert mapping["dynamic"] == "strict" and mapping_fields(mapping) == mapping_fields(QUERY_LOG_MAPPING)
    assert sorted(d["mode"] for d in docs) == sorted(r.mode for r in results)
    for doc in docs:
        assert check_document(doc, QUERY_LOG_MAPPING) == [] and doc["backend"] == kind
    by_mode = {d["mode"]: d for d in docs if d["zero_result"] == 0}
    assert [h["id"] for h in by_mode[modes[0]]["hits"]] == results[0].doc_ids
    assert sum(d["zero_result"] for d in docs) == 1
    reranked = next(d for d in docs if d["reranked"])
    assert all(h["rank_change"] == h["rank_before_rerank"] - h["rank"] for h in reranked["hits"])

    report = inspect_index(backend, "logged")
    s = report.stats
    assert (s.alias, s.physical, s.count) == ("logged", summary.physical, 40) and s.store_bytes > 0
    assert (
        s.spec.dims == 384
        and s.fields["title"] == "text"
        and s.fields.get("passages.vector", s.fields["vector"])
        in (
            "dense_vector",
            "knn_vector",
        )
    )
    assert s.vector.get("dims", s.vector.get("dimension")) == 384
    assert report.last_ingest["physical"] == summary.physical and report.queries_logged == len(results)
    text = report.table()
    assert summary.physical in text and "stored 40" in text and f"{len(results)} searches logged" in text


def test_a_burst_against_a_hung_cluster_writer(ingested):
    kind, backend, _ = ingested
    real = backend.log_sink()
    gate, entered = threading.Event(), threading.Event()

    class Hung:  # the real cluster sink, whose bulk waits for the gate
        location = real.location

        def ensure(self, name, mapping):
            real.ensure(name, mapping)

        def append(self, name, docs, *, refresh=False):
            entered.set()
            gate.wait()
            return real.append(name, docs, refresh=refresh)

    name = "burst"
    backend.drop_index(f"{name}-queries")
    qlog = QueryLog(
        Hung(), index=name, backend=kind, settings=LogSettings(queue_size=16, batch_size=8, flush_seconds=0.01)
    )
    searcher = HybridSearcher(backend, index="logged", query_log=qlog)
    searcher.search("first", mode="bm25")
    assert entered.wait(10)
    searches = []
    worker = threading.Thread(
        target=lambda: searches.extend(searcher.search(f"tea {i}", mode="bm25") for i in range(150))
    )
    worker.start()
    worker.join(120)
    assert not worker.is_alive() and len(searches) == 150 and all(r.hits for r in searches)
    assert qlog.stats.dropped == 150 - 16
    gate.set()
    stats = qlog.close()
    assert (stats.written, stats.dropped, stats.failed) == (17, 134, 0)
    backend.refresh(f"{name}-queries")
    assert backend.count(f"{name}-queries") == 17


def test_an_unreachable_cluster_never_fails_a_search(ingested):
    kind, backend, _ = ingested
    with _backend(kind, f"http://127.0.0.1:{free_port()}") as down:
        qlog = QueryLog(down.log_sink(), index="logged", backend=kind, settings=LogSettings(flush_seconds=0.01))
        searcher = HybridSearcher(backend, index="logged", query_log=qlog)
        results = [searcher.search(f"coffee {i}", mode="bm25") for i in range(5)]
        stats = qlog.close()
    assert all(r.hits for r in results)
    assert (stats.recorded, stats.written, stats.failed + stats.dropped) == (5, 0, 5)
