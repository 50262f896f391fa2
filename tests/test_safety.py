"""Data safety under concurrency, collisions and damage (the adversarial trial's findings, one test each).

The concurrency tests use real processes (``multiprocessing`` spawn or ``subprocess``), never threads: what is
shared between two processes is the data dir or the cluster, and that is what the locks must protect.
Each of these tests failed on the code before the fixes it pins (see the commit and the issue's note).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE

from hybrid_search.app.client import HybridSearch
from hybrid_search.backends.base import IndexedDocument, IndexSpec
from hybrid_search.backends.embedded import EmbeddedBackend
from hybrid_search.config.errors import (
    ConfigError,
    CorruptIndex,
    IndexingError,
    IndexLocked,
    QueryError,
)
from hybrid_search.config.settings import BackendSettings, IndexSettings, check_url, load_settings
from hybrid_search.ingest.pipeline import Checkpoint, run_ingest
from hybrid_search.ingest.sources import FieldMap, open_source
from hybrid_search.search.searcher import HybridSearcher

SPEC = IndexSpec(dims=4)
HYBRID_SEARCH = [sys.executable, "-m", "hybrid_search.app.cli"]


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=4).astype(np.float32)
    return v / np.linalg.norm(v)


def _build(backend, alias: str, n: int, version: int) -> str:
    """One complete build of ``alias`` holding ``n`` documents of ``version``, swapped in under the lock."""
    with backend.writer_lock(alias):
        physical = backend.begin_build(alias, SPEC)
        docs = [IndexedDocument(f"d{i}", "doc", f"doc version{version}", _unit(i), {"v": version}) for i in range(n)]
        backend.upsert(physical, docs)
        backend.refresh(physical)
        backend.finish_build(alias, physical)
        return physical


def _es_backend(url: str):
    from hybrid_search.backends.elasticsearch import ElasticsearchBackend

    return ElasticsearchBackend(BackendSettings(kind="elasticsearch", urls=(url,)), IndexSettings(replicas=0))


# --- reserved names ----------------------------------------------------------------------------------
RESERVED = ["docs-previous", "docs-queries", "docs-ingest", "docs-20261201120000123456", "hybrid-search-locks"]


@pytest.mark.parametrize("name", RESERVED)
def test_reserved_names_are_refused_with_the_reason(name, tmp_path):
    with pytest.raises(ConfigError, match="reserved"):
        load_settings(overrides={"index": {"name": name}})
    with pytest.raises(ConfigError, match="reserved"):
        HybridSearch(index=name, data_dir=tmp_path)


def test_a_user_index_can_no_longer_take_the_rollback_slot(tmp_path):
    """Before: 'docs-previous' was accepted, and `rollback --index docs` then served it."""
    with EmbeddedBackend(data_dir=tmp_path) as backend:
        first = _build(backend, "docs", 3, 1)
        _build(backend, "docs", 3, 2)
        with pytest.raises(ConfigError, match="previous build of index 'docs'"):
            HybridSearch(index="docs-previous", data_dir=tmp_path)
        assert backend.rollback("docs")[0] == first  # the slot still holds docs' own build


# --- one writer per index --------------------------------------------------------------------------
HOLD_LOCK = """
import sys
from hybrid_search.backends.embedded import EmbeddedBackend
with EmbeddedBackend(data_dir=sys.argv[1]).writer_lock("docs"):
    print("held", flush=True)
    sys.stdin.read()
"""

HOLD_ES_LOCK = """
import sys
from hybrid_search.backends.elasticsearch import ElasticsearchBackend
from hybrid_search.config.settings import BackendSettings
backend = ElasticsearchBackend(BackendSettings(kind="elasticsearch", urls=(sys.argv[1],)))
with backend.writer_lock(sys.argv[2]):
    print("held", flush=True)
    sys.stdin.read()
"""


def _holder(script: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_process_is_refused_and_loses_nothing(tmp_path, settings, memo_encoder):
    data = settings.data_dir
    with EmbeddedBackend(data_dir=data) as backend:
        run_ingest(open_source(SAMPLE), backend, memo_encoder, settings, alias="docs")
        before = backend.serving_build("docs")
        holder = _holder(HOLD_LOCK, str(data))
        try:
            with pytest.raises(IndexLocked, match=rf"being written by pid {holder.pid} on host .* since"):
                run_ingest(open_source(SAMPLE), backend, memo_encoder, settings, alias="docs")
            with pytest.raises(IndexLocked):
                HybridSearch.from_settings(settings, index="docs").rollback()
            # the refused writer touched nothing: no checkpoint taken over, no build made, the alias unchanged
            assert not Checkpoint.path_for(data, "docs").exists()
            assert backend.serving_build("docs") == before and backend.orphan_builds("docs") == []
            assert backend.count("docs") == 40
        finally:
            holder.kill()  # kill -9: the kernel releases the lock with the process
            holder.wait()
        summary = run_ingest(open_source(SAMPLE), backend, memo_encoder, settings, alias="docs")
        assert summary.stored == 40 and backend.serving_build("docs") != before


@pytest.mark.integration
def test_a_second_writer_is_refused_on_elasticsearch_and_a_killed_holder_frees_it(noida_url, settings, memo_encoder):
    backend = _es_backend(noida_url)
    with backend:
        run_ingest(open_source(SAMPLE), backend, memo_encoder, settings, alias="locked")
        before = backend.serving_build("locked")
        holder = _holder(HOLD_ES_LOCK, noida_url, "locked")
        try:
            with pytest.raises(IndexLocked, match=rf"being written by pid {holder.pid}"):
                run_ingest(open_source(SAMPLE), backend, memo_encoder, settings, alias="locked")
            assert backend.serving_build("locked") == before and backend.orphan_builds("locked") == []
        finally:
            holder.kill()
            holder.wait()
        # its holder died on this host: the lock is certainly stale, and the next writer takes it over
        summary = run_ingest(open_source(SAMPLE), backend, memo_encoder, settings, alias="locked")
        assert summary.stored == 40 and backend.count("locked") == 40


def _cycle_builds(data_dir: str, alias: str, rounds: int) -> None:
    with EmbeddedBackend(data_dir=data_dir) as backend:
        for version in range(rounds):
            _build(backend, alias, 3, version)
            backend.rollback(alias) if version % 5 == 4 else None


def test_two_processes_changing_aliases_never_lose_an_update(tmp_path):
    """Before: one shared temporary name and no lock: lost aliases, JSONDecodeError, orphaned builds."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_cycle_builds, args=(str(tmp_path), a, 25)) for a in ("alpha", "beta")]
    for p in procs:
        p.start()
    reads = 0
    while any(p.is_alive() for p in procs):
        if (tmp_path / "aliases.json").exists():
            json.loads((tmp_path / "aliases.json").read_text())  # never torn
            reads += 1
    assert [p.exitcode for p in procs] == [0, 0]
    with EmbeddedBackend(data_dir=tmp_path) as backend:
        aliases = backend._aliases()
        assert set(aliases) == {"alpha", "alpha-previous", "beta", "beta-previous"}
        on_disk = {p.name for p in (tmp_path / "indexes").iterdir()}
        assert on_disk == set(aliases.values())  # nothing orphaned
        assert backend.orphan_builds("alpha") == backend.orphan_builds("beta") == []
    assert reads > 0


# --- the query model follows the index -------------------------------------------------------------
def test_a_long_lived_client_notices_a_reindex_by_another_client(tmp_path, settings):
    from hybrid_search.encoding.models import model_identity, resolve_model

    local = tmp_path / "model-copy"
    import shutil

    shutil.copytree(resolve_model(settings.models.bi_encoder), local)
    with HybridSearch.from_settings(settings, index="docs") as a:
        a.ingest(SAMPLE)
        first = a.search("sourdough starter", mode="knn", top_k=3)
        with HybridSearch.from_settings(settings, index="docs") as b:
            b.reindex(str(local))
        after = a.search("sourdough starter", mode="knn", top_k=3)
        # before: `a` kept encoding with the model it started with, against vectors of another
        assert (
            model_identity(a.query_encoder.model_name)
            == a.backend.index_spec("docs").model
            == model_identity(str(local))
        )
        assert [h.doc_id for h in after.hits] == [h.doc_id for h in first.hits]


@pytest.mark.integration
def test_a_cluster_client_searches_the_build_it_opened_and_follows_a_rollback(noida_url, settings, memo_encoder):
    from hybrid_search.backends.elasticsearch import ElasticsearchBackend

    es = settings.model_copy(
        update={"backend": BackendSettings(kind="elasticsearch", urls=(noida_url,)), "index": IndexSettings(replicas=0)}
    )
    backend = ElasticsearchBackend(es.backend, es.index)
    with backend:
        first = run_ingest(open_source(SAMPLE), backend, memo_encoder, es, alias="follow").physical
        second = run_ingest(open_source(SAMPLE), backend, memo_encoder, es, alias="follow").physical
        with HybridSearch.from_settings(es, index="follow") as a:
            a.search("bread", mode="bm25")
            assert a.searcher.index == second  # the physical build, never the moving alias
            with HybridSearch.from_settings(es, index="follow") as b:
                b.rollback()
            time.sleep(ElasticsearchBackend.build_check_seconds + 0.1)
            a.search("bread", mode="bm25")
            assert a.searcher.index == first


# --- one filter semantics --------------------------------------------------------------------------
# every field keeps one JSON type across documents, as an engine's mapping requires (a float stored into a
# field mapped long is truncated by Elasticsearch / OpenSearch); int-vs-float is pinned on the embedded
# backend in the next test
FILTER_DOCS = [
    ("a", {"num": 1, "score": 0.5, "flag": True, "tag": "x", "nums": [1, 2]}),
    ("b", {"num": 1, "score": 2.5, "flag": False, "tag": ["x", "y"], "nums": [3]}),
    ("c", {"num": 7, "score": 2.5, "flag": True, "tag": "z", "nums": [2]}),
    ("d", {"num": 9, "score": 1.25, "flag": False, "tag": ["y"], "nums": [7, 8]}),
]
FILTER_TABLE = [
    ({"num": 1}, {"a", "b"}),
    ({"num": [7, 9]}, {"c", "d"}),
    ({"score": 2.5}, {"b", "c"}),
    ({"flag": True}, {"a", "c"}),
    ({"flag": False}, {"b", "d"}),
    ({"tag": "x"}, {"a", "b"}),
    ({"tag": ["x", "z"]}, {"a", "b", "c"}),
    ({"tag": "y"}, {"b", "d"}),
    ({"nums": 2}, {"a", "c"}),
    ({"nums": [7, 3]}, {"b", "d"}),
    ({"tag": "y", "flag": False}, {"b", "d"}),
    ({"tag": "x", "num": 7}, set()),
    # ranges: numbers by value, strings by code point (as a keyword's range); in a list, one element must lie
    # within both bounds (as one range query over the field's values), not one element per bound
    ({"num": {"gte": 7}}, {"c", "d"}),
    ({"num": {"gt": 1, "lt": 9}}, {"c"}),
    ({"score": {"lte": 1.25}}, {"a", "d"}),
    ({"nums": {"gte": 3, "lte": 3}}, {"b"}),
    ({"nums": {"gt": 1, "lt": 2}}, set()),
    ({"tag": {"gte": "y"}}, {"b", "c", "d"}),
    ({"num": {"lt": 8}, "flag": True}, {"a", "c"}),
]


def _filter_contract(backend, index: str, modes: tuple[str, ...] = ("bm25", "knn", "hybrid")) -> None:
    backend.ensure_index(index, IndexSpec(dims=4, metadata_fields=("num", "score", "flag", "tag", "nums")))
    backend.upsert(
        index, [IndexedDocument(i, "doc", f"doc words {i}", _unit(k), m) for k, (i, m) in enumerate(FILTER_DOCS)]
    )
    backend.refresh(index)
    searcher = HybridSearcher(backend, index=index)
    for filters, expected in FILTER_TABLE:
        for mode in modes:
            got = searcher.search("doc", mode=mode, top_k=10, filters=filters, vector=_unit(0))
            assert {h.doc_id for h in got.hits} == expected, (mode, filters)


def test_filters_mean_the_same_in_every_mode_embedded(tmp_path):
    with EmbeddedBackend(data_dir=tmp_path) as backend:
        _filter_contract(backend, "f")


@pytest.mark.integration
def test_filters_mean_the_same_in_every_mode_elasticsearch(noida_url):
    with _es_backend(noida_url) as backend:
        backend.drop_index("filters-contract")
        _filter_contract(backend, "filters-contract")


@pytest.mark.integration
def test_filters_mean_the_same_on_opensearch_bm25(osmem_url):
    """osmem-server has no kNN (its kNN bodies are validated against the spec elsewhere): the BM25 rows here."""
    from hybrid_search.backends.opensearch import OpenSearchBackend

    backend = OpenSearchBackend(BackendSettings(kind="opensearch", urls=(osmem_url,)), IndexSettings(replicas=0))
    with backend:
        backend.drop_index("filters-contract")
        _filter_contract(backend, "filters-contract", modes=("bm25",))


def test_true_never_matches_one_and_dotted_names_are_refused(tmp_path, settings, memo_encoder):
    with EmbeddedBackend(data_dir=tmp_path) as backend:
        backend.ensure_index("m", SPEC)
        backend.upsert(
            "m",
            [
                IndexedDocument("one", "", "w", _unit(1), {"k": 1}),
                IndexedDocument("t", "", "w", _unit(2), {"k": True}),
                IndexedDocument("f", "", "w", _unit(3), {"k": 2.0}),
            ],
        )
        backend.refresh("m")
        searcher = HybridSearcher(backend, index="m")
        for mode in ("bm25", "knn", "hybrid"):
            assert [h.doc_id for h in searcher.search("w", mode=mode, filters={"k": True}, vector=_unit(0)).hits] == [
                "t"
            ]
            assert [h.doc_id for h in searcher.search("w", mode=mode, filters={"k": 1}, vector=_unit(0)).hits] == [
                "one"
            ]
            two = searcher.search("w", mode=mode, filters={"k": 2}, vector=_unit(0)).hits
            assert [h.doc_id for h in two] == ["f"]  # numbers compare as numbers: 2 matches 2.0
        with pytest.raises(QueryError, match="nested objects"):
            searcher.search("w", mode="bm25", filters={"a.b": 1})
    records = tmp_path / "dotted.jsonl"
    records.write_text(json.dumps({"id": "1", "text": "t", "a.b": 1}) + "\n")
    with EmbeddedBackend(data_dir=settings.data_dir) as backend, pytest.raises(ConfigError, match="nested objects"):
        run_ingest(open_source(records, FieldMap(metadata_fields=("a.b",))), backend, memo_encoder, settings, alias="d")


def test_a_filter_value_of_the_wrong_type_is_an_error_and_the_cli_converts_text(tmp_path, settings):
    records = tmp_path / "years.jsonl"
    rows = [{"id": str(i), "text": f"paper number {i}", "year": 2018 + i % 3, "open": i % 2 == 0} for i in range(12)]
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with HybridSearch.from_settings(settings, index="years") as hs:
        hs.ingest(records, metadata_fields=["year", "open"])
        assert len(hs.search("paper", mode="bm25", filters={"year": 2019}, top_k=20).hits) == 4
        with pytest.raises(QueryError, match="holds numbers"):
            hs.search("paper", mode="bm25", filters={"year": "2019"})
        with pytest.raises(QueryError, match="holds booleans"):
            hs.search("paper", mode="bm25", filters={"open": 1})
    common = ["--index", "years", "--data-dir", str(settings.data_dir), "--mode", "bm25", "--top-k", "20", "--json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [*HYBRID_SEARCH, "search", "paper", "--filter", "year=2019", *common], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert {h["metadata"]["year"] for h in json.loads(out.stdout)["hits"]} == {2019} and len(
        json.loads(out.stdout)["hits"]
    ) == 4
    bad = subprocess.run(
        [*HYBRID_SEARCH, "search", "paper", "--filter", "year=soon", *common], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "holds numbers" in bad.stderr


def test_range_filters_from_python_and_the_cli(tmp_path, settings):
    records = tmp_path / "years.jsonl"
    rows = [{"id": str(i), "text": f"paper number {i}", "year": 2015 + i, "venue": "abc"[i % 3]} for i in range(10)]
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with HybridSearch.from_settings(settings, index="ranges") as hs:
        hs.ingest(records, metadata_fields=["year", "venue"])
        for mode in ("bm25", "knn", "hybrid"):
            got = hs.search("paper", mode=mode, filters={"year": {"gte": 2019, "lt": 2022}}, top_k=20)
            assert sorted(h.metadata["year"] for h in got.hits) == [2019, 2020, 2021], mode
        with pytest.raises(QueryError, match="holds numbers"):
            hs.search("paper", mode="bm25", filters={"year": {"gte": "2019"}})
        with pytest.raises(QueryError, match="gte, gt, lte or lt"):
            hs.search("paper", mode="bm25", filters={"year": {"from": 2019}})
    common = ["--index", "ranges", "--data-dir", str(settings.data_dir), "--mode", "bm25", "--top-k", "20", "--json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def years(*flags: str) -> list[int]:
        out = subprocess.run(
            [*HYBRID_SEARCH, "search", "paper", *flags, *common], capture_output=True, text=True, env=env
        )
        assert out.returncode == 0, out.stderr
        return sorted(h["metadata"]["year"] for h in json.loads(out.stdout)["hits"])

    assert years("--filter", "year>=2022") == [2022, 2023, 2024]
    assert years("--filter", "year>2016", "--filter", "year<=2018") == [2017, 2018]
    assert years("--filter", "year<2017", "--filter", "venue=a") == [2015]
    bad = subprocess.run(
        [*HYBRID_SEARCH, "search", "paper", "--filter", "year>=soon", *common], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "holds numbers" in bad.stderr


# --- damaged files ---------------------------------------------------------------------------------
def test_a_damaged_vector_graph_is_refused_by_name_and_repaired(tmp_path):
    with EmbeddedBackend(data_dir=tmp_path, flush_seconds=0, exact_below=0) as backend:  # a graph file, even at 50
        physical = _build(backend, "docs", 50, 1)
        before = [h.doc_id for h in backend.search_knn("docs", _unit(3), 5, 50)]
    graph = next((tmp_path / "indexes" / physical).glob("vectors-*.faiss"))
    raw = bytearray(graph.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte inside the stored vectors
    graph.write_bytes(bytes(raw))
    with EmbeddedBackend(data_dir=tmp_path, exact_below=0) as backend:
        with pytest.raises(CorruptIndex, match=rf"{graph.name}.*hybrid-search repair --index docs"):
            backend.search_knn("docs", _unit(3), 5, 50)
    with HybridSearch(index="docs", data_dir=tmp_path) as hs:
        assert hs.repair() == 50
    with EmbeddedBackend(data_dir=tmp_path) as backend:
        assert [h.doc_id for h in backend.search_knn("docs", _unit(3), 5, 50)] == before


@pytest.mark.parametrize("content", ["", "[]", "{not json", '{"docs": 3}'])
def test_a_damaged_aliases_file_is_an_error_that_names_it(tmp_path, content):
    with EmbeddedBackend(data_dir=tmp_path) as backend:
        _build(backend, "docs", 3, 1)
    (tmp_path / "aliases.json").write_text(content)
    with EmbeddedBackend(data_dir=tmp_path) as backend, pytest.raises(ConfigError, match=r"aliases\.json is damaged"):
        backend.count("docs")


def test_a_damaged_spec_is_an_error_that_names_it(tmp_path):
    with EmbeddedBackend(data_dir=tmp_path) as backend:
        physical = _build(backend, "docs", 3, 1)
    (tmp_path / "indexes" / physical / "spec.json").write_text('{"dims": "x"')
    with EmbeddedBackend(data_dir=tmp_path) as backend, pytest.raises(ConfigError, match=r"spec\.json is damaged"):
        backend.count("docs")


def test_a_damaged_checkpoint_never_blocks_the_next_ingest(settings, memo_encoder):
    path = Checkpoint.path_for(settings.data_dir, "docs")
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    with EmbeddedBackend(data_dir=settings.data_dir) as backend:
        with pytest.raises(ConfigError, match=r"docs\.json is damaged.*without --resume"):
            run_ingest(open_source(SAMPLE), backend, memo_encoder, settings, alias="docs", resume=True)
        assert run_ingest(open_source(SAMPLE), backend, memo_encoder, settings, alias="docs").stored == 40


def test_a_torn_last_log_line_is_skipped(tmp_path, settings, memo_encoder):
    with EmbeddedBackend(data_dir=settings.data_dir) as backend:
        sink = backend.log_sink()
        sink.ensure("docs-ingest", {"properties": {"@timestamp": {"type": "date"}, "n": {"type": "long"}}})
        sink.append("docs-ingest", [{"@timestamp": "2026-12-01T00:00:00Z", "n": 1}])
        with (settings.data_dir / "logs" / "docs-ingest.jsonl").open("a", encoding="utf-8") as fh:
            fh.write('{"@timestamp": "2026-12-01T00:00:0", "q": "caf\u00e9')  # a writer killed mid-line, after an é
        assert sink.latest("docs-ingest")["n"] == 1
        sink.append("docs-ingest", [{"@timestamp": "2026-12-02T00:00:00Z", "n": 2}])
        assert sink.latest("docs-ingest")["n"] == 2  # the torn line never swallowed the next one


# --- bad records are rejects -----------------------------------------------------------------------
def _nested(depth: int) -> list:
    value: list = [1]
    for _ in range(depth):
        value = [value]
    return value


def test_hostile_records_are_rejected_with_position_and_the_ingest_goes_on(tmp_path, settings, memo_encoder):
    jsonl = tmp_path / "hostile.jsonl"
    lines = [
        json.dumps({"id": "ok1", "text": "fine"}),
        '{"id": "deep", "text": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"id": "sur", "text": "bad \\ud800 escape"}',
        json.dumps({"id": "big", "text": "x" * 1_000_001}),
        json.dumps({"id": "nest", "text": "t", "meta": {"a": _nested(40)}}),
        json.dumps({"id": "ok2", "text": "fine too"}),
    ]
    jsonl.write_text("\n".join(lines) + "\n")
    csv_file = tmp_path / "hostile.csv"
    # 200,000 characters: over the csv module's default field limit (which aborted the read), under ours;
    # 1,200,000: over ingest.max_field_chars, so that row alone is rejected
    csv_file.write_text(f'id,text\nc1,short\nc2,"{"y" * 200_000}"\nc3,"{"z" * 1_200_000}"\nc4,also short\n')
    with EmbeddedBackend(data_dir=settings.data_dir) as backend:
        summary = run_ingest(
            open_source(jsonl, FieldMap(id_fields=("id",), metadata_fields=("meta",))),
            backend,
            memo_encoder,
            settings,
            alias="h",
        )
        assert (summary.stored, summary.rejected) == (2, 4)
        rejects = [json.loads(line) for line in Path(summary.rejects_path).read_text().splitlines()]
        assert [r["position"] for r in rejects] == [2, 3, 4, 5]
        assert "nested too deeply" in rejects[0]["reason"] and "undecodable" in rejects[1]["reason"]
        assert "max_field_chars" in rejects[2]["reason"] and "max_depth" in rejects[3]["reason"]
        summary = run_ingest(
            open_source(csv_file, FieldMap(id_fields=("id",))), backend, memo_encoder, settings, alias="c"
        )
        assert (summary.stored, summary.rejected) == (3, 1)
        assert "max_field_chars" in Path(summary.rejects_path).read_text()


# --- hard limits on requests -----------------------------------------------------------------------
def test_no_request_can_exhaust_the_process(tmp_path):
    with EmbeddedBackend(data_dir=tmp_path) as backend:
        _build(backend, "docs", 5, 1)
        searcher = HybridSearcher(backend, index="docs")
        with pytest.raises(QueryError, match="max_top_k"):
            searcher.search("doc", mode="bm25", top_k=1_000_000_000)
        with pytest.raises(QueryError, match="max_query_chars"):
            searcher.search("doc " * 25_000, mode="bm25")
        deep = HybridSearcher(
            backend, index="docs", settings=load_settings(overrides={"search": {"rerank_depth": 5000}}).search
        )
        with pytest.raises(QueryError, match="max_rerank_depth"):
            deep.search("doc", mode="bm25+rerank")
        from hybrid_search.app.duplicates import mine_duplicates

        with pytest.raises(ConfigError, match="over 1,000"):
            mine_duplicates(backend, "docs", top_k=1_000_000)
    with pytest.raises(ConfigError, match="top_k"):
        load_settings(overrides={"search": {"top_k": 1_000_000_000}})


# --- secrets ---------------------------------------------------------------------------------------
PASSWORD = "S3c/r?e#t@:pw"


@pytest.mark.parametrize(
    "url", [f"http://elastic:{PASSWORD}@localhost:9200", "http://elastic:123/x@host:9200", f"https://u:{PASSWORD}@h"]
)
def test_a_password_in_a_url_is_never_echoed(url):
    with pytest.raises(ConfigError) as err:
        check_url(url, "cluster URL")
    secret = url.split("://")[1].rpartition("@")[0]
    assert secret.split(":", 1)[1] not in str(err.value) and "***" in str(err.value)


def test_no_error_path_prints_the_password(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs = [
        ["inspect", "--backend", "elasticsearch", "--url", f"http://elastic:{PASSWORD}@127.0.0.1:9"],
        ["inspect", "--backend", "elasticsearch", "--url", "http://127.0.0.1:9", "--config", str(tmp_path / "s.toml")],
        ["inspect", "--backend", "elasticsearch", "--url", "http://127.0.0.1:9"],
    ]
    (tmp_path / "s.toml").write_text(f'[backend]\nusername = "elastic"\npassword = "{PASSWORD}"\n')
    for i, args in enumerate(runs):
        child = {**env, "HYBRID_SEARCH_BACKEND__PASSWORD": PASSWORD} if i == 2 else env
        out = subprocess.run([*HYBRID_SEARCH, *args], capture_output=True, text=True, env=child, timeout=120)
        assert out.returncode == 2, out.stderr
        for part in (PASSWORD, "S3c/r", "e#t@"):
            assert part not in out.stdout + out.stderr, (args, out.stderr)
    assert "export the credential as HYBRID_SEARCH_PASSWORD" in out.stderr


# --- hangs and dead ends ---------------------------------------------------------------------------
def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    # 9 levels of 9 aliases each: about 900 bytes that expand to 9**9 values (a "billion laughs")
    lines = ["a: &a {k0: x, k1: x, k2: x, k3: x, k4: x, k5: x, k6: x, k7: x, k8: x}"]
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} {{" + ", ".join(f"k{j}: *{prev}" for j in range(9)) + "}")
    lines = ["profile:"] + ["  " + line for line in lines]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    out = subprocess.run([*HYBRID_SEARCH, "inspect", "--config", str(bomb)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "through its YAML aliases" in out.stderr


class _LosingBackend:
    """The real embedded backend, except that the first upsert silently loses one acknowledged document
    (a server that lost writes: a fault that cannot be caused on a healthy local store)."""

    def __init__(self, inner: EmbeddedBackend) -> None:
        self.inner, self.lost = inner, False

    def upsert(self, index, docs):
        if not self.lost and len(docs) > 1:
            self.lost = True
            result = self.inner.upsert(index, docs)
            self.inner.delete(index, [docs[0].doc_id])
            return result
        return self.inner.upsert(index, docs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_count_check_after_lost_writes_is_recovered_by_resume(settings, memo_encoder):
    with EmbeddedBackend(data_dir=settings.data_dir) as inner:
        losing = _LosingBackend(inner)
        with pytest.raises(IndexingError, match="Rerun with --resume: it sends every record again"):
            run_ingest(open_source(SAMPLE), losing, memo_encoder, settings, alias="docs")
        assert not inner.index_exists("docs")
        summary = run_ingest(open_source(SAMPLE), losing, memo_encoder, settings, alias="docs", resume=True)
        assert summary.stored == 40 and inner.count("docs") == 40


def test_an_orphan_build_is_listed_and_removed_by_the_next_build(settings, memo_encoder):
    with EmbeddedBackend(data_dir=settings.data_dir) as backend:
        run_ingest(open_source(SAMPLE), backend, memo_encoder, settings, alias="docs")
        orphan = backend.begin_build("docs", SPEC)  # what a kill between a swap and its clean-up leaves
        assert backend.orphan_builds("docs") == [orphan]
        with HybridSearch.from_settings(settings, index="docs") as hs:
            assert orphan in hs.inspect().table()
        run_ingest(open_source(SAMPLE), backend, memo_encoder, settings, alias="docs")
        assert backend.orphan_builds("docs") == [] and not backend.index_exists(orphan)


def test_close_after_another_process_dropped_the_open_build(tmp_path):
    with EmbeddedBackend(data_dir=tmp_path) as writer:
        _build(writer, "docs", 3, 1)
    reader = EmbeddedBackend(data_dir=tmp_path)
    assert reader.count("docs") == 3
    with EmbeddedBackend(data_dir=tmp_path) as other:
        other.drop_index("docs")
    reader.close()  # before: raised from flushing into the deleted folder


def test_an_invalid_utf8_query_is_one_clear_line():
    out = subprocess.run(
        [*HYBRID_SEARCH, "search", os.fsdecode(b"caf\xe9 \xff"), "--index", "x"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "not valid UTF-8" in out.stderr and "Traceback" not in out.stderr


# --- soak: two writers and a reader against one data dir --------------------------------------------
N_SOAK = 30


def _soak_writer(data_dir: str, seed: int, seconds: float, done: multiprocessing.Queue) -> None:
    builds = refused = 0
    deadline = time.monotonic() + seconds
    with EmbeddedBackend(data_dir=data_dir) as backend:
        version = seed * 1_000_000
        while time.monotonic() < deadline:
            version += 1
            try:
                _build(backend, "soak", N_SOAK, version)
                builds += 1
            except IndexLocked:
                refused += 1
                time.sleep(0.005)
    done.put(("writer", builds, refused))


def _soak_reader(data_dir: str, seconds: float, done: multiprocessing.Queue) -> None:
    answers, bad = 0, []
    deadline = time.monotonic() + seconds
    with HybridSearch(index="soak", data_dir=data_dir) as hs:
        while time.monotonic() < deadline:
            try:
                result = hs.search("doc", mode="bm25", top_k=N_SOAK + 5)
            except Exception as exc:  # an index not built yet is the only acceptable refusal
                if "does not exist" not in str(exc):
                    bad.append(repr(exc))
                continue
            versions = {h.metadata["v"] for h in result.hits}
            if len(result.hits) != N_SOAK or len(versions) != 1:
                bad.append(f"{len(result.hits)} hits of versions {sorted(versions)[:3]}")
            answers += 1
    done.put(("reader", answers, bad[:5]))


def test_soak_two_writers_and_a_reader(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    done = ctx.Queue()
    seconds = 12.0
    procs = [ctx.Process(target=_soak_writer, args=(str(tmp_path), s, seconds, done)) for s in (1, 2)]
    procs.append(ctx.Process(target=_soak_reader, args=(str(tmp_path), seconds + 3, done)))
    for p in procs:
        p.start()
    reports = [done.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    writers = [r for r in reports if r[0] == "writer"]
    reader = next(r for r in reports if r[0] == "reader")
    print("soak:", reports)
    assert sum(w[1] for w in writers) >= 4 and reader[1] >= 20
    assert reader[2] == []  # every answer was one complete build
    with EmbeddedBackend(data_dir=tmp_path) as backend:
        assert backend.orphan_builds("soak") == []
        assert {p.name for p in (tmp_path / "indexes").iterdir()} == set(backend._aliases().values())
        assert backend.count("soak") == N_SOAK


@pytest.fixture()
def small_disk(tmp_path):
    """A real 8 MiB file system (tmpfs), so the disk can really be filled; skips where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {out.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_with_the_disk_full_the_serving_build_stays_searchable(small_disk):
    data = small_disk / "data"
    with EmbeddedBackend(data_dir=data) as backend:
        _build(backend, "docs", 20, 1)
    with (small_disk / "fill").open("wb") as fh:
        with pytest.raises(OSError):
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        with contextlib.suppress(OSError):
            fh.close()
    with EmbeddedBackend(data_dir=data) as backend:  # before: 'disk I/O error' from opening the build
        assert len(backend.search_bm25("docs", "doc", 5)) == 5
        assert len(backend.search_knn("docs", _unit(1), 5, 20)) == 5


# --- in-memory records (also the everyday-use issue's first item) ---------------------------------
def test_records_in_memory_ingest_through_the_same_validation(settings):
    import pandas as pd
    import pyarrow as pa

    rows = [{"id": "r1", "text": "green tea from japan", "lang": "en"}, {"id": "r2", "text": ""}, {"text": "no id"}]
    with HybridSearch.from_settings(settings, index="mem") as hs:
        for data in (rows, iter(rows), pd.DataFrame(rows), pa.Table.from_pylist(rows)):
            summary = hs.ingest(data, metadata_fields=["lang"], id_field="id")
            assert (summary.read, summary.stored, summary.rejected) == (3, 1, 2), type(data)
            assert summary.source == "records:(unnamed)"
        assert [h.doc_id for h in hs.search("tea", mode="bm25").hits] == ["r1"]
        with pytest.raises(ConfigError, match="pass name="):
            hs.ingest(rows, id_field="id", resume=True)
        assert hs.ingest(rows, id_field="id", name="batch-1").source == "records:batch-1"
        with pytest.raises(Exception, match="records must be"):
            hs.ingest({"id": "x", "text": "a dict is one record, not many"})


def test_evaluate_on_a_missing_index_is_a_clear_error_and_q_is_quiet(tmp_path):
    from hybrid_search.config.errors import IndexNotFound

    with (
        HybridSearch(index="never", data_dir=tmp_path) as hs,
        pytest.raises(IndexNotFound, match="ingest SOURCE --index never"),
    ):
        hs.evaluate("sample", modes=["bm25"])
    out = subprocess.run(
        [*HYBRID_SEARCH, "inspect", "-q", "--index", "never", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "does not exist" in out.stderr and "unrecognized" not in out.stderr
