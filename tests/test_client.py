"""The one-object client, used as the README shows: embedded by default, Elasticsearch (noida-db) by URL."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import SAMPLE

from hybrid_search import ConfigError, HybridSearch, IndexNotFound, load_settings

QUERIES = [
    "how do I keep my sourdough starter alive",
    "what temperature water for green tea",
    "why does bread get hard after a few days",
    "how do batteries make electricity",
]


@pytest.fixture()
def corpus(tmp_path):
    """The sample corpus with a ``lang`` field on every record (two records in German)."""
    path = tmp_path / "corpus.jsonl"
    lines = []
    for i, line in enumerate((SAMPLE / "corpus.jsonl").read_text(encoding="utf-8").splitlines()):
        record = json.loads(line)
        record["lang"] = "de" if i in (10, 11) else "en"
        record["year"] = 2015 + i % 10
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_readme_snippet_runs_as_written(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the embedded default lives under ./.hybrid-search
    with HybridSearch(index="nq") as hs:
        summary = hs.ingest(str(corpus), metadata_fields=["lang", "year"])
        hs.warm_up()
        result = hs.search("who wrote hamlet", mode="hybrid+rerank", top_k=5, filters={"lang": "en"})
        recent = hs.search("who wrote hamlet", filters={"year": {"gte": 2019, "lt": 2022}, "lang": ["en", "de"]})
        assert recent.hits and all(2019 <= h.metadata["year"] < 2022 for h in recent.hits)
        page2 = hs.search("who wrote hamlet", top_k=10, offset=10, highlight=True)
        assert page2.next_offset == 20 and [h.rank for h in page2.hits] == list(range(11, 21))
        assert summary.stored == 40 and len(result.hits) == 5
        assert all(h.metadata["lang"] == "en" for h in result.hits)
        assert result.hits[0].doc_id and isinstance(result.hits[0].score, float)
        assert {"encode", "rerank", "total"} <= set(result.timings_ms)

        from dataclasses import replace

        from hybrid_search.search import Dense, FusionSpec, Lexical

        request = hs.request("who wrote hamlet", mode="hybrid")
        assert request == hs.request("who wrote hamlet", mode="hybrid")  # a value: the same preset, the same request
        deeper = replace(request, legs=(Lexical(500), Dense(300, num_candidates=600)), fusion=FusionSpec.of("rrf"))
        hits = hs.search(deeper).hits
        assert len(hits) == 10 and hs.search(deeper).doc_ids == [h.doc_id for h in hits]
        assert hs.search(request).doc_ids == hs.search("who wrote hamlet", mode="hybrid").doc_ids
    assert (tmp_path / ".hybrid-search" / "aliases.json").is_file()


def test_construction_does_no_io_and_close_is_final(tmp_path):
    hs = HybridSearch(index="x", backend="elasticsearch", url="http://127.0.0.1:9")  # nothing listens there
    assert hs.settings.backend.kind == "elasticsearch" and hs.index == "x"
    hs.close()
    hs.close()  # idempotent
    with pytest.raises(ConfigError, match="closed"):
        hs.search("anything")
    with pytest.raises(ConfigError, match="backend"):
        HybridSearch(backend="solr")


def test_from_settings_with_a_file_and_index_override(tmp_path):
    cfg = tmp_path / "hybrid-search.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "d"}"\n[search]\nrrf_k = 20\n[index]\nname = "fromfile"\n')
    with HybridSearch.from_settings(load_settings(cfg), index="other") as hs:
        assert (hs.index, hs.settings.search.rrf_k) == ("other", 20)
        assert not hs.exists()
        with pytest.raises(IndexNotFound, match="'other' does not exist"):
            hs.search("x", mode="bm25")


def test_evaluate_stats_rollback_delete(tmp_path):
    with HybridSearch(index="sample", data_dir=tmp_path / "data") as hs:
        hs.ingest("sample")
        report = hs.evaluate("sample", modes=["bm25", "knn"])
        assert set(report.modes) == {"bm25", "knn"} and report.modes["knn"].metrics["ndcg@10"] > 0.5
        hs.ingest("sample")
        assert hs.stats().count == 40
        serving, previous = hs.rollback()
        assert serving != previous and hs.stats().physical == serving
        assert hs.inspect().stats.count == 40
        hs.delete()
        assert not hs.exists()


def test_concurrent_searches_equal_serial_ones(tmp_path):
    modes = ["bm25", "knn", "hybrid", "hybrid+rerank"]
    with HybridSearch(index="sample", data_dir=tmp_path / "data") as hs:
        hs.ingest("sample")
        jobs = [(q, m) for q in QUERIES for m in modes] * 3

        def run(job):
            result = hs.search(job[0], mode=job[1], top_k=5)
            return [(h.doc_id, round(h.score, 4)) for h in result.hits]

        serial = [run(job) for job in jobs]
        with ThreadPoolExecutor(max_workers=4) as pool:
            concurrent = list(pool.map(run, jobs))
    assert concurrent == serial


def test_concurrent_first_use_creates_each_component_once(tmp_path):
    hs = HybridSearch(index="sample", data_dir=tmp_path / "data")
    with ThreadPoolExecutor(max_workers=8) as pool:
        seen = list(pool.map(lambda _: (id(hs.backend), id(hs.encoder), id(hs.searcher)), range(32)))
    assert len(set(seen)) == 1
    hs.close()


@pytest.mark.integration
def test_the_snippet_through_elasticsearch(noida_url, corpus):
    index = "client-es"
    with HybridSearch(index=index, backend="elasticsearch", url=noida_url) as hs:
        hs.ingest(str(corpus), metadata_fields=["lang"])
        result = hs.search(
            "what temperature water for green tea", mode="hybrid+rerank", top_k=5, filters={"lang": "en"}
        )
        # noida-db emulates 8.15: the default fusion (linear, l2) needs a linear retriever (9.1 for l2_norm), so the
        # client fuses; RRF runs on the server (test_elasticsearch_wire)
        assert result.hits[0].doc_id == "d06" and result.fusion_location == "client"
        assert all(h.metadata["lang"] == "en" for h in result.hits)
        assert hs.stats().count == 40
        hs.delete()
        assert not hs.exists()
