"""End to end on real labelled sets from ``../shared/data``: ingest the whole corpus, evaluate every mode.

Floors are the nDCG@10 this pipeline measured on these exact query subsets on the development machine
(2-core CPU, all-MiniLM-L6-v2, int8 ms-marco-MiniLM-L-12-v2), minus 0.02 of slack for run-to-run variation
in HNSW graph construction and float summation order; a drop past them is a real regression.
"""

from __future__ import annotations

import pytest

from hybrid_search.app.evaluate import evaluate, select_queries
from hybrid_search.backends.embedded import EmbeddedBackend
from hybrid_search.config.settings import load_settings
from hybrid_search.ingest.pipeline import run_ingest
from hybrid_search.ingest.sources import open_query_set, open_source
from hybrid_search.search.searcher import HybridSearcher

MODES = ("bm25", "knn", "hybrid", "hybrid+rerank")

# set -> (queries evaluated, rerank depth, nDCG@10 floor per mode). Measured (2026-11-22):
#   nq-open-gold-passages, 200 q: bm25 0.8400, knn 0.9451, hybrid 0.9220, hybrid+rerank 0.9529
#   quora-duplicates-20k, 300 q:  bm25 0.7654, knn 0.8490, hybrid 0.8388, hybrid+rerank 0.8299
CASES = {
    "nq-open-gold-passages": (200, 20, {"bm25": 0.82, "knn": 0.925, "hybrid": 0.90, "hybrid+rerank": 0.93}),
    "quora-duplicates-20k": (300, 20, {"bm25": 0.745, "knn": 0.83, "hybrid": 0.815, "hybrid+rerank": 0.81}),
}


@pytest.mark.e2e
@pytest.mark.parametrize(
    "name",
    [
        "nq-open-gold-passages",
        # 20k documents take about two minutes to encode on two cores: opt-in to keep the suite short
        pytest.param("quora-duplicates-20k", marks=pytest.mark.slow),
    ],
)
def test_every_mode_meets_its_floor(name, shared_data, memo_encoder, reranker, tmp_path):
    folder = shared_data / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent from this machine's shared data")
    n_queries, depth, floors = CASES[name]
    settings = load_settings(overrides={"data_dir": str(tmp_path), "search": {"rerank_depth": depth}})
    with EmbeddedBackend(data_dir=tmp_path) as backend:
        summary = run_ingest(open_source(folder), backend, memo_encoder, settings, alias=name)
        assert summary.rejected == 0 and summary.stored == summary.read == backend.count(name)
        qs = open_query_set(folder)
        queries = select_queries(qs.queries, qs.qrels, n_queries)
        searcher = HybridSearcher(
            backend, index=name, encoder=memo_encoder, reranker=reranker, settings=settings.search
        )
        report = evaluate(searcher, queries, qs.qrels, MODES)
    # captured: shown for a failure, or with `pytest -s` / `-rP`, never inside the progress line
    print(f"\n{name} ({len(queries)} queries, rerank depth {depth}, {summary.docs_per_s:.0f} docs/s ingest)")
    print(report.table())
    for mode, floor in floors.items():
        assert report.modes[mode].metrics["ndcg@10"] >= floor, (mode, report.modes[mode].metrics)
        assert report.modes[mode].queries == len(queries)


@pytest.mark.e2e
@pytest.mark.integration
def test_elasticsearch_matches_embedded_on_nq(shared_data, memo_encoder, tmp_path):
    """The same set through noida-db (Elasticsearch 8.15 stand-in) and the embedded backend.

    Tolerances: kNN 0.01 (noida's kNN is exact, faiss HNSW with ef 200 over 2,600 vectors is all but exact);
    BM25 0.03 (both are BM25 with k1 1.2, b 0.75, but Lucene's standard tokenizer and tantivy's simple one
    split some tokens differently, e.g. apostrophes and digits); hybrid 0.03 (server RRF on noida vs client
    RRF on the embedded ranks, inheriting the BM25 difference).
    """
    from servers import noida_elasticsearch

    folder = shared_data / "nq-open-gold-passages"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent from this machine's shared data")
    qs = open_query_set(folder)
    queries = select_queries(qs.queries, qs.qrels, 60)  # the stand-in answers hybrid in ~0.5-1 s
    modes = ("bm25", "knn", "hybrid")
    reports = {}
    with noida_elasticsearch(tmp_path / "noida") as url:
        for kind in ("embedded", "elasticsearch"):
            settings = load_settings(
                overrides={
                    "data_dir": str(tmp_path / kind),
                    "index": {"replicas": 0},
                    "backend": {"kind": kind, "urls": url},
                    "search": {"fusion": "rrf"},  # the stand-in fuses RRF on the server, as 8.15 does
                }
            )
            from hybrid_search.backends import open_backend

            with open_backend(settings) as backend:
                run_ingest(open_source(folder), backend, memo_encoder, settings, alias="nq")
                searcher = HybridSearcher(backend, index="nq", encoder=memo_encoder, settings=settings.search)
                reports[kind] = evaluate(searcher, queries, qs.qrels, modes)
                if kind == "elasticsearch":
                    assert searcher.search("who wrote hamlet", mode="hybrid").fusion_location == "server"
    for kind, report in reports.items():  # captured, like the tables above
        print(f"\nnq-open-gold-passages via {kind} ({len(queries)} queries)\n{report.table()}")
    for mode, tolerance in (("knn", 0.01), ("bm25", 0.03), ("hybrid", 0.03)):
        a = reports["embedded"].modes[mode].metrics["ndcg@10"]
        b = reports["elasticsearch"].modes[mode].metrics["ndcg@10"]
        assert abs(a - b) <= tolerance, (mode, a, b)
