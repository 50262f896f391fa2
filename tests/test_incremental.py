"""Living indexes: append, upsert (changed, unchanged, new), delete by ids and by filter on every backend;
the query model rule for writes; readers in other processes see writes and never a half-written document;
compaction keeps results identical; ``indexes`` / ``drop`` / ``prune`` on a data dir with orphans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hybrid_search import HybridSearch
from hybrid_search.config.errors import ConfigError
from hybrid_search.config.settings import load_settings

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


def records(n: int = 30, version: int = 0) -> list[dict]:
    topics = ["bread", "rivers", "volcanoes", "chess", "violins"]
    return [
        {
            "id": f"r{i}",
            "title": f"Note {i} on {topics[i % 5]}",
            "text": f"record {i} version {version} is about {topics[i % 5]} and more {topics[i % 5]}",
            "year": 2000 + i,
            "version": version,
        }
        for i in range(n)
    ]


def _settings(kind: str, tmp_path: Path, request: pytest.FixtureRequest, **extra):
    overrides: dict = {"data_dir": str(tmp_path / "data"), "ingest": {"batch_size": 8}, **extra}
    if kind != "embedded":
        url = request.getfixturevalue("noida_url" if kind == "elasticsearch" else "osmem_url")
        overrides["backend"] = {"kind": kind, "urls": [url]}
        overrides["index"] = {"replicas": 0, "name": f"live-{kind}-{request.node.name[-12:].lower().strip('[]-')}"}
    return load_settings(overrides=overrides)


@pytest.mark.parametrize("kind", ["embedded", "elasticsearch", "opensearch"])
def test_append_upsert_and_delete_on_every_backend(kind, tmp_path, request):
    settings = _settings(kind, tmp_path, request)
    dense = kind != "opensearch"  # the OpenSearch stand-in has no kNN: its BM25 paths are what it proves
    with HybridSearch.from_settings(settings, index=f"live{kind[:2]}") as hs:
        hs.ingest(records(), metadata_fields=["year", "version"])
        before = hs.stats().write_generation

        # upsert: 28 unchanged, 2 changed, 1 new; only the 3 are encoded
        batch = records()
        batch[3]["text"] = "record 3 was rewritten about zeppelins"
        batch[4]["year"] = 1900
        batch.append({"id": "r99", "title": "New", "text": "a fresh note on zeppelins", "year": 2099, "version": 0})
        summary = hs.upsert(batch)
        assert (summary.added, summary.updated, summary.unchanged, summary.rejected) == (1, 2, 28, 0)
        assert summary.encoded == 3
        assert hs.stats().count == 31
        assert hs.stats().write_generation != before  # cached evaluation runs of the old state go stale
        hits = hs.search("zeppelins", mode="bm25").hits
        assert {h.doc_id for h in hits} == {"r3", "r99"}
        assert next(h for h in hits if h.doc_id == "r3").text == "record 3 was rewritten about zeppelins"
        assert [h.doc_id for h in hs.search("note", mode="bm25", filters={"year": 1900}).hits] == ["r4"]
        if dense:
            assert hs.search("a fresh note on zeppelins", mode="knn", top_k=1).hits[0].doc_id == "r99"
            assert hs.search("zeppelins", mode="hybrid", filters={"year": {"gte": 2099}}).hits[0].doc_id == "r99"

        # append refuses an id the index holds, with the reason in the rejects file; a new id goes in
        appended = hs.add([{"id": "r1", "text": "clash"}, {"id": "r100", "text": "appended about harps"}])
        assert (appended.added, appended.rejected) == (1, 1)
        reasons = [json.loads(line) for line in Path(appended.rejects_path).read_text().splitlines()]
        assert reasons[0]["id"] == "r1" and "--mode upsert" in reasons[0]["reason"]
        assert hs.search("harps", mode="bm25").hits[0].doc_id == "r100"

        # delete by ids (an unknown one is not counted) and by a filter
        gone = hs.delete_documents(["r99", "nope"])
        assert gone.deleted == 1
        gone = hs.delete_documents(filters={"year": {"lt": 2005}})
        assert gone.deleted == 5  # r0..r3 and r4 (year 1900)
        assert hs.stats().count == 32 - 1 - 5
        assert not hs.search("zeppelins", mode="bm25").hits
        left = {h.doc_id for h in hs.search("bread rivers volcanoes chess violins", mode="bm25", top_k=50).hits}
        assert not left & {"r0", "r1", "r2", "r3", "r4", "r99"}


def test_an_all_unchanged_upsert_loads_no_model_and_another_model_is_refused(tmp_path, request):
    settings = _settings("embedded", tmp_path, request)
    with HybridSearch.from_settings(settings, index="rule") as hs:
        hs.ingest(records(10))
    # a device that does not exist: any model load would fail, so an upsert that needs none proves it loads none
    no_device = _settings("embedded", tmp_path, request, models={"device": "cuda:7"})
    with HybridSearch.from_settings(no_device, index="rule") as hs:
        summary = hs.upsert(records(10))
        assert (summary.unchanged, summary.encoded) == (10, 0)
    other = _settings("embedded", tmp_path, request, models={"bi_encoder": "BAAI/bge-small-en-v1.5"})
    with HybridSearch.from_settings(other, index="rule") as hs, pytest.raises(ConfigError, match="reindex"):
        hs.upsert([{"id": "x", "text": "new"}])


def test_a_new_metadata_field_is_refused_and_the_index_fields_are_kept(tmp_path, request):
    settings = _settings("embedded", tmp_path, request)
    with HybridSearch.from_settings(settings, index="fields") as hs:
        hs.ingest(records(5), metadata_fields=["year"])
        with pytest.raises(ConfigError, match="rebuild"):
            hs.upsert(records(5), metadata_fields=["version"])
        hs.upsert([{"id": "n", "text": "filtered note", "year": 1800}])  # no fields named: the index's are used
        assert [h.doc_id for h in hs.search("note", mode="bm25", filters={"year": 1800}).hits] == ["n"]


READER = textwrap.dedent(
    """
    import json, sys
    from hybrid_search import HybridSearch
    data, rounds, modes = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    seen = set()
    with HybridSearch(index="busy", data_dir=data) as hs:
        for _ in range(rounds):
            for mode in modes:
                for h in hs.search("bread rivers volcanoes chess violins", mode=mode, top_k=40).hits:
                    # the stored text and metadata of one document always belong together
                    if f"version {h.metadata['version']} " not in h.text:
                        print(json.dumps({"torn": [h.doc_id, h.text, h.metadata]})); sys.exit(1)
                    seen.add(h.metadata["version"])
        print(json.dumps({"versions": sorted(seen)}))
    """
)

WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[3])
    from test_incremental import records
    from hybrid_search import HybridSearch
    data, versions = sys.argv[1], int(sys.argv[2])
    with HybridSearch(index="busy", data_dir=data) as hs:
        for v in range(1, versions + 1):
            hs.upsert(records(30, v))
    """
)


@pytest.mark.parametrize("kind", ["embedded", "elasticsearch"])
def test_readers_in_other_processes_see_whole_documents_during_writes_and_the_last_write_after(kind, tmp_path, request):
    data = tmp_path / "data"
    env = dict(ENV)
    if kind == "elasticsearch":
        env |= {
            "HYBRID_SEARCH_BACKEND__KIND": "elasticsearch",
            "HYBRID_SEARCH_BACKEND__URLS": request.getfixturevalue("noida_url"),
            "HYBRID_SEARCH_INDEX__REPLICAS": "0",
        }
    settings = _settings(kind, tmp_path, request)
    with HybridSearch.from_settings(settings, index="busy") as hs:
        if hs.exists():
            hs.drop()  # left by an earlier run on the session's stand-in
        hs.ingest(records(30, 0), metadata_fields=["version"])
        hs.search("warm", mode="bm25")  # this process keeps the build open while another one writes it
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(data), "6", str(Path(__file__).parent)], env=env)
        reader = subprocess.run(
            [sys.executable, "-c", READER, str(data), "15", "bm25,knn"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert writer.wait(timeout=600) == 0
        assert reader.returncode == 0, reader.stdout + reader.stderr
        # this process opened the build before the writes: it follows them without reopening
        for mode in ("bm25", "knn"):
            hits = hs.search("bread rivers volcanoes chess violins", mode=mode, top_k=40).hits
            assert {h.metadata["version"] for h in hits} == {6}, mode
            assert all("version 6 " in h.text for h in hits)
        assert hs.stats().count == 30


def test_compaction_keeps_every_result_identical(tmp_path):
    with HybridSearch(index="compact", data_dir=tmp_path / "data") as hs:
        hs.ingest(records(40), metadata_fields=["year"])
        changed = records(40, 1)[:15]
        hs.upsert(changed)
        hs.delete_documents(["r20", "r21", "r22"])
        queries = ["bread", "rivers and volcanoes", "chess version 1", "violins"]

        def results() -> list[list[tuple[str, float]]]:
            out = []
            for q in queries:
                for mode in ("bm25", "knn", "hybrid"):
                    for filters in (None, {"year": {"gte": 2010}}):
                        hits = hs.search(q, mode=mode, top_k=10, filters=filters).hits
                        out.append([(h.doc_id, round(h.score, 5)) for h in hits])
            return out

        before, stats = results(), hs.stats()
        assert stats.deleted_documents == 18 and stats.reclaimable_bytes
        report = hs.compact()
        assert report["tombstones_removed"] == 18
        assert report["bytes_after"] < report["bytes_before"]
        assert hs.stats().deleted_documents == 0
        assert results() == before


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hybrid_search.app.cli", *args], env=ENV, capture_output=True, text=True, timeout=600
    )


def test_indexes_drop_and_prune_on_a_data_dir_with_orphans(tmp_path):
    data = tmp_path / "data"
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in records(12)) + "\n")
    for name in ("alpha", "alpha", "beta"):  # alpha twice: a previous build is kept
        assert _cli("ingest", str(tmp_path / "a.jsonl"), "--index", name, "--data-dir", str(data), "-q").returncode == 0
    # what kills leave behind: an orphan build of alpha, an unfinished build of a never-finished index, a
    # checkpoint whose build is gone, and evaluation results of a state no longer served
    (data / "indexes" / "alpha-20200101000000000000").mkdir()
    (data / "indexes" / "gamma-20200101000000000000").mkdir()
    (data / "checkpoints").mkdir(exist_ok=True)
    (data / "checkpoints" / "delta.json").write_text(
        json.dumps({"alias": "delta", "physical": "delta-20200101000000000001", "source": "s", "model": "m"})
    )
    (data / "eval-cache" / "beta" / "beta-1-5").mkdir(parents=True)
    (data / "eval-cache" / "beta" / "beta-1-5" / "bm25.jsonl").write_text("{}\n" * 100)

    listed = _cli("indexes", "--data-dir", str(data), "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == {"alpha", "beta"}
    assert rows["alpha"]["count"] == 12 and rows["alpha"]["previous"].startswith("alpha-")
    assert rows["alpha"]["orphans"] == ["alpha-20200101000000000000"]
    assert rows["beta"]["model"] and rows["beta"]["store_bytes"] > 0 and rows["beta"]["last_write"]

    dry = json.loads(_cli("prune", "--data-dir", str(data), "--dry-run", "--json").stdout)
    assert len(dry["removed"]) == 4 and (data / "indexes" / "gamma-20200101000000000000").exists()
    pruned = _cli("prune", "--data-dir", str(data))
    assert pruned.returncode == 0, pruned.stderr
    assert "removed 4 items" in pruned.stdout
    assert not (data / "indexes" / "alpha-20200101000000000000").exists()
    assert not (data / "indexes" / "gamma-20200101000000000000").exists()
    assert not (data / "checkpoints" / "delta.json").exists()
    assert not (data / "eval-cache" / "beta" / "beta-1-5").exists()
    assert "removed 0 items" in _cli("prune", "--data-dir", str(data)).stdout

    refused = _cli("drop", "--index", "alpha", "--data-dir", str(data))
    assert refused.returncode == 2 and "--yes" in refused.stderr
    dropped = _cli("drop", "--index", "alpha", "--data-dir", str(data), "--yes")
    assert dropped.returncode == 0, dropped.stderr
    assert not [p for p in (data / "indexes").iterdir() if p.name.startswith("alpha")]
    assert not (data / "rejects" / "alpha.jsonl").exists() and not (data / "logs" / "alpha-ingest.jsonl").exists()
    assert [r["name"] for r in json.loads(_cli("indexes", "--data-dir", str(data), "--json").stdout)] == ["beta"]


def test_the_cli_upserts_deletes_by_file_and_filter_and_inspect_reports_the_churn(tmp_path):
    data = tmp_path / "data"
    source = tmp_path / "r.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in records(12)) + "\n")
    assert (
        _cli(
            "ingest", str(source), "--index", "c", "--data-dir", str(data), "-q", "--metadata-fields", "year"
        ).returncode
        == 0
    )
    changed = records(12, 1)[:3]
    source.write_text("\n".join(json.dumps(r) for r in records(12)[3:] + changed) + "\n")
    up = _cli("ingest", str(source), "--index", "c", "--data-dir", str(data), "-q", "--mode", "upsert")
    assert up.returncode == 0, up.stderr
    summary = json.loads(up.stdout)
    assert (summary["updated"], summary["unchanged"], summary["encoded"]) == (3, 9, 3)
    ids = tmp_path / "ids.txt"
    ids.write_text("r5\nr6\n")
    gone = _cli(
        "delete-docs", "--index", "c", "--data-dir", str(data), "--ids", str(ids), "r7", "--where", "year>=2010"
    )
    assert gone.returncode == 0, gone.stderr
    assert json.loads(gone.stdout)["deleted"] == 5  # r5 r6 r7, r10 r11
    inspect = _cli("inspect", "--index", "c", "--data-dir", str(data))
    assert "documents      7" in inspect.stdout and "8 deleted or replaced" in inspect.stdout
    compacted = _cli("compact", "--index", "c", "--data-dir", str(data))
    assert compacted.returncode == 0 and "compacted 8" in compacted.stdout


def test_bench_writes_reports_each_write_rate_beside_the_full_build(tmp_path):
    out = tmp_path / "writes.json"
    done = _cli("bench", "writes", "--docs", "300,40", "--data-dir", str(tmp_path / "data"), "-q", "--json", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["full_build_docs_per_s"] > 0
    for name in ("append", "upsert_changed", "upsert_unchanged", "delete"):
        assert report[f"{name}_docs_per_s"] > 0 and report[f"{name}_vs_full_build"] > 0
    assert report["upsert_changed_summary"]["updated"] == 40 and report["upsert_unchanged_summary"]["unchanged"] == 40
    assert report["compact"]["tombstones_removed"] == 80
    assert not (tmp_path / "data" / "checkpoints" / "bench-writes.json").exists()


def test_a_process_that_only_reads_never_holds_up_a_writer(tmp_path):
    data = tmp_path / "data"
    source = tmp_path / "new.jsonl"
    source.write_text(json.dumps({"id": "n1", "text": "a note about kites"}) + "\n")
    with HybridSearch(index="shared", data_dir=data) as hs:
        hs.ingest(records(10))
    with HybridSearch(index="shared", data_dir=data) as reader:  # opens the build afresh (and checks it)
        assert reader.search("bread", mode="bm25").hits
        writer = _cli("ingest", str(source), "--index", "shared", "--data-dir", str(data), "-q", "--mode", "append")
        assert writer.returncode == 0, writer.stderr
        assert [h.doc_id for h in reader.search("kites", mode="bm25").hits] == ["n1"]


@pytest.mark.parametrize("kind", ["elasticsearch", "opensearch"])
def test_indexes_and_drop_on_a_cluster(kind, tmp_path, request):
    settings = _settings(kind, tmp_path, request)
    with HybridSearch.from_settings(settings, index=f"mgmt-{kind[:2]}") as hs:
        hs.ingest(records(6))
        hs.ingest(records(6))  # a previous build is kept
        hs.search("bread", mode="bm25")  # writes the query log
        listed = {i.name: i for i in hs.indexes()}
        mine = listed[f"mgmt-{kind[:2]}"]
        assert mine.count == 6 and mine.previous and mine.previous != mine.physical and mine.model
        removed = hs.drop()
        assert f"build {mine.physical}" in removed and f"build {mine.previous}" in removed
        assert f"log mgmt-{kind[:2]}-ingest" in removed
        assert f"mgmt-{kind[:2]}" not in {i.name for i in hs.indexes()}
        assert not hs.exists()


@pytest.mark.parametrize("kind", ["embedded", "elasticsearch"])
def test_compact_after_deletes_on_each_backend(kind, tmp_path, request):
    settings = _settings(kind, tmp_path, request)
    with HybridSearch.from_settings(settings, index=f"squeeze-{kind[:2]}") as hs:
        if hs.exists():
            hs.drop()
        hs.ingest(records(20))
        hs.delete_documents([f"r{i}" for i in range(8)])
        before = [h.doc_id for h in hs.search("bread rivers volcanoes chess violins", mode="bm25", top_k=20).hits]
        report = hs.compact()
        assert set(report) == {"bytes_before", "bytes_after", "tombstones_removed"}
        assert hs.stats().count == 12
        assert [
            h.doc_id for h in hs.search("bread rivers volcanoes chess violins", mode="bm25", top_k=20).hits
        ] == before


@pytest.mark.parametrize(
    "title, text",
    [
        ("", "plain words"),
        ('a "quoted" \\ title', "tabs\tand\nnewlines\r, a NUL \x00 and \x1f"),
        ("naïve café", "日本語のテキスト, an emoji 🦀, line and paragraph separators \u2028\u2029"),
    ],
)
@pytest.mark.parametrize("metadata", [{}, {"year": 2001, "tags": ["a", "b"], "lang": "ç"}])
def test_the_content_hash_is_the_sha256_of_the_sorted_json_an_index_stores(title, text, metadata):
    """The hash is stored with every row and compared on upsert: a different encoding of the same record
    would rewrite every document of an existing index once."""
    import hashlib

    import numpy as np

    from hybrid_search.ingest.validate import Document

    vector = np.linspace(-1, 1, 8, dtype=np.float32)
    for vec in (None, vector):
        doc = Document("d1", title, text, 1, metadata, vec, None)
        parts = {"title": title, "text": text, "metadata": metadata, "sparse": None}
        raw = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()
        expected = hashlib.sha256(raw + (vec.tobytes() if vec is not None else b"")).hexdigest()
        assert doc.content_hash == expected
    with_sparse = Document("d1", title, text, 1, metadata, None, {"tok": 0.5})
    parts = {"title": title, "text": text, "metadata": metadata, "sparse": {"tok": 0.5}}
    raw = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()
    assert with_sparse.content_hash == hashlib.sha256(raw).hexdigest()
