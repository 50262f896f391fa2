"""The embedded backend: the shared contract, plus what only a local store must do (persistence, recovery)."""

from __future__ import annotations

import numpy as np
import pytest
from backend_contract import SPEC, BackendContract, corpus, unit

from hybrid_search.backends.base import IndexedDocument
from hybrid_search.backends.embedded import EmbeddedBackend


@pytest.fixture(params=[0, 20_000], ids=["graph", "flat"])
def backend(tmp_path, request):
    """The contract holds of both vector stores: the HNSW graph, and the exact flat index of a small corpus."""
    with EmbeddedBackend(data_dir=tmp_path / "data", exact_below=request.param) as b:
        yield b


class TestEmbeddedContract(BackendContract):
    pass


def test_construction_does_no_io(tmp_path):
    EmbeddedBackend(data_dir=tmp_path / "never-created")
    assert not (tmp_path / "never-created").exists()


def test_reopen_keeps_documents_and_vectors(tmp_path):
    with EmbeddedBackend(data_dir=tmp_path) as b:
        b.ensure_index("keep", SPEC)
        b.upsert("keep", corpus())
    with EmbeddedBackend(data_dir=tmp_path) as b:
        assert b.count("keep") == len(corpus())
        assert b.search_knn("keep", corpus()[4].vector, 1, 20)[0].doc_id == "d4"
        assert b.search_bm25("keep", "interest rates", 1)[0].doc_id == "d4"


def test_crash_before_graph_flush_is_replayed_without_duplicates(tmp_path):
    b = EmbeddedBackend(data_dir=tmp_path, flush_seconds=3600, exact_below=0)
    b.ensure_index("crash", SPEC)
    b.upsert("crash", corpus()[:4])
    b.refresh("crash")  # the graph on disk holds d0..d3
    b.upsert("crash", corpus()[4:])  # rows committed, graph not flushed: then the process "dies"
    b._open.clear()  # drop in-memory state without close(), as a crash would
    with EmbeddedBackend(data_dir=tmp_path, exact_below=0) as again:
        hits = again.search_knn("crash", corpus()[6].vector, 10, 50)
        assert hits[0].doc_id == "d6"
        assert len({h.doc_id for h in hits}) == len(hits) == len(corpus())


def test_many_replacements_compact_the_graph(tmp_path):
    with EmbeddedBackend(data_dir=tmp_path, flush_seconds=3600, exact_below=0) as b:
        b.ensure_index("churn", SPEC)
        docs = [IndexedDocument(f"x{i}", "", f"doc {i}", unit(1.0, i / 500), {}) for i in range(500)]
        for _ in range(4):
            b.upsert("churn", docs)
        b.refresh("churn")
        index = b._open["churn"]
        assert index._dead_count() == 0  # compaction cleared the 1500 tombstones
        assert index.vectors.ntotal == 500
        assert b.count("churn") == 500
        assert len(b.search_knn("churn", unit(1.0), 50, 100)) == 50


def test_large_filtered_knn_uses_the_graph_with_a_selector(tmp_path, monkeypatch):
    import hybrid_search.backends.embedded.vectors as embedded

    monkeypatch.setattr(embedded, "_EXACT_FILTER_LIMIT", 5)
    with EmbeddedBackend(data_dir=tmp_path, exact_below=0) as b:
        b.ensure_index("filt", SPEC)
        rng = np.random.default_rng(1)
        docs = [IndexedDocument(f"f{i}", "", "t", unit(*rng.normal(size=8)), {"even": i % 2 == 0}) for i in range(200)]
        b.upsert("filt", docs)
        hits = b.search_knn("filt", docs[10].vector, 10, 100, {"even": True})
        assert hits[0].doc_id == "f10"
        assert all(int(h.doc_id[1:]) % 2 == 0 for h in hits) and len(hits) == 10


def test_english_analyzer_stems(tmp_path):
    from hybrid_search.backends.base import IndexSpec

    with EmbeddedBackend(data_dir=tmp_path) as b:
        b.ensure_index("en", IndexSpec(dims=8, analyzer="english"))
        b.upsert("en", [IndexedDocument("r", "", "she was running quickly", unit(1.0), {})])
        assert [h.doc_id for h in b.search_bm25("en", "runs", 5)] == ["r"]
        b.ensure_index("std", IndexSpec(dims=8))
        b.upsert("std", [IndexedDocument("r", "", "she was running quickly", unit(1.0), {})])
        assert b.search_bm25("std", "runs", 5) == []


def test_a_repeated_filter_scans_the_table_once_until_the_next_write(tmp_path, monkeypatch):
    """Filtered kNN keeps one bitmap per filter (no per-query id list); a write makes it stale."""
    import hybrid_search.backends.embedded.vectors as embedded
    from hybrid_search.backends.base import IndexedDocument, IndexSpec

    monkeypatch.setattr(embedded, "_EXACT_FILTER_LIMIT", 5)  # force the HNSW + bitmap path on a small index
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(300, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    with EmbeddedBackend(data_dir=tmp_path, exact_below=0) as backend:
        backend.ensure_index("f", IndexSpec(dims=8))
        docs = [IndexedDocument(f"d{i}", "", f"text {i}", vecs[i], {"part": "a" if i % 3 else "b"}) for i in range(300)]
        backend.upsert("f", docs)
        backend.refresh("f")
        scans = []
        idx = backend._get("f")
        idx.db.set_trace_callback(lambda sql: scans.append(sql) if "json_each" in sql else None)
        first = backend.search_knn("f", vecs[0], 10, 300, {"part": "b"})
        again = backend.search_knn("f", vecs[0], 10, 300, {"part": "b"})
        assert len(scans) == 1 and [h.doc_id for h in first] == [h.doc_id for h in again]
        assert all(int(h.doc_id[1:]) % 3 == 0 for h in first) and first[0].doc_id == "d0"
        exact = sorted(range(0, 300, 3), key=lambda i: -float(vecs[i] @ vecs[0]))[:10]
        assert [h.doc_id for h in first] == [f"d{i}" for i in exact]
        backend.upsert("f", [IndexedDocument("new", "", "new", vecs[0], {"part": "b"})])
        backend.refresh("f")
        after = backend.search_knn("f", vecs[0], 10, 300, {"part": "b"})
        assert len(scans) == 2 and {"new", "d0"} <= {h.doc_id for h in after[:2]}


def test_a_small_index_is_searched_exactly_and_builds_its_graph_when_it_grows_past_exact_below(tmp_path):
    """Below ``exact_below`` vectors kNN is a flat exact scan (no graph to build at ingest); the write that
    reaches it builds the HNSW graph once, with the same ids, the tombstones and filters still applied, and
    the graph is what the next open reads."""
    rng = np.random.default_rng(5)
    vecs = rng.normal(size=(120, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    docs = [IndexedDocument(f"g{i}", "", f"text {i}", vecs[i], {"odd": i % 2 == 1}) for i in range(120)]
    with EmbeddedBackend(data_dir=tmp_path, exact_below=100) as b:
        b.ensure_index("grow", SPEC)
        b.upsert("grow", docs[:99])
        idx = b._get("grow")
        assert not idx.is_graph and b.stats("grow").vector["type"].startswith("faiss IndexFlatIP")
        exact = np.argsort(-(vecs[:99] @ vecs[7]))[:10]
        assert [h.doc_id for h in b.search_knn("grow", vecs[7], 10, 10)] == [f"g{i}" for i in exact]
        b.delete("grow", ["g7"])
        assert "g7" not in {h.doc_id for h in b.search_knn("grow", vecs[7], 98, 98)}
        b.refresh("grow")  # a flat index keeps its vectors once, in SQLite: no vector file
        assert not list(idx.path.glob("vectors-*.faiss"))
        flat_hits = [(h.doc_id, h.score) for h in b.search_knn("grow", vecs[3], 20, 20)]
    with EmbeddedBackend(data_dir=tmp_path, exact_below=100) as b:  # reopened: the rows read back
        assert [(h.doc_id, h.score) for h in b.search_knn("grow", vecs[3], 20, 20)] == flat_hits
        idx = b._get("grow")
        b.upsert("grow", docs[99:])
        assert idx.is_graph and idx.vectors.ntotal == 119 and b.stats("grow").vector["type"] == "faiss IndexHNSWFlat"
        hits = b.search_knn("grow", vecs[8], 119, 200)
        assert hits[0].doc_id == "g8" and "g7" not in {h.doc_id for h in hits} and len(hits) == 119
        odd = b.search_knn("grow", vecs[9], 5, 100, {"odd": True})
        assert odd[0].doc_id == "g9" and all(int(h.doc_id[1:]) % 2 for h in odd)
        b.refresh("grow")
        assert len(list(idx.path.glob("vectors-*.faiss"))) == 1
    with EmbeddedBackend(data_dir=tmp_path, exact_below=100) as b:
        assert b._get("grow").is_graph and b.search_knn("grow", vecs[100], 1, 50)[0].doc_id == "g100"


def test_a_cosine_index_normalises_huge_and_tiny_vectors_instead_of_zeroing_them(tmp_path):
    """Finite vectors whose squares leave float32's range (past 1.8e19, below 1e-23) were normalised by an
    infinite or zero norm: stored as zeros, found by no kNN search."""
    from hybrid_search.backends.base import IndexSpec

    spec = IndexSpec(dims=SPEC.dims, similarity="cosine")
    huge, tiny = np.zeros(SPEC.dims, dtype=np.float32), np.zeros(SPEC.dims, dtype=np.float32)
    huge[0], tiny[1] = 3e30, 2e-30
    with EmbeddedBackend(data_dir=tmp_path, exact_below=20_000) as b:
        b.ensure_index("cos", spec)
        b.upsert("cos", [IndexedDocument("huge", "", "h", huge, {}), IndexedDocument("tiny", "", "t", tiny, {})])
        for name, axis in (("huge", 0), ("tiny", 1)):
            hit = b.search_knn("cos", unit(*np.eye(SPEC.dims)[axis]), 1, 10)[0]
            assert hit.doc_id == name and hit.score > 0.99, hit


def test_a_cosine_batch_is_normalised_exactly_across_the_float32_range():
    """Each stored row is the input's direction at unit length, whatever its scale (subnormal to near
    float32's maximum) and whatever else is in its batch; refused rows are zeros and named."""
    from hybrid_search.backends.base import IndexSpec
    from hybrid_search.backends.embedded.batch import prepare_batch

    spec = IndexSpec(dims=8, similarity="cosine")
    rng = np.random.default_rng(7)
    scales = [1e-43, 1e-38, 1e-31, 1e-29, 1e-3, 1.0, 7.0, 1e29, 1e31, 3e37]
    shape = rng.standard_normal((len(scales), 8))
    docs = [
        IndexedDocument(f"s{i}", "", "t", (shape[i] / np.abs(shape[i]).max() * scale).astype(np.float32), {})
        for i, scale in enumerate(scales)
    ]
    bad = np.ones(8, dtype=np.float32)
    bad[3] = np.nan
    docs.insert(4, IndexedDocument("nan", "", "t", bad, {}))
    batch = prepare_batch(spec, docs)
    assert [(f.doc_id, f.reason) for f in batch.failed] == [("nan", "vector contains NaN or infinity")]
    kept = [d for d in docs if d.doc_id != "nan"]
    assert [r[0] for r in batch.rows] == [d.doc_id for d in kept]
    for row, doc, stored in zip(batch.rows, kept, batch.vectors, strict=True):
        wide = doc.vector.astype(np.float64)
        expected = wide / np.linalg.norm(wide)
        assert np.allclose(stored, expected, rtol=0, atol=2e-6), row[0]
        assert np.frombuffer(row[4], dtype=np.float32).tolist() == stored.tolist()
        assert abs(float(np.linalg.norm(stored.astype(np.float64))) - 1.0) < 1e-5, row[0]


def test_an_empty_title_or_metadata_scores_and_filters_as_one_written_out(tmp_path):
    """The text index leaves an empty title and an empty metadata object out of a document (a third of its
    cost); BM25 scores and metadata filters must equal those of an index holding them written out."""
    import tantivy

    from hybrid_search.backends.embedded.text import analyzer, bm25_query, open_text_index, tantivy_filter

    words = ["river", "delta", "flood", "plain", "silt", "bank", "tide", "estuary"]
    docs = [
        IndexedDocument(
            f"e{i}",
            "" if i % 3 else f"{words[i % 8]} {words[(i + 3) % 8]}",
            " ".join(words[(i * j) % 8] for j in range(1, 2 + i % 5)),
            unit(1.0, i / 40),
            {} if i % 2 else {"kind": "even", "n": i % 4},
        )
        for i in range(40)
    ]
    cases = [
        (q, f) for q in ("river silt", "tide", "estuary bank flood") for f in (None, {"kind": "even"}, {"n": [1, 2]})
    ]
    with EmbeddedBackend(data_dir=tmp_path / "data", exact_below=20_000) as b:
        b.ensure_index("e", SPEC)
        b.upsert("e", docs)
        b.refresh("e")
        ours = [{h.doc_id: round(h.score, 5) for h in b.search_bm25("e", q, 40, f)} for q, f in cases]
    (tmp_path / "reference").mkdir()
    reference = open_text_index(tmp_path / "reference", analyzer("standard"))
    writer = reference.writer(heap_size=15_000_000, num_threads=1)
    for d in docs:
        writer.add_document(tantivy.Document(doc_id=d.doc_id, title=d.title, text=d.text, metadata=dict(d.metadata)))
    writer.commit()
    reference.reload()
    searcher, text = reference.searcher(), analyzer("standard")
    for (q, f), scores in zip(cases, ours, strict=True):
        query = bm25_query(reference.schema, text, q)
        must = [query, *(tantivy.Query.const_score_query(c, 0.0) for c in tantivy_filter(reference.schema, f))]
        hits = searcher.search(tantivy.Query.boolean_query([(tantivy.Occur.Must, c) for c in must]), limit=40).hits
        expected = {searcher.doc(a)["doc_id"][0]: round(s, 5) for s, a in hits}
        assert scores == expected, (q, f)
        assert scores, (q, f)  # every case matches something, so the comparison is not of two empty sets
