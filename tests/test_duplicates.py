"""Duplicate mining on a hand-built corpus with known duplicates, and the pair metrics by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hybrid_search.app.duplicates import average_precision, best_f1, mine_duplicates, write_pairs
from hybrid_search.backends.embedded import EmbeddedBackend
from hybrid_search.config.settings import load_settings
from hybrid_search.ingest.pipeline import run_ingest
from hybrid_search.ingest.sources import open_source

QUESTIONS = {
    "a1": "How do I learn Python programming quickly?",
    "a2": "What is the fastest way to learn Python programming?",
    "b1": "How can I lose weight without going to the gym?",
    "b2": "How do I lose weight without a gym membership?",
    "c1": "What is the capital of Australia?",
    "c2": "Which city is the capital of Australia?",
    "x1": "Why is the sky blue during the day?",
    "x2": "What are the best hiking trails in Colorado?",
    "x3": "How does a refrigerator keep food cold?",
}


@pytest.fixture(scope="module")
def mined_index(tmp_path_factory, encoder):
    tmp = tmp_path_factory.mktemp("dups")
    corpus = tmp / "q.jsonl"
    corpus.write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in QUESTIONS.items()))
    settings = load_settings(overrides={"data_dir": str(tmp / "data")})
    with EmbeddedBackend(data_dir=settings.data_dir) as backend:
        run_ingest(open_source(corpus), backend, encoder, settings, alias="q")
        yield backend


def test_known_duplicates_are_found_once_each(mined_index):
    pairs = mine_duplicates(mined_index, "q", threshold=0.75, top_k=3, chunk=4)
    found = {(p.a_id, p.b_id) for p in pairs}
    assert found == {("a1", "a2"), ("b1", "b2"), ("c1", "c2")}
    assert len(pairs) == len(found)  # (a, b) and (b, a) reported once
    assert all(p.a_id < p.b_id for p in pairs)
    assert [p.score for p in pairs] == sorted((p.score for p in pairs), reverse=True)
    assert pairs[0].a_text == QUESTIONS[pairs[0].a_id]


def test_low_threshold_never_repeats_a_pair(mined_index):
    pairs = mine_duplicates(mined_index, "q", threshold=-1.0, top_k=8, chunk=2)
    keys = [(p.a_id, p.b_id) for p in pairs]
    assert len(keys) == len(set(keys)) == math.comb(len(QUESTIONS), 2)  # every pair, each once


def test_cross_encoder_confirmation_scores_every_kept_pair(mined_index, reranker, tmp_path):
    pairs = mine_duplicates(mined_index, "q", threshold=0.75, top_k=3, confirm=reranker.score_pairs)
    assert all(p.rerank_score is not None and 0.0 <= p.rerank_score <= 1.0 for p in pairs)
    out = tmp_path / "pairs.csv"
    write_pairs(pairs, out)
    lines = out.read_text().splitlines()
    assert lines[0].startswith("a_id,b_id,score,rerank_score") and len(lines) == len(pairs) + 1


def test_average_precision_and_best_f1_by_hand():
    scores = [0.9, 0.8, 0.7, 0.6]
    labels = [1, 0, 1, 0]
    assert average_precision(scores, labels) == pytest.approx((1 / 1 + 2 / 3) / 2)
    # thresholds: 0.9 -> P1 R.5 F .667 ; 0.8 -> F .5 ; 0.7 -> P 2/3 R 1 F .8 ; 0.6 -> F .667
    assert best_f1(scores, labels) == (pytest.approx(0.8), 0.7)
    assert best_f1([0.5, 0.5], [1, 0]) == (pytest.approx(2 / 3), 0.5)  # ties cannot be split
    assert average_precision([0.1], [0]) == 0.0 and best_f1([0.1], [0]) == (0.0, math.inf)


def test_mined_pairs_stay_on_disk_and_stream_in_order(mined_index, tmp_path):
    """Kept pairs live in a temporary table, not a Python dict: mining every pair of the corpus leaves no
    per-pair Python objects behind, and writing streams them best first."""
    import tracemalloc

    tracemalloc.start()
    pairs = mine_duplicates(mined_index, "q", threshold=-1.0, top_k=8, chunk=2)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(pairs) == math.comb(len(QUESTIONS), 2) and held < 200_000
    out = tmp_path / "all.csv"
    assert write_pairs(pairs, out) == len(pairs)
    scores = [float(line.split(",")[2]) for line in out.read_text().splitlines()[1:]]
    assert scores == sorted(scores, reverse=True)
    pairs.close()


def test_cluster_text_lookups_are_chunked(noida_url):
    """``get_texts`` asks for at most ``bulk_docs`` ids per ``mget``, however many it is given."""
    from hybrid_search.backends.base import IndexedDocument, IndexSpec
    from hybrid_search.backends.elasticsearch import ElasticsearchBackend
    from hybrid_search.config.settings import BackendSettings

    backend = ElasticsearchBackend(BackendSettings(kind="elasticsearch", urls=(noida_url,), bulk_docs=7))
    backend.drop_index("texts")
    backend.ensure_index("texts", IndexSpec(dims=2))
    backend.upsert("texts", [IndexedDocument(f"t{i}", "", f"text {i}", np.array([1.0, 0.0])) for i in range(30)])
    backend.refresh("texts")
    sizes = []
    real = backend.client.mget
    backend.client.mget = lambda **kw: sizes.append(len(kw["body"]["ids"])) or real(**kw)
    texts = backend.get_texts("texts", [f"t{i}" for i in range(30)] + ["missing"])
    assert len(texts) == 30 and texts["t3"] == "text 3" and max(sizes) == 7 and sum(sizes) == 31
    backend.drop_index("texts")
    backend.close()
