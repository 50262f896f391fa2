"""Bulk ingest through faults, on both engines: the real pipeline, encoder and client against noida-db
(Elasticsearch) and osmem-server (OpenSearch), with 429 storms, 5xx
and dropped connections injected around the client's transport. Every valid document must end up stored
exactly once and the counts reported right; a fault that never clears stops the ingest resumably.
"""

from __future__ import annotations

import json

import pytest
from faults import BulkFaults, OpenSearchBulkFaults

from hybrid_search.backends.elasticsearch import ElasticsearchBackend
from hybrid_search.backends.opensearch import OpenSearchBackend
from hybrid_search.config.errors import IndexingError
from hybrid_search.config.settings import load_settings
from hybrid_search.ingest.pipeline import run_ingest
from hybrid_search.ingest.sources import open_source

ENGINES = {
    "elasticsearch": ("noida_url", ElasticsearchBackend, BulkFaults),
    "opensearch": ("osmem_url", OpenSearchBackend, OpenSearchBulkFaults),
}

pytestmark = pytest.mark.integration

DOCS = 300
BAD = {"g7", "g150"}  # rejected by validation (empty text), must not be counted as stored


@pytest.fixture(scope="module", params=sorted(ENGINES))
def engine(request):
    server, backend_cls, faults_cls = ENGINES[request.param]
    return request.param, request.getfixturevalue(server), backend_cls, faults_cls


@pytest.fixture()
def corpus(tmp_path):
    rows = [
        {
            "_id": f"g{i}",
            "title": "" if f"g{i}" in BAD else f"Doc {i}",
            "text": "" if f"g{i}" in BAD else f"fault tolerant ingest {i}",
        }
        for i in range(DOCS)
    ]
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return open_source(path)


def _setup(engine, tmp_path, attempts=8, workers=1):
    kind, url, backend_cls, faults_cls = engine
    settings = load_settings(
        overrides={
            "data_dir": str(tmp_path / "data"),
            "backend": {
                "kind": kind,
                "urls": url,
                "bulk_docs": 10,
                "bulk_attempts": attempts,
                "backoff_max": 4.0,
                "bulk_workers": workers,
            },
            "index": {"replicas": 0},
            "ingest": {"batch_size": 100},
        }
    )
    sleeps: list[float] = []
    backend = backend_cls(settings.backend, settings.index, sleep=sleeps.append)
    return settings, backend, sleeps, faults_cls


def _ids_stored_once(backend, alias):
    backend.refresh(alias)
    raw = backend.client.search(index=alias, body={"size": 1000, "_source": False, "query": {"match_all": {}}})
    ids = [h["_id"] for h in raw["hits"]["hits"]]
    return ids, len(ids) == len(set(ids))


@pytest.mark.parametrize("workers", [1, pytest.param(4, marks=pytest.mark.slow)])  # 4 workers: the slow tier
def test_every_fault_kind_during_bulk_loses_and_duplicates_nothing(engine, tmp_path, corpus, encoder, workers):
    """Exactly once with one bulk request at a time and with four concurrent ones (each retrying its share)."""
    settings, backend, sleeps, faults_cls = _setup(engine, tmp_path, workers=workers)
    storm = ["storm429"] * 4  # a storm: four bulk requests in a row answered 429
    faults_in_order = (
        storm
        + ["item429", "http502", "drop_after", "http503", "drop_before", "http504", "item429", "drop_after"]
        + storm
    )
    script = [step for fault in faults_in_order for step in (fault, None)]  # healthy answers in between
    with backend:
        faults = faults_cls(backend.client, script)
        summary = run_ingest(corpus, backend, encoder, settings, alias="faulty")
        faults.restore()
        assert (summary.read, summary.stored, summary.rejected) == (DOCS, DOCS - len(BAD), len(BAD))
        ids, unique = _ids_stored_once(backend, "faulty")
        assert unique and set(ids) == {f"g{i}" for i in range(DOCS)} - BAD
        assert backend.count("faulty") == DOCS - len(BAD)
        assert set(f for f in faults.seen if f) == {
            "storm429",
            "item429",
            "http502",
            "http503",
            "http504",
            "drop_before",
            "drop_after",
        }
        assert len(faults.threads) == (1 if workers == 1 else workers)  # N concurrent bulk requests
        assert sleeps and max(sleeps) <= 4.0  # backoff is capped
        assert len(set(sleeps)) > 1  # and jittered
        backend.drop_index("faulty")


@pytest.mark.parametrize("workers", [1, pytest.param(4, marks=pytest.mark.slow)])  # 4 workers: the slow tier
def test_a_fault_that_never_clears_stops_resumably(engine, tmp_path, corpus, encoder, workers):
    settings, backend, _, faults_cls = _setup(engine, tmp_path, attempts=3, workers=workers)
    with backend:
        faults = faults_cls(backend.client, ["http503"] * 1000)
        with pytest.raises(IndexingError, match="kept refusing .*rerun with --resume") as err:
            run_ingest(corpus, backend, encoder, settings, alias="outage")
        assert [f.reason for f in err.value.failed] == ["retryable error persisted"] * 100  # the whole first batch
        faults.restore()  # the cluster recovers
        summary = run_ingest(corpus, backend, encoder, settings, alias="outage", resume=True)
        assert summary.resumed and summary.stored == DOCS - len(BAD)
        ids, unique = _ids_stored_once(backend, "outage")
        assert unique and len(ids) == DOCS - len(BAD)
        backend.drop_index("outage")
