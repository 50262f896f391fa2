"""Query and ingest logs on the embedded backend with the real models: every document fits the strict
mapping, reranker rank changes are right, the queue never makes a search wait, losses are counted.

A writer that hangs or a sink that breaks are faults that cannot be caused otherwise, so a thin gate
wraps the real JSONL sink; everything else is real.
"""

from __future__ import annotations

import json
import logging
import threading

import pytest

from hybrid_search.app.logs import (
    INGEST_LOG_MAPPING,
    QUERY_LOG_MAPPING,
    QueryLog,
    ingest_log_index,
    query_log_doc,
)
from hybrid_search.backends.embedded import EmbeddedBackend
from hybrid_search.backends.logsinks import JsonlLogSink, check_document
from hybrid_search.config.settings import LogSettings, SearchSettings, load_settings
from hybrid_search.ingest.sources import open_source
from hybrid_search.search.searcher import HybridSearcher

MODES = ("bm25", "knn", "hybrid", "hybrid+rerank")


@pytest.fixture(scope="module")
def sample(tmp_path_factory, encoder):
    from conftest import SAMPLE, logged_ingest

    data = tmp_path_factory.mktemp("logs")
    settings = load_settings(overrides={"data_dir": str(data)})
    with EmbeddedBackend(data_dir=data) as backend:
        summary = logged_ingest(open_source(SAMPLE), backend, encoder, settings, alias="sample")
        yield backend, summary


class GatedSink:
    """The real sink, whose writes wait until the test opens the gate (a hung cluster)."""

    def __init__(self, inner) -> None:
        self.inner, self.gate, self.location = inner, threading.Event(), inner.location
        self.entered = threading.Event()

    def ensure(self, name, mapping):
        self.inner.ensure(name, mapping)

    def append(self, name, docs, *, refresh=False):
        self.entered.set()
        self.gate.wait()
        return self.inner.append(name, docs, refresh=refresh)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_every_mode_logs_what_the_mapping_accepts(sample, encoder, reranker, tmp_path):
    backend, _ = sample
    sink = JsonlLogSink(tmp_path / "logs")
    qlog = QueryLog(sink, index="sample", backend=backend.name)
    searcher = HybridSearcher(
        backend,
        index="sample",
        encoder=encoder,
        reranker=reranker,
        settings=SearchSettings(rerank_depth=20),
        query_log=qlog,
    )
    query = "how long should green tea steep"
    results = {mode: searcher.search(query, mode=mode) for mode in MODES}
    stats = qlog.close()
    assert (stats.recorded, stats.written, stats.dropped, stats.failed) == (4, 4, 0, 0)
    docs = {d["mode"]: d for d in _lines(tmp_path / "logs" / "sample-queries.jsonl")}
    assert set(docs) == set(MODES)
    for mode, doc in docs.items():
        assert check_document(doc, QUERY_LOG_MAPPING) == [], mode
        result = results[mode]
        assert [h["id"] for h in doc["hits"]] == result.doc_ids
        assert doc["query"] == query and doc["returned"] == len(result.hits) and doc["zero_result"] == 0
        assert set(doc["latency_ms"]) == set(result.timings_ms)
        assert doc["latency_ms"]["total"] == pytest.approx(result.timings_ms["total"], abs=1e-3)
    assert set(docs["bm25"]["latency_ms"]) - {"passages"} == {"bm25", "total"}  # an index of passages adds one
    assert all("knn_score" in h and "bm25_score" not in h for h in docs["knn"]["hits"])
    assert "rerank" not in docs["hybrid"] and all("rank_change" not in h for h in docs["hybrid"]["hits"])
    reranked = docs["hybrid+rerank"]
    assert reranked["reranked"] and reranked["fusion_location"] == "client"
    before = {h.doc_id: h.rank for h in results["hybrid"].hits}
    changes = []
    for h in reranked["hits"]:
        assert h["rank_change"] == h["rank_before_rerank"] - h["rank"]
        if h["id"] in before:  # the hybrid run saw the same fused list: same starting ranks
            assert h["rank_before_rerank"] == before[h["id"]]
        changes.append(h["rank_change"])
    assert reranked["rerank"]["moved"] == sum(c != 0 for c in changes)
    assert reranked["rerank"]["max_promotion"] == max(max(changes), 0)
    assert reranked["rerank"]["top1_changed"] == (reranked["hits"][0]["rank_before_rerank"] != 1)


def test_query_text_can_be_kept_out(sample, tmp_path):
    backend, _ = sample
    qlog = QueryLog(JsonlLogSink(tmp_path), index="sample", backend="embedded", settings=LogSettings(query_text=False))
    HybridSearcher(backend, index="sample", query_log=qlog).search("private words", mode="bm25")
    assert qlog.close().written == 1
    (doc,) = _lines(tmp_path / "sample-queries.jsonl")
    assert "query" not in doc and doc["query_chars"] == len("private words")
    assert "private" not in (tmp_path / "sample-queries.jsonl").read_text()


def test_zero_results_are_flagged(sample, tmp_path):
    backend, _ = sample
    result = HybridSearcher(backend, index="sample").search("zzzqqq", mode="bm25")
    doc = query_log_doc(result, at="2026-01-01T00:00:00Z", index="sample", backend="embedded")
    assert (doc["total_hits"], doc["returned"], doc["zero_result"], doc["hits"]) == (0, 0, 1, [])


def test_the_mapping_check_can_fail():
    assert check_document({"@timestamp": "x", "mode": "bm25"}, QUERY_LOG_MAPPING) == []
    problems = check_document(
        {"mode": 3, "extra": 1, "hits": [{"id": "a", "rank": "1"}], "reranked": 1, "latency_ms": {"total": "fast"}},
        QUERY_LOG_MAPPING,
    )
    assert sorted(problems) == [
        "extra: not in the mapping",
        "hits.rank: str for a integer field",
        "latency_ms.total: str for a float field",
        "mode: int for a keyword field",
        "reranked: int for a boolean field",
    ]
    with pytest.raises(Exception, match="do not fit"):
        sink = JsonlLogSink("/nonexistent-never-written")
        sink._mappings["x"] = QUERY_LOG_MAPPING
        sink.append("x", [{"bogus": 1}])


def test_each_ingest_run_is_logged(sample):
    backend, summary = sample
    doc = backend.log_sink().latest(ingest_log_index("sample"))
    assert check_document(doc, INGEST_LOG_MAPPING) == []
    assert doc["status"] == "completed" and doc["physical"] == summary.physical == backend.stats("sample").physical
    assert (doc["read"], doc["stored"], doc["rejected"], doc["truncated"]) == (40, 40, 0, 0)
    assert doc["encode_docs_per_s"] > 0 and doc["bulk_docs_per_s"] > 0 and doc["duration_s"] > 0
    assert doc["started_at"] <= doc["@timestamp"]


def test_a_burst_never_waits_for_a_hung_writer(sample, tmp_path):
    backend, _ = sample
    sink = GatedSink(JsonlLogSink(tmp_path))
    qlog = QueryLog(
        sink, index="sample", backend="embedded", settings=LogSettings(queue_size=8, batch_size=4, flush_seconds=0.01)
    )
    searcher = HybridSearcher(backend, index="sample", query_log=qlog)
    searcher.search("warm up", mode="bm25")
    assert sink.entered.wait(10)  # the writer now hangs inside a write holding one entry
    burst = 200
    results = []
    worker = threading.Thread(
        target=lambda: results.extend(searcher.search(f"tea {i}", mode="bm25") for i in range(burst))
    )
    worker.start()
    worker.join(60)
    assert not worker.is_alive() and len(results) == burst  # no search waited for the hung writer
    during = qlog.stats
    assert during.recorded == burst + 1 and during.written == 0
    assert during.dropped == burst - 8  # the queue holds 8; everything beyond is dropped and counted
    sink.gate.set()
    stats = qlog.close()
    assert stats.written == 9 and stats.dropped == burst - 8 and stats.failed == 0 and stats.in_flight == 0
    assert len(_lines(tmp_path / "sample-queries.jsonl")) == stats.written


def test_close_gives_up_on_a_writer_that_never_returns(sample, tmp_path, caplog):
    backend, _ = sample
    sink = GatedSink(JsonlLogSink(tmp_path))
    qlog = QueryLog(sink, index="sample", backend="embedded", settings=LogSettings(batch_size=1))
    searcher = HybridSearcher(backend, index="sample", query_log=qlog)
    for i in range(5):
        searcher.search(f"coffee {i}", mode="bm25")
    assert sink.entered.wait(10)
    with caplog.at_level(logging.WARNING, logger="hybrid_search.app.logs"):
        stats = qlog.close(timeout=0.2)
    assert stats.recorded == 5 and stats.written == 0 and stats.in_flight == 1 and stats.dropped == 4
    assert any("4 dropped" in r.message for r in caplog.records)
    searcher.search("after close", mode="bm25")  # a closed log drops, it does not fail the search
    assert qlog.stats.dropped == 5
    sink.gate.set()


def test_a_broken_sink_never_fails_a_search(sample, tmp_path, caplog):
    backend, _ = sample
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log directory should be")
    qlog = QueryLog(JsonlLogSink(blocker), index="sample", backend="embedded", settings=LogSettings(batch_size=2))
    searcher = HybridSearcher(backend, index="sample", query_log=qlog)
    with caplog.at_level(logging.WARNING, logger="hybrid_search.app.logs"):
        hits = [searcher.search(f"bread {i}", mode="bm25").hits for i in range(6)]
        stats = qlog.close()
    assert all(hits)
    assert (stats.recorded, stats.written, stats.failed) == (6, 0, 6)
    assert sum("not written" in r.message for r in caplog.records) == 1  # warned once, not per batch


def test_construction_does_no_io(tmp_path):
    qlog = QueryLog(JsonlLogSink(tmp_path / "logs"), index="x", backend="embedded")
    assert qlog._thread is None and not (tmp_path / "logs").exists()
    assert qlog.close() == qlog.stats and qlog.stats.recorded == 0


def test_latest_reads_the_last_line_of_a_large_log(tmp_path, monkeypatch):
    import hybrid_search.backends.logsinks as logsinks

    monkeypatch.setattr(logsinks, "TAIL_BYTES", 4096)  # lines longer than the window: it reads further back
    sink = JsonlLogSink(tmp_path)
    sink.ensure("big-ingest", INGEST_LOG_MAPPING)
    docs = [{"@timestamp": f"2026-01-0{i}T00:00:00Z", "status": "failed", "error": "x" * 9000} for i in (1, 2, 4, 3)]
    sink.append("big-ingest", docs[:2])
    assert sink.latest("big-ingest")["@timestamp"] == "2026-01-02T00:00:00Z"
    sink.append("big-ingest", docs[2:])
    assert sink.latest("big-ingest")["@timestamp"] == "2026-01-03T00:00:00Z"  # only the whole last line fits
    assert sink.count("big-ingest") == 4 and sink.latest("missing") is None and sink.count("missing") == 0
    assert json.loads((tmp_path / "big-ingest.mapping.json").read_text()) == INGEST_LOG_MAPPING


def test_bench_querylog_reports_both_latencies_and_what_the_log_wrote(tmp_path):
    from hybrid_search.app.bench import run_bench

    settings = load_settings(overrides={"data_dir": str(tmp_path / "data"), "index": {"name": "bench"}})
    report = run_bench("querylog", settings, queries=4, repeats=1)
    assert set(report["modes"]) == {"bm25", "hybrid"}
    for mode in report["modes"].values():
        assert mode["plain_p50_ms"] > 0 and mode["logged_p50_ms"] > 0 and mode["p50_ratio_logged_to_plain"] > 0
    assert report["log"] == {"recorded": 10, "written": 10, "dropped": 0, "failed": 0}  # 2 warm-ups + 2 x 4
