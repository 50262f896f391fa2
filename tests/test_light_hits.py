"""A fused search on the embedded backend scores each leg's candidates by id alone and reads the stored
fields of only the hits it keeps (``scoring`` / ``fill``): the results must be exactly those of reading
every candidate's fields, and a document deleted between scoring and filling is left out."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid_search import HybridSearch
from hybrid_search.backends.handles import IndexHandle
from hybrid_search.search.searcher import RetrievalPipeline

TOPICS = ["bread", "rivers", "volcanoes", "chess", "violins"]


def _records(n: int = 60) -> list[dict]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        v = rng.standard_normal(384)
        out.append(
            {
                "id": f"r{i}",
                "title": f"note {i}",
                "text": f"{TOPICS[i % 5]} and {TOPICS[(i * 3) % 5]} record {i}",
                "year": 2000 + i % 7,
                "vec": (v / np.linalg.norm(v)).tolist(),
            }
        )
    return out


@pytest.mark.parametrize("filters", [None, {"year": {"gte": 2003}}, {"year": [2001, 2005]}])
@pytest.mark.parametrize("mode", ["hybrid", "hybrid+rerank"])
def test_scoring_then_filling_equals_reading_every_candidate(tmp_path, filters, mode, reranker):
    rng = np.random.default_rng(4)
    with HybridSearch(index="light", data_dir=tmp_path) as hs:
        hs.ingest(_records(), vector_field="vec", metadata_fields=["year"])
        backend = hs.backend
        light = RetrievalPipeline(backend, index="light", reranker=reranker, owns_parts=False)
        full = RetrievalPipeline(backend, index="light", reranker=reranker, owns_parts=False)
        full.target = IndexHandle(backend, "light")  # scoring() is itself: every candidate read whole
        assert type(light.target).__name__ == "EmbeddedIndexHandle"
        for query in ("bread rivers", "chess record", "violins and volcanoes"):
            v = rng.standard_normal(384).astype(np.float32)
            request = light.request(query, mode=mode, top_k=7, filters=filters, vector=v / np.linalg.norm(v))
            a, b = light.run(request), full.run(request)
            assert [(h.doc_id, h.rank, h.score, h.title, h.text, dict(h.metadata)) for h in a.hits] == [
                (h.doc_id, h.rank, h.score, h.title, h.text, dict(h.metadata)) for h in b.hits
            ]
            assert [h.leg_scores for h in a.hits] == [h.leg_scores for h in b.hits]
            assert all(h.text for h in a.hits)


def test_a_document_deleted_after_scoring_is_left_out_and_ranks_close_up(tmp_path):
    with HybridSearch(index="light", data_dir=tmp_path) as hs:
        hs.ingest(_records(20), vector_field="vec")
        handle = hs.backend.open_index("light")
        scored = handle.scoring().search_bm25("bread", 10)
        assert scored and not any(h.text for h in scored)
        hs.delete_documents([scored[0].doc_id])
        filled = handle.fill(scored)
        assert [h.doc_id for h in filled] == [h.doc_id for h in scored[1:]]
        assert [h.rank for h in filled] == list(range(1, len(filled) + 1)) and all(h.text for h in filled)
