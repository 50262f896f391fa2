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


def test_a_pipeline_checks_its_index_name_once_and_reads_aliases_once(sample_backend, encoder, monkeypatch):
    import hybrid_search.backends.base as base
    from hybrid_search.search.searcher import RetrievalPipeline

    checked: list[str] = []
    real = base.check_index_name
    monkeypatch.setattr(base, "check_index_name", lambda name: checked.append(name) or real(name))
    fresh = EmbeddedBackend(data_dir=sample_backend.data_dir)  # nothing read yet
    pipeline = RetrievalPipeline(fresh, index="sample", encoder=encoder, settings=SearchSettings(fusion="rrf"))
    for query in ("bread", "coffee", "green tea", "batteries"):
        for mode in ("bm25", "knn", "hybrid"):
            assert pipeline.search(query, mode=mode).hits
    assert checked == ["sample"]  # at open; no search checked it again
    assert fresh.alias_reads == 1  # aliases.json parsed once for the opened index, then only stat'ed
    with pytest.raises(ConfigError):
        fresh.search_bm25("../escape", "bread", 3)  # a bare name is still checked on every call
    assert checked[-1] == "../escape"
    fresh.close()


def test_a_request_is_one_value_built_once(sample_backend, encoder):
    from dataclasses import replace

    from hybrid_search.search.request import Dense, FusionSpec, Lexical, SearchRequest, build_request
    from hybrid_search.search.searcher import RetrievalPipeline

    settings = SearchSettings(fusion="rrf", top_k=5, bm25_depth=30, knn_depth=20, num_candidates=10)
    request = build_request(settings, "coffee", mode="hybrid+rerank")
    assert request.legs == (Lexical(50), Dense(50, 50)) and request.rerank.depth == 50 and request.candidates == 50
    assert request.mode == "hybrid+rerank" and request.fusion.leg_weights(["bm25", "knn"]) is None  # plain RRF
    assert build_request(settings, "coffee", mode="bm25").legs == (Lexical(5),)  # alone: exactly the candidates
    pipeline = RetrievalPipeline(sample_backend, index="sample", encoder=encoder, settings=settings)
    hand = SearchRequest("coffee", legs=(Lexical(30), Dense(20, 10)), top_k=5, fusion=FusionSpec.of("rrf"))
    assert pipeline.run(hand).doc_ids == pipeline.search("coffee", mode="hybrid").doc_ids
    lexical_only = replace(hand, legs=(Lexical(30),), fusion=None)
    assert (
        lexical_only.mode == "bm25"
        and pipeline.run(lexical_only).doc_ids == pipeline.search("coffee", mode="bm25").doc_ids
    )
    with pytest.raises(ConfigError, match="FusionSpec"):
        SearchRequest("coffee", legs=(Lexical(), Dense()))
    with pytest.raises(ConfigError, match="once"):
        SearchRequest("coffee", legs=(Lexical(), Lexical(5)), fusion=FusionSpec())


def test_a_third_leg_needs_no_change_to_fusion_or_the_pipeline(sample_backend, encoder):
    """A leg written outside the library (BM25 over a query with its question words dropped) joins BM25 and
    kNN: fusion, the pipeline and the result types take any number of legs."""
    from dataclasses import dataclass
    from typing import ClassVar

    from hybrid_search.search.fusion import fuse_rrf
    from hybrid_search.search.request import Dense, FusionSpec, Lexical, SearchRequest
    from hybrid_search.search.searcher import RetrievalPipeline

    @dataclass(frozen=True)
    class Keywords:
        depth: int = 20
        name: ClassVar[str] = "keywords"
        score_field: ClassVar[str | None] = None
        needs_vector: ClassVar[bool] = False

        def retrieve(self, index, request):
            words = [w for w in request.query.split() if w.lower() not in {"how", "do", "i", "my", "why", "does"}]
            return index.search_bm25(" ".join(words), self.depth, request.filters)

    query = "how do I keep my sourdough starter alive"
    legs = (Lexical(20), Dense(20, 40), Keywords(20))
    request = SearchRequest(query, legs=legs, top_k=5, fusion=FusionSpec.of("rrf"))
    pipeline = RetrievalPipeline(sample_backend, index="sample", encoder=encoder)
    result = pipeline.run(request)
    assert result.mode == "bm25+knn+keywords" and result.fusion_location == "client"
    assert {"bm25", "knn", "keywords", "fusion"} <= set(result.timings_ms)
    handle = sample_backend.open_index("sample")
    vector = encoder.encode_queries([query])[0]
    runs = [
        handle.search_bm25(query, 20),
        handle.search_knn(vector, 20, 40),
        handle.search_bm25("keep sourdough starter alive", 20),
    ]
    expected = fuse_rrf([[(h.doc_id, h.score) for h in run] for run in runs], k=60)[:5]
    assert [(h.doc_id, pytest.approx(h.score)) for h in result.hits] == [(d, pytest.approx(s)) for d, s in expected]
    top = result.hits[0]
    assert set(top.leg_scores) == {"bm25", "knn", "keywords"} and top.bm25_score == top.leg_scores["bm25"]


def test_an_engine_that_cannot_fuse_says_so_and_is_never_asked(sample_backend, encoder, monkeypatch):
    """Capabilities, not exceptions: a normal embedded hybrid search asks ``fusion_refusal`` and fuses in
    the client; ``search_fused`` (which would raise) is never called."""
    from hybrid_search.search.searcher import RetrievalPipeline

    def never(*args, **kwargs):
        raise AssertionError("search_fused was called on an engine that said it cannot fuse")

    monkeypatch.setattr(type(sample_backend), "search_fused", never)
    pipeline = RetrievalPipeline(sample_backend, index="sample", encoder=encoder)
    request = pipeline.request("coffee", mode="hybrid")
    assert sample_backend.fusion_refusal(request) == "the embedded backend fuses in the client"
    assert pipeline.run(request).fusion_location == "client"
