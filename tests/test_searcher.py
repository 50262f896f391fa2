"""HybridSearcher over the real embedded backend, encoder and cross-encoder."""

from __future__ import annotations

import logging

import pytest

from hybrid_search.backends.embedded import EmbeddedBackend
from hybrid_search.config.errors import ConfigError
from hybrid_search.config.settings import SearchSettings
from hybrid_search.ingest.pipeline import run_ingest
from hybrid_search.ingest.sources import open_source
from hybrid_search.search.fusion import fuse_rrf
from hybrid_search.search.searcher import HybridSearcher, parse_mode


@pytest.fixture(scope="module")
def sample_backend(tmp_path_factory, encoder):
    from conftest import SAMPLE

    from hybrid_search.config.settings import load_settings

    data = tmp_path_factory.mktemp("searcher")
    settings = load_settings(overrides={"data_dir": str(data)})
    with EmbeddedBackend(data_dir=data) as backend:
        run_ingest(open_source(SAMPLE), backend, encoder, settings, alias="sample")
        yield backend


def test_modes_parse():
    assert parse_mode("hybrid+rerank") == ("hybrid", True)
    assert parse_mode(" BM25 ") == ("bm25", False)
    for bad in ("dense", "hybrid+bm25", "knn+"):
        with pytest.raises(ConfigError, match="unknown mode"):
            parse_mode(bad)


def test_hybrid_fuses_bm25_and_knn_in_the_client(sample_backend, encoder, caplog):
    s = SearchSettings(fusion="rrf", bm25_depth=10, knn_depth=10, top_k=5)
    searcher = HybridSearcher(sample_backend, index="sample", encoder=encoder, settings=s)
    query = "why does bread get hard after a few days"
    with caplog.at_level(logging.INFO, logger="hybrid_search.search.searcher"):
        result = searcher.search(query, mode="hybrid")
        searcher.search(query, mode="hybrid")
    assert result.fusion_location == "client"
    assert sum("fusing in the client" in r.message for r in caplog.records) == 1  # logged once
    bm25 = sample_backend.search_bm25("sample", query, 10)
    knn = sample_backend.search_knn("sample", encoder.encode_queries([query])[0], 10, 200)
    expected = fuse_rrf([[(h.doc_id, h.score) for h in bm25], [(h.doc_id, h.score) for h in knn]], k=60)[:5]
    assert [(h.doc_id, pytest.approx(h.score)) for h in result.hits] == [(d, pytest.approx(s)) for d, s in expected]
    top = result.hits[0]
    assert top.doc_id == "d03" and top.rank == 1
    assert top.bm25_score is not None and top.knn_score is not None and top.fusion_score == top.score
    assert {"encode", "bm25", "knn", "fusion", "total"} <= set(result.timings_ms)


def test_linear_fusion_and_filters(sample_backend, encoder):
    s = SearchSettings(fusion="linear", normalizer="zscore", bm25_weight=0.2, knn_weight=0.8)
    searcher = HybridSearcher(sample_backend, index="sample", encoder=encoder, settings=s)
    result = searcher.search("coffee", top_k=3)
    assert result.mode == "hybrid" and len(result.hits) == 3
    assert {h.doc_id for h in result.hits} & {"d04", "d05"}
    assert searcher.search("coffee", mode="bm25", filters={"nothing": "here"}).hits == ()


def test_rerank_puts_the_cross_encoders_choice_first(sample_backend, encoder, reranker):
    s = SearchSettings(rerank_depth=10)
    searcher = HybridSearcher(sample_backend, index="sample", encoder=encoder, reranker=reranker, settings=s)
    result = searcher.search("how do I keep my sourdough starter alive", mode="bm25+rerank", top_k=3)
    assert result.mode == "bm25+rerank" and result.hits[0].doc_id == "d01"
    assert all(h.rerank_score is not None for h in result.hits) and "rerank" in result.timings_ms
    assert [h.rank for h in result.hits] == [1, 2, 3]


def test_missing_components_are_clear_errors(sample_backend):
    searcher = HybridSearcher(sample_backend, index="sample")
    with pytest.raises(ConfigError, match="need an encoder"):
        searcher.search("x", mode="knn")
    with pytest.raises(ConfigError, match="needs a reranker"):
        searcher.search("x", mode="bm25+rerank")
