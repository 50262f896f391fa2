"""A fused search on the embedded backend scores each leg's candidates by id alone and reads the stored
fields of only the hits it keeps (``scoring`` / ``fill``): the results must be exactly those of reading
every candidate's fields, and a document deleted between scoring and filling is left out."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from hybrid_search import HybridSearch
from hybrid_search.backends.handles import IndexHandle
from hybrid_search.search.hits import Hit, ScoredHits
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


def test_scored_hits_read_as_the_hits_they_stand_for():
    scored = ScoredHits(["a", "b", "c"], [3.0, 2.0, 1.0], "knn_score")
    assert len(scored) == 3 and scored.pairs() == [("a", 3.0), ("b", 2.0), ("c", 1.0)]
    assert scored[0] == Hit(doc_id="a", rank=1, score=3.0, knn_score=3.0)
    assert scored[-1].doc_id == "c" and scored[-1].rank == 3
    assert [h.doc_id for h in scored[1:]] == ["b", "c"] and [h.rank for h in scored[::2]] == [1, 3]
    assert list(scored) == scored[:] and scored == scored[:] and scored != scored[:2]
    with pytest.raises(IndexError):
        scored[3]
    with pytest.raises(ValueError, match="2 ids for 1 scores"):
        ScoredHits(["a", "b"], [1.0], None)
    assert ScoredHits(["a"], [1.0], None)[0] == Hit(doc_id="a", rank=1, score=1.0)


DELETER = """
import sys
from hybrid_search import HybridSearch
with HybridSearch(index="light", data_dir=sys.argv[1]) as hs:
    hs.delete_documents([sys.argv[2]])
"""


def test_remembered_ids_follow_deletes_and_replacements_in_this_and_other_processes(tmp_path):
    """Fusion reads a kNN candidate's doc id by row key once and remembers it: a deleted document must
    still drop out of the candidates and a replaced one come back at its new vector."""
    records = _records(20)
    with HybridSearch(index="light", data_dir=tmp_path) as hs:
        hs.ingest(records, vector_field="vec")
        scoring = hs.backend.open_index("light").scoring()

        def knn(i: int) -> list[str]:
            return [h.doc_id for h in scoring.search_knn(np.asarray(records[i]["vec"]), 20, 40)]

        assert knn(3)[0] == "r3" and knn(5)[0] == "r5" and len(knn(3)) == 20
        hs.delete_documents(["r5"])
        assert "r5" not in knn(5) and len(knn(5)) == 19
        hs.upsert([{**records[3], "vec": records[7]["vec"], "text": "moved"}], vector_field="vec")
        assert knn(3)[0] != "r3" and set(knn(7)[:2]) == {"r3", "r7"}
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        subprocess.run([sys.executable, "-c", DELETER, str(tmp_path), "r9"], check=True, env=env, timeout=120)
        assert "r9" not in knn(9) and len(knn(9)) == 18
        hit = hs.search("moved", mode="hybrid", top_k=1, vector=np.asarray(records[7]["vec"])).hits[0]
        assert hit.doc_id in {"r3", "r7"} and hit.text == ("moved" if hit.doc_id == "r3" else records[7]["text"])
