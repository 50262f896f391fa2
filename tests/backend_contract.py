"""The contract every ``Backend`` must pass, written once.

An engine's test module subclasses :class:`BackendContract` and supplies a ``backend`` fixture (and, if
its engine needs it, overrides ``supports_alias_swap``); the tests themselves never change per engine.
Vectors are small and hand-made so the suite checks the backend, not a model.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from hybrid_search.backends.base import IndexedDocument, IndexSpec, previous_alias
from hybrid_search.config.errors import ConfigError, IndexNotFound

DIMS = 8
SPEC = IndexSpec(dims=DIMS, similarity="dot_product")


def unit(*values: float) -> np.ndarray:
    v = np.zeros(DIMS, dtype=np.float32)
    v[: len(values)] = values
    return v / np.linalg.norm(v)


def corpus() -> list[IndexedDocument]:
    """Ten documents; d0..d7 point along one axis each, so nearest neighbours are known exactly."""
    texts = [
        "the cat sat on the warm mat",
        "dogs chase cats around the garden",
        "a quick brown fox jumps over the lazy dog",
        "stock markets fell sharply on monday",
        "the central bank raised interest rates",
        "solar panels convert sunlight into electricity",
        "wind turbines generate power from moving air",
        "a recipe for a simple tomato soup",
        "the exact phrase hybrid retrieval wins appears only here",
        "tomato soup recipe with basil and garlic",
    ]
    docs = []
    for i, text in enumerate(texts):
        axis = [0.0] * DIMS
        axis[i % DIMS] = 1.0
        axis[(i + 1) % DIMS] = 0.1 * (i // DIMS + 1)
        docs.append(
            IndexedDocument(
                doc_id=f"d{i}",
                title=f"title {i}",
                text=text,
                vector=unit(*axis),
                metadata={"topic": "finance" if i in (3, 4) else "other", "lang": "en"},
            )
        )
    return docs


class BackendContract:
    """What a backend must do. Subclasses provide the ``backend`` fixture."""

    @pytest.fixture()
    def index(self, backend):
        name = f"contract-{uuid.uuid4().hex[:10]}"
        yield name
        backend.drop_index(name)

    @pytest.fixture()
    def loaded(self, backend, index):
        backend.ensure_index(index, SPEC)
        result = backend.upsert(index, corpus())
        assert result.failed == ()
        backend.refresh(index)
        return index

    def test_ensure_index_is_idempotent_and_checks_dims(self, backend, index):
        assert not backend.index_exists(index)
        backend.ensure_index(index, SPEC)
        backend.ensure_index(index, SPEC)
        assert backend.index_exists(index)
        assert backend.index_spec(index).dims == DIMS
        with pytest.raises(ConfigError, match="dim"):
            backend.ensure_index(index, IndexSpec(dims=DIMS + 1))

    def test_counts_match_upserts(self, backend, loaded):
        assert backend.count(loaded) == len(corpus())

    def test_upsert_is_idempotent_and_replaces(self, backend, loaded):
        changed = IndexedDocument("d0", "title 0", "an entirely new sentence about zeppelins", unit(1.0), {})
        result = backend.upsert(loaded, [*corpus()[1:3], changed])
        backend.refresh(loaded)
        assert set(result.stored) == {"d0", "d1", "d2"}
        assert backend.count(loaded) == len(corpus())
        assert [h.doc_id for h in backend.search_bm25(loaded, "zeppelins", 5)] == ["d0"]
        assert "d0" not in [h.doc_id for h in backend.search_bm25(loaded, "warm mat", 5)]

    def test_deleted_documents_vanish(self, backend, loaded):
        assert backend.delete(loaded, ["d0", "no-such-id"]) == 1
        backend.refresh(loaded)
        assert backend.count(loaded) == len(corpus()) - 1
        assert "d0" not in [h.doc_id for h in backend.search_bm25(loaded, "cat mat", 10)]
        assert "d0" not in [h.doc_id for h in backend.search_knn(loaded, unit(1.0), 10, 50)]

    def test_knn_returns_nearest_first(self, backend, loaded):
        docs = corpus()
        for probe in (docs[2], docs[5]):
            hits = backend.search_knn(loaded, probe.vector, 3, 50)
            assert hits[0].doc_id == probe.doc_id
            assert [h.rank for h in hits] == [1, 2, 3]
            assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
            assert hits[0].knn_score == hits[0].score and hits[0].bm25_score is None
            assert hits[0].score == pytest.approx(1.0, abs=1e-3)  # scores are the similarity, on every engine

    def test_bm25_ranks_exact_phrase_first(self, backend, loaded):
        hits = backend.search_bm25(loaded, "hybrid retrieval wins", 5)
        assert hits[0].doc_id == "d8"
        assert hits[0].text.startswith("the exact phrase") and hits[0].title == "title 8"
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
        assert hits[0].bm25_score == hits[0].score

    def test_bm25_never_parses_query_syntax(self, backend, loaded):
        for text in ("text:soup AND (tomato", 'soup" OR -garlic +[basil'):
            hits = backend.search_bm25(loaded, text, 5)
            assert hits and {h.doc_id for h in hits} <= {"d7", "d9"}, text
        assert backend.search_bm25(loaded, "*?~^/\\{}:!", 5) == []

    def test_filters_restrict_bm25_and_knn(self, backend, loaded):
        bm25 = backend.search_bm25(loaded, "the", 10, {"topic": "finance"})
        assert {h.doc_id for h in bm25} <= {"d3", "d4"} and bm25
        knn = backend.search_knn(loaded, unit(1.0), 5, 50, {"topic": ["finance"]})
        assert {h.doc_id for h in knn} == {"d3", "d4"}
        assert knn[0].metadata["topic"] == "finance"

    def test_wrong_dimension_is_reported_per_item(self, backend, index):
        backend.ensure_index(index, SPEC)
        bad = IndexedDocument("bad", "", "short vector", np.ones(DIMS - 3, dtype=np.float32), {})
        result = backend.upsert(index, [corpus()[0], bad])
        backend.refresh(index)
        assert result.stored == ("d0",)
        assert [f.doc_id for f in result.failed] == ["bad"] and result.failed[0].reason
        assert backend.count(index) == 1

    def test_build_swaps_alias_atomically(self, backend, index):
        first = backend.begin_build(index, SPEC)
        backend.upsert(first, corpus()[:3])
        backend.finish_build(index, first)
        assert backend.count(index) == 3
        second = backend.begin_build(index, SPEC)
        backend.upsert(second, corpus())
        backend.refresh(second)
        assert backend.count(index) == 3  # searchers still see the old build
        backend.finish_build(index, second)
        assert backend.count(index) == len(corpus())
        assert backend.count(previous_alias(index)) == 3  # the replaced build is kept for rollback
        backend.finish_build(index, second)  # a finish resumed after a crash past the swap changes nothing
        assert backend.count(index) == len(corpus()) and backend.count(previous_alias(index)) == 3
        third = backend.begin_build(index, SPEC)
        backend.upsert(third, corpus()[:5])
        backend.finish_build(index, third)
        assert backend.count(index) == 5 and backend.count(previous_alias(index)) == len(corpus())
        assert not backend.index_exists(first)  # only one previous build is kept

    def test_rollback_swaps_serving_and_previous_builds(self, backend, index):
        with pytest.raises(IndexNotFound, match="no previous build"):
            backend.rollback(index)
        builds = []
        for n in (4, 7):
            builds.append(backend.begin_build(index, SPEC))
            backend.upsert(builds[-1], corpus()[:n])
            backend.finish_build(index, builds[-1])
        assert backend.rollback(index) == (builds[0], builds[1])
        assert (backend.count(index), backend.count(previous_alias(index))) == (4, 7)
        assert backend.rollback(index) == (builds[1], builds[0])
        assert backend.count(index) == 7
        backend.drop_index(index)
        assert not any(backend.index_exists(b) for b in builds)  # dropping an alias drops both builds

    def test_missing_index_is_a_clear_error(self, backend):
        with pytest.raises(IndexNotFound):
            backend.search_bm25(f"missing-{uuid.uuid4().hex[:8]}", "anything", 5)

    def test_logs_round_trip_under_a_strict_mapping(self, backend, index):
        from hybrid_search.app.logs import INGEST_LOG_MAPPING
        from hybrid_search.config.errors import IndexingError

        sink, name = backend.log_sink(), f"{index}-ingest"
        assert sink.count(name) == 0 and sink.latest(name) is None
        sink.ensure(name, INGEST_LOG_MAPPING)
        sink.ensure(name, INGEST_LOG_MAPPING)  # idempotent
        docs = [
            {"@timestamp": f"2026-01-0{i}T00:00:00Z", "alias": index, "status": "completed", "stored": i}
            for i in (1, 3, 2)
        ]
        assert sink.append(name, docs[:2], refresh=True) == 2
        with pytest.raises(IndexingError) as refused:
            sink.append(name, [docs[2], {"@timestamp": "2026-01-04T00:00:00Z", "not_mapped": 1}], refresh=True)
        assert len(refused.value.failed) == 1 and "not_mapped" in refused.value.failed[0].reason
        assert sink.count(name) == 3 and sink.latest(name)["stored"] == 3  # newest by timestamp
        backend.drop_index(name)
