"""Long documents: chunking modes and their offsets, passage storage on the embedded backend and on
Elasticsearch (noida-db: nested kNN with inner_hits), best-passage results, rerank on passages, rejects of
documents with too many passages, and the passage request bodies against the official specs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from hybrid_search import HybridSearch
from hybrid_search.backends.base import IndexSpec
from hybrid_search.backends.elasticsearch import es_fused_body, es_index_body, es_knn_body
from hybrid_search.backends.opensearch import os_fused_query, os_index_body, os_knn_body
from hybrid_search.config.errors import ConfigError
from hybrid_search.config.settings import load_settings
from hybrid_search.ingest.chunking import Chunker, Chunking, sentence_spans
from hybrid_search.search.request import Dense, FusionSpec, Lexical, SearchRequest

# facts hidden deep in long documents: a first-256-token vector never sees them
FACTS = [
    ("Zorbania", "The capital city of Zorbania is Quillport, a harbour town famous for glass bells."),
    ("Vextrum", "The Vextrum engine burns seaweed oil and was invented by a lighthouse keeper."),
    ("Halvard", "Halvard's comet returns every ninety-one years and glows a faint green."),
    ("Ombrella", "Ombrella moths migrate across the desert at night following the cold wind."),
    ("Pindle", "The Pindle river freezes from the bottom up because of its salty springs."),
    ("Carraway", "Carraway cheese is aged inside volcanic caves for exactly seven winters."),
    ("Tessaly", "Tessaly violins are carved from fallen pear trees and strung with silk."),
    ("Morwen", "Morwen Abbey keeps a library of maps drawn entirely by children."),
]
QUERIES = {
    "Zorbania": "what is the capital of Zorbania",
    "Vextrum": "what fuel does the Vextrum engine burn",
    "Halvard": "how often does Halvard's comet return",
    "Ombrella": "when do Ombrella moths migrate",
    "Pindle": "why does the Pindle river freeze from the bottom",
    "Carraway": "where is Carraway cheese aged",
    "Tessaly": "what wood are Tessaly violins made of",
    "Morwen": "who drew the maps in Morwen Abbey library",
}
FILLER = [
    "The committee met again on Tuesday to review the quarterly schedule and its many appendices.",
    "Several members asked for the minutes to be circulated earlier in the week.",
    "Budget figures were presented in a table that nobody found easy to read.",
    "A short break followed, during which coffee and biscuits were served in the hall.",
    "The chair reminded everyone that parking permits expire at the end of the month.",
    "Questions about the new printer were deferred to the facilities team.",
]


def long_text(i: int, fact: str) -> str:
    filler = [FILLER[(i + j) % len(FILLER)] for j in range(40)]
    filler.insert(24 + i % 10, fact)  # well past the first 256 tokens
    return " ".join(filler)


def records() -> list[dict]:
    docs = [
        {"id": f"long{i}", "title": f"Report {i}", "text": long_text(i, fact), "group": "long"}
        for i, (_, fact) in enumerate(FACTS)
    ]
    docs += [{"id": f"short{i}", "title": "", "text": FILLER[i], "group": "short"} for i in range(len(FILLER))]
    return docs


def word_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(r"\S+", text)]


# --- chunking ----------------------------------------------------------------------------------------
def test_chunking_modes_parse_and_bad_ones_say_what_to_write():
    assert str(Chunking.parse("auto")) == "auto"
    assert Chunking.parse("Sentences:5:1") == Chunking("sentences", 5, 1)
    assert Chunking.parse("tokens:256") == Chunking("tokens", 256, 0)
    for bad in ("paragraphs", "words", "words:0", "words:10:10", "words:x:1", "none:3", "tokens:5:1:2"):
        with pytest.raises(ConfigError, match="words\\|sentences\\|tokens:SIZE"):
            Chunking.parse(bad)
    with pytest.raises(ConfigError):
        load_settings(overrides={"ingest": {"chunking": "paragraphs"}})
    assert load_settings(overrides={"ingest": {"chunking": "WORDS:50:5"}}).ingest.chunking == "words:50:5"


@pytest.mark.parametrize("mode", ["words:40:8", "sentences:3:1", "tokens:64:16", "auto"])
def test_every_word_is_in_a_passage_and_windows_overlap(mode, encoder):
    text = long_text(3, FACTS[3][1]) + "\n\nA heading\nA last line without a full stop"
    chunker = Chunker(
        Chunking.parse(mode),
        token_offsets=encoder.token_offsets,
        max_tokens=encoder.max_length,
        overhead=encoder.passage_overhead,
    )
    spans = chunker.spans("Report 3", text)
    assert len(spans) > 1
    assert all(0 <= s < e <= len(text) for s, e in spans)
    assert [s for s, _ in spans] == sorted(s for s, _ in spans)
    for ws, we in word_spans(text):  # nothing is left out of every passage
        assert any(s <= ws and we <= e for s, e in spans), text[ws:we]
    for a, b in zip(spans, spans[1:], strict=False):  # each window overlaps the next, or auto starts a paragraph
        assert b[0] < a[1] or (mode == "auto" and "\n" in text[a[1] : b[0]])


def test_auto_leaves_short_documents_whole_and_fits_long_ones_to_the_model(encoder):
    chunker = Chunker(
        Chunking.parse("auto"),
        token_offsets=encoder.token_offsets,
        max_tokens=encoder.max_length,
        overhead=encoder.passage_overhead,
    )
    short = "One short passage. It fits."
    assert chunker.spans("Title", short) == [(0, len(short))]
    runon = " ".join(["word"] * 700)  # one sentence longer than the model reads: cut on tokens
    text = long_text(1, FACTS[1][1]) + " " + runon + "."
    spans = chunker.spans("Report 1", text)
    limit = encoder.max_length - encoder.passage_overhead("Report 1")
    counts = [len(t) for t in encoder.token_offsets([text[s:e] for s, e in spans])]
    assert max(counts) <= limit
    assert len(spans) >= 4
    # auto keeps sentences whole where they fit, and ends a window at a paragraph once it is half full
    sentences = sentence_spans(text)
    assert spans[0][1] in {e for _, e in sentences}
    paragraphs = " ".join(FILLER * 2) + "\n\n" + " ".join(FILLER[2:]) + "\n\n" + long_text(2, FACTS[2][1])
    cut = chunker.spans("", paragraphs)
    assert cut[0] == (0, paragraphs.index("\n\n"))


def test_offsets_are_character_offsets_of_unicode_text(encoder):
    text = "Ünïcödé façades — naïve café. " * 80 + "Größe zählt in Zürich."
    chunker = Chunker(Chunking.parse("tokens:50:10"), token_offsets=encoder.token_offsets)
    spans = chunker.spans("", text)
    assert text[spans[-1][0] : spans[-1][1]].endswith("Größe zählt in Zürich.")
    assert all(text[s:e] == text[s:e].strip() for s, e in spans)


# --- the embedded backend -----------------------------------------------------------------------------
def _hs(tmp_path: Path, name: str, **overrides) -> HybridSearch:
    given = {"data_dir": str(tmp_path / "data"), "ingest": {"batch_size": 4, **overrides.pop("ingest", {})}}
    return HybridSearch.from_settings(load_settings(overrides={**given, **overrides}), index=name)


def _found(hs: HybridSearch, mode: str, **kw) -> dict[str, object]:
    out = {}
    for key, query in QUERIES.items():
        out[key] = hs.search(query, mode=mode, top_k=1, **kw).hits[0]
    return out


def test_embedded_long_documents_are_found_by_their_best_passage(tmp_path):
    with _hs(tmp_path, "whole", ingest={"chunking": "none"}) as hs:
        none = hs.ingest(records(), metadata_fields=["group"])
        truncated_hits = _found(hs, "knn")
        assert hs.search(QUERIES["Pindle"], mode="knn").hits[0].passage is None  # no passages: no change
    with _hs(tmp_path, "chunked") as hs:
        summary = hs.ingest(records(), metadata_fields=["group"])
        assert (summary.stored, summary.chunking) == (14, "auto")
        assert summary.passages > summary.stored + len(FACTS)  # every long report split, short ones whole
        assert none.truncated == len(FACTS) and summary.truncated == 0
        assert hs.stats().vector["passages"] == summary.passages  # what inspect shows
        hits = _found(hs, "knn")
        for i, (key, fact) in enumerate(FACTS):
            hit = hits[key]
            assert hit.doc_id == f"long{i}", key
            assert fact in hit.passage.text
            assert hit.text[hit.passage.start : hit.passage.end] == hit.passage.text
            assert hit.passage.score == pytest.approx(hit.knn_score, abs=1e-5)  # max-sim: the best passage's
        right_chunked = sum(h.doc_id == f"long{i}" for i, h in enumerate(hits.values()))
        right_whole = sum(h.doc_id == f"long{i}" for i, h in enumerate(truncated_hits.values()))
        assert right_chunked == len(FACTS) > right_whole
        # BM25 and hybrid hits carry a best passage too (chosen by terms, or by the vector)
        for mode in ("bm25", "hybrid"):
            hit = hs.search(QUERIES["Carraway"], mode=mode, top_k=3).hits[0]
            assert hit.doc_id == "long5" and FACTS[5][1] in hit.passage.text
        top = hs.search(QUERIES["Tessaly"], mode="knn", top_k=1, passages=3).hits[0]
        assert len(top.passages) == 3 and top.passages[0] == top.passage
        assert [p.score for p in top.passages] == sorted((p.score for p in top.passages), reverse=True)
        short = hs.search(FILLER[2], mode="knn", top_k=1, filters={"group": "short"}).hits[0]
        assert (short.doc_id, short.passage.start, short.passage.end) == ("short2", 0, len(FILLER[2]))


@pytest.mark.parametrize("exact_below", [0, 20_000], ids=["graph", "flat"])
def test_embedded_passages_follow_filters_deletes_upserts_reopen_and_repair(tmp_path, monkeypatch, exact_below):
    import hybrid_search.backends.embedded.vectors as vectors

    with _hs(tmp_path, "live", index={"exact_below": exact_below}) as hs:
        hs.ingest(records(), metadata_fields=["group"])
        assert hs.backend._get("live").is_graph == (exact_below == 0)
        base = [h.doc_id for h in hs.search(QUERIES["Morwen"], mode="knn", top_k=5).hits]
        assert base[0] == "long7"
        assert hs.search(QUERIES["Morwen"], mode="knn", filters={"group": "short"}).hits[0].doc_id.startswith("short")
        monkeypatch.setattr(vectors, "_EXACT_FILTER_LIMIT", 0)  # the graph-selector path of filtered kNN
        assert hs.search(QUERIES["Morwen"], mode="knn", top_k=1, filters={"group": "long"}).hits[0].doc_id == "long7"
        assert hs.search(QUERIES["Morwen"], mode="knn", filters={"group": "short"}).hits[0].doc_id.startswith("short")
        monkeypatch.undo()

        assert hs.delete_documents(["long7"]).deleted == 1  # every passage of it goes
        assert "long7" not in {h.doc_id for h in hs.search(QUERIES["Morwen"], mode="knn", top_k=14).hits}
        changed = records()[0]
        changed["text"] = long_text(0, "Morwen Abbey's maps were drawn by children in crayon.")
        summary = hs.upsert([changed])
        assert summary.updated == 1
        hit = hs.search(QUERIES["Morwen"], mode="knn", top_k=1).hits[0]
        assert hit.doc_id == "long0" and "crayon" in hit.passage.text
        assert hs.search(QUERIES["Zorbania"], mode="knn", top_k=1).hits[0].doc_id != "long0"
        after = [h.doc_id for h in hs.search(QUERIES["Pindle"], mode="knn", top_k=5).hits]
        assert len(after) == len(set(after)) == 5  # a document appears once, however many passages match
    with _hs(tmp_path, "live", index={"exact_below": exact_below}) as hs:  # reopened: the file, then a rebuild
        assert [h.doc_id for h in hs.search(QUERIES["Pindle"], mode="knn", top_k=5).hits] == after
        hs.repair()
        assert [h.doc_id for h in hs.search(QUERIES["Pindle"], mode="knn", top_k=5).hits] == after
        hs.compact()
        assert [h.doc_id for h in hs.search(QUERIES["Pindle"], mode="knn", top_k=5).hits] == after


def test_a_document_with_too_many_passages_is_a_reject_with_its_reason(tmp_path):
    docs = records()[:3] + [{"id": "huge", "title": "", "text": "word " * 1500}]
    with _hs(tmp_path, "tiny", ingest={"chunking": "words:1:0"}) as hs:
        summary = hs.ingest(docs)
        assert (summary.stored, summary.rejected) == (3, 1)
        reasons = [json.loads(line) for line in Path(summary.rejects_path).read_text().splitlines()]
        assert [r["id"] for r in reasons] == ["huge"]
        assert "1500 passages" in reasons[0]["reason"] and "split it" in reasons[0]["reason"]


class RecordingReranker:
    """The real cross-encoder, remembering what it was asked to read."""

    def __init__(self, inner) -> None:
        self.inner, self.read = inner, []

    def score(self, query, passages):
        self.read += list(passages)
        return self.inner.score(query, passages)

    def close(self) -> None:
        pass


def test_rerank_reads_the_best_passages_not_whole_documents(tmp_path, reranker, encoder):
    from hybrid_search.search.searcher import RetrievalPipeline

    with _hs(tmp_path, "rr") as hs:
        hs.ingest(records())
        recording = RecordingReranker(reranker)
        pipeline = RetrievalPipeline(hs.backend, index="rr", encoder=encoder, reranker=recording, owns_parts=False)
        for n in (1, 2):
            recording.read.clear()
            request = pipeline.request(QUERIES["Halvard"], mode="hybrid+rerank", top_k=3)
            request = type(request)(**{**_fields(request), "rerank": _rerank(request, depth=6, passages=n)})
            result = pipeline.run(request)
            assert result.hits[0].doc_id == "long2" and FACTS[2][1] in result.hits[0].passage.text
            assert result.hits[0].rerank_score is not None
            longest = max(len(t) for t in recording.read)
            assert longest < len(long_text(0, FACTS[0][1])) / 2  # passages, never a whole report
            assert any(t.startswith("Report 2 ") and FACTS[2][1] in t for t in recording.read)  # with its title
            assert len(recording.read) <= 6 * n and len(result.hits[0].passages) == 1


def _fields(request):
    from dataclasses import fields

    return {f.name: getattr(request, f.name) for f in fields(request)}


def _rerank(request, **changes):
    from dataclasses import replace

    return replace(request.rerank, **changes)


# --- Elasticsearch through noida-db ----------------------------------------------------------------------
def test_elasticsearch_nested_passages_with_inner_hits(tmp_path, noida_url):
    settings = load_settings(
        overrides={
            "data_dir": str(tmp_path / "data"),
            "backend": {"kind": "elasticsearch", "urls": [noida_url]},
            "index": {"replicas": 0},
            "ingest": {"batch_size": 4},
        }
    )
    with HybridSearch.from_settings(settings, index="passages-es") as hs:
        summary = hs.ingest(records(), metadata_fields=["group"])
        assert summary.passages > summary.stored
        fields = hs.stats().fields
        assert (fields["passages"], fields["passages.vector"]) == ("nested", "dense_vector")
        for i, (key, fact) in enumerate(FACTS):
            hit = hs.search(QUERIES[key], mode="knn", top_k=1).hits[0]
            assert hit.doc_id == f"long{i}" and fact in hit.passage.text, key
            assert hit.text[hit.passage.start : hit.passage.end] == hit.passage.text
        top = hs.search(QUERIES["Tessaly"], mode="knn", top_k=1, passages=3).hits[0]
        assert len(top.passages) == 3 and top.passages[0] == top.passage and top.doc_id == "long6"
        assert len(hs.search(QUERIES["Tessaly"], mode="knn", top_k=1).hits[0].passages) == 1
        filtered = hs.search(QUERIES["Vextrum"], mode="knn", top_k=1, filters={"group": "short"}).hits[0]
        assert filtered.doc_id.startswith("short")
        for mode in ("bm25", "hybrid"):
            hit = hs.search(QUERIES["Carraway"], mode=mode, top_k=3).hits[0]
            assert hit.doc_id == "long5" and FACTS[5][1] in hit.passage.text
        assert hs.delete_documents(["long5"]).deleted == 1
        assert hs.search(QUERIES["Carraway"], mode="knn", top_k=1).hits[0].doc_id != "long5"


# --- request bodies against the specs ----------------------------------------------------------------------
SPECS = ("es-8.15-elasticsearch-openapi.json", "es-8.17-elasticsearch-openapi.json")
VEC = np.linspace(-1, 1, 8).astype(np.float32)


@pytest.mark.parametrize("name", SPECS)
def test_elasticsearch_passage_bodies_match_the_spec(spec, name):
    v = spec(name)
    body = es_index_body(IndexSpec(dims=8, passages=True, chunking="auto"))
    assert v.check_request("put", "/{index}", body) == []
    for filters in (None, {"lang": "en"}):
        knn = es_knn_body(VEC, 10, 100, filters, passages=3)
        assert knn["knn"]["field"] == "passages.vector" and knn["knn"]["inner_hits"]["size"] == 3
        assert v.check_request("post", "/{index}/_search", knn) == []
        request = SearchRequest(
            "q", (Lexical(50), Dense(50, 100)), fusion=FusionSpec("rrf"), filters=filters, vector=VEC
        )
        assert v.check_request("post", "/{index}/_search", es_fused_body(request, (8, 15, 3), True)) == []
    bad = es_knn_body(VEC, 10, 100, None, passages=2)
    bad["knn"]["inner_hits"]["sizes"] = bad["knn"]["inner_hits"].pop("size")
    assert v.check_request("post", "/{index}/_search", bad)


def test_opensearch_passage_bodies_match_the_spec(spec):
    v = spec("opensearch-openapi.gh-pages.yaml")
    assert v.check_request("put", "/{index}", os_index_body(IndexSpec(dims=8, passages=True))) == []
    for filters in (None, {"lang": "en"}):
        body = os_knn_body(VEC, 10, 100, filters, (2, 19, 0), passages=2)
        assert v.check_request("post", "/{index}/_search", body) == []
        request = SearchRequest(
            "q", (Lexical(50), Dense(50, 100)), fusion=FusionSpec("linear"), filters=filters, vector=VEC
        )
        assert v.check_request("post", "/{index}/_search", os_fused_query(request, (2, 19, 0), True)) == []
    bad = os_knn_body(VEC, 10, 100, None, (2, 19, 0), passages=2)
    bad["query"]["nested"]["paths"] = bad["query"]["nested"].pop("path")
    assert v.check_request("post", "/{index}/_search", bad)


# --- the long-document evaluation ---------------------------------------------------------------------------
def test_long_corpus_keeps_every_passage_and_lifts_the_qrels():
    from hybrid_search.app.long_docs import long_corpus
    from hybrid_search.config.text import passage_text
    from hybrid_search.ingest import sample_path

    corpus = long_corpus(sample_path(), per_doc=3, seed=1)
    texts = {d["id"]: d["text"] for d in corpus.documents}
    assert len(corpus.documents) == -(-len(corpus.passages) // 3)
    for p in corpus.passages:  # each source passage lies whole in exactly one document, where the span says
        doc, start, end = corpus.spans[p["id"]]
        assert texts[doc][start:end] == passage_text(p["title"], p["text"])
    for qid, judged in corpus.passage_qrels.items():
        assert corpus.document_qrels[qid] == {
            corpus.spans[p][0]: max(g for q, g in judged.items() if corpus.spans[q][0] == corpus.spans[p][0])
            for p in judged
        }


@pytest.mark.slow  # three ingests and evaluations in a child process
def test_bench_long_docs_reports_each_chunking_beside_the_passages(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "long.json"
    cmd = [sys.executable, "-m", "hybrid_search.app.cli", "bench", "long-docs", "--source", "sample", "--per-doc", "4"]
    cmd += ["--queries", "8", "--modes", "bm25,knn", "--json", str(out), "--data-dir", str(tmp_path / "d"), "--quiet"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    report = json.loads(out.read_text())
    assert report["long-auto"]["chunking"] == "auto" and report["long-none"]["chunking"] == "none"
    assert report["long-auto"]["documents"] == report["long-none"]["documents"] == report["documents"]
    assert report["long-auto"]["passages"] >= report["long-auto"]["documents"]
    for run in ("passages", "long-none", "long-auto"):
        assert set(report[run]["modes"]) == {"bm25", "knn"}
        assert 0.0 <= report[run]["modes"]["knn"]["ndcg@10"] <= 1.0
    assert report["knn_ndcg_gap_auto_vs_passages"] == pytest.approx(
        report["long-auto"]["modes"]["knn"]["ndcg@10"] - report["passages"]["modes"]["knn"]["ndcg@10"], abs=1e-3
    )


def test_tune_reranks_the_best_passage_as_a_search_does(tmp_path):
    from hybrid_search.app.tune import RunCache

    with _hs(tmp_path, "tuned") as hs:
        hs.ingest(records())
        cache = RunCache(hs, [("q2", QUERIES["Halvard"])], depth=10)
        assert cache.passages
        (read,) = cache._reads("q2", ["long2"])
        assert FACTS[2][1] in read and read.startswith("Report 2 ")
        assert len(read) < len(cache.texts["long2"]) / 2
        search = hs.search(QUERIES["Halvard"], mode="knn", top_k=1).hits[0]
        assert read == f"Report 2 {search.passage.text}"


@pytest.mark.slow  # re-encodes the corpus per chunking (minutes on 2 cores)
def test_tune_measures_chunking_on_long_documents_and_caches_the_encodings(tmp_path):
    from hybrid_search.app.tune import tune

    queries = [(key, text) for key, text in QUERIES.items()]
    qrels = {key: {f"long{i}": 1} for i, (key, _) in enumerate(FACTS)}
    with _hs(tmp_path, "tunechunks") as hs:
        hs.ingest(records())
        report = tune(hs, queries, qrels, folds=2, budget=12, chunking_check=True)
        c = report.chunking
        assert c is not None and c["current"] == "auto" and c["long_documents"] == len(FACTS)
        assert set(c["cross_validated"]) == {"auto", "none"}
        assert c["cross_validated"]["auto"] >= c["cross_validated"]["none"]  # BM25 finds these names too
        assert c["knn"]["auto"] > c["knn"]["none"]  # the dense leg alone: passages find what truncation lost
        assert "keep chunking auto" in c["advice"] or c["recommend"] is None
        cached = sorted(p.name for p in (tmp_path / "data" / "tune-cache" / "tunechunks").rglob("*.npz"))
        assert len(cached) == 2 and any("auto" in n for n in cached) and any("none" in n for n in cached)
        assert "chunking (cross-validated" in report.table()
    with _hs(tmp_path, "shorts", ingest={"chunking": "none"}) as hs:
        hs.ingest([{"id": f"s{i}", "text": t} for i, t in enumerate(FILLER)])
        report = tune(
            hs,
            [("q", FILLER[0]), ("r", FILLER[1])],
            {"q": {"s0": 1}, "r": {"s1": 1}},
            folds=2,
            budget=4,
            chunking_check=True,
        )
        assert "every document fits" in report.chunking["skipped"]


def test_a_crashed_ingest_of_long_documents_resumes_with_every_passage_once(tmp_path, encoder):
    from test_ingest_pipeline import Crash, CrashingBackend

    from hybrid_search.backends.embedded import EmbeddedBackend
    from hybrid_search.ingest.pipeline import Checkpoint, run_ingest
    from hybrid_search.ingest.sources import open_source

    path = tmp_path / "long.jsonl"
    path.write_text(
        "".join(json.dumps({"_id": r["id"], "title": r["title"], "text": r["text"]}) + "\n" for r in records())
    )
    settings = load_settings(overrides={"data_dir": str(tmp_path / "data"), "ingest": {"batch_size": 4}})
    with EmbeddedBackend(data_dir=settings.data_dir) as real, pytest.raises(Crash):
        run_ingest(open_source(path), CrashingBackend(real, crash_on=3), encoder, settings, alias="resumed")
    ckpt = Checkpoint.load(Checkpoint.path_for(settings.data_dir, "resumed"))
    assert ckpt is not None and ckpt.read == 8 and ckpt.passages > 8  # two batches of long reports stored
    with EmbeddedBackend(data_dir=settings.data_dir) as real:
        summary = run_ingest(open_source(path), real, encoder, settings, alias="resumed", resume=True)
        assert summary.resumed and (summary.read, summary.stored) == (14, 14)
        with _hs(tmp_path, "whole-run") as hs:
            full = hs.ingest(records())
        assert summary.passages == full.passages  # counted once each, across the crash
        physical = real.open_index("resumed")
        hit = physical.search_knn(encoder.encode_queries([QUERIES["Morwen"]])[0], 1, 50)[0]
        assert hit.doc_id == "long7"


def test_workbench_and_query_log_carry_the_best_passage(tmp_path):
    from hybrid_search.app.logs import query_log_doc
    from hybrid_search.app.workbench.service import _hit_json

    with _hs(tmp_path, "shown") as hs:
        hs.ingest(records())
        result = hs.search(QUERIES["Ombrella"], mode="hybrid", top_k=2)
    hit = result.hits[0]
    shown = _hit_json(hit, None, None)["passage"]
    assert (shown["start"], shown["end"]) == (hit.passage.start, hit.passage.end) and hit.doc_id == "long3"
    logged = query_log_doc(result, at="2026-12-03T00:00:00Z", index="shown", backend="embedded")["hits"][0]
    assert logged["passage"] == f"long3#{hit.passage.index}"
    assert (logged["passage_start"], logged["passage_end"]) == (hit.passage.start, hit.passage.end)


def test_a_cluster_hit_keeps_as_many_passages_as_the_reranker_reads(tmp_path):
    """``search.rerank_passages`` above ``search.passages``: the hits the reranker reads carry that many
    passages on a cluster too (chosen by terms among the spans its hit brought), the others as many as shown."""
    from hybrid_search.backends.embedded import EmbeddedBackend
    from hybrid_search.backends.handles import IndexHandle
    from hybrid_search.search.hits import Hit, Passage
    from hybrid_search.search.request import RerankSpec

    text = " ".join(f"Sentence {i} names zork{i}." for i in range(8))
    spans = sentence_spans(text)
    carried = tuple(Passage(i, s, e) for i, (s, e) in enumerate(spans))
    hits = [Hit(doc_id=f"d{r}", rank=r, score=1.0, text=text, passages=carried) for r in (1, 2, 3)]
    request = SearchRequest("zork1 zork4 zork6", (Lexical(10),), rerank=RerankSpec(depth=2, passages=3), passages=1)
    with EmbeddedBackend(data_dir=tmp_path) as backend:
        out = IndexHandle(backend, "any").with_passages(hits, request)
    assert [len(h.passages) for h in out] == [3, 3, 1]
    assert {p.index for p in out[0].passages} == {1, 4, 6} and out[2].passage.index in {1, 4, 6}
