"""``tune``: the cache reproduces a fresh evaluation, cross-validation never scores a query it tuned on, the
interpolation at a = 1 is today's rerank order, and the profile it writes is what search and eval load."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, SAMPLE

from hybrid_search import HybridSearch, load_settings
from hybrid_search.app.evaluate import score_run, select_queries
from hybrid_search.app.tune import FIXED_MODES, Pipeline, RunCache, _folds, grid, randomization_test, tune
from hybrid_search.config.errors import ConfigError
from hybrid_search.ingest.sources import open_query_set
from hybrid_search.search.hits import Hit
from hybrid_search.search.searcher import blend_rerank_scores, rerank_hits


@pytest.fixture(scope="module")
def sample_index(tmp_path_factory):
    data = tmp_path_factory.mktemp("tune")
    hs = HybridSearch(index="sample", data_dir=data)
    hs.ingest("sample")
    query_set = open_query_set(SAMPLE)
    queries = select_queries(query_set.queries, query_set.qrels, None)
    yield hs, queries, query_set.qrels, data
    hs.close()


def test_the_cache_gives_exactly_what_a_fresh_evaluation_gives(sample_index, reranker, tmp_path):
    """Exact for every setting. The cross-encoder here is an fp32 torch one (random weights, the same code
    path): the offline int8 ONNX export quantises activations per batch, so its scores move in the third
    decimal with the batch a passage lands in, and no cache can reproduce that bit for bit."""
    from hybrid_search.app.bench import random_cross_encoder

    base, queries, qrels, data = sample_index
    folder = random_cross_encoder(reranker.folder, tmp_path / "ce", layers=2, hidden=64, heads=2, intermediate=128)
    models = base.settings.models.model_copy(update={"cross_encoder": str(folder)})
    hs = HybridSearch.from_settings(base.settings.model_copy(update={"models": models}))
    cache = RunCache(hs, queries, depth=201)
    settings = [
        Pipeline("bm25"),
        Pipeline("knn"),
        Pipeline("hybrid", rrf_k=20),
        Pipeline("hybrid", fusion="linear", normalizer="zscore", bm25_weight=0.3, knn_weight=0.7),
        Pipeline("hybrid", rerank=True, rerank_depth=10, interpolation=0.5),
        Pipeline("knn", rerank=True, rerank_depth=20, interpolation=1.0),
    ]
    for p in settings:
        fresh = HybridSearch.from_settings(
            hs.settings.model_copy(update={"search": p.search_settings(hs.settings.search)})
        )
        fresh._backend, fresh._encoder, fresh._reranker = hs.backend, hs.encoder, hs.reranker  # same models
        ranked = {q: cache.ranked(p, q) for q, _ in queries}
        searched = {q: fresh.search(text, top_k=101).doc_ids for q, text in queries}
        assert ranked == searched, p.label
        assert score_run(qrels, ranked) == score_run(qrels, searched)
    hs.close()


def test_interpolation_at_one_is_todays_rerank_order():
    hits = [Hit(doc_id=f"d{i}", rank=i + 1, score=1.0 / (i + 1), text=f"t{i}") for i in range(6)]

    class Scores:
        def score(self, query, passages):
            return np.asarray([0.3, -1.0, 2.0, 0.3, 5.0, 0.0])[: len(passages)]

    today = rerank_hits(Scores(), "q", hits, 5)
    assert [h.doc_id for h in rerank_hits(Scores(), "q", hits, 5, interpolation=1.0)] == [h.doc_id for h in today]
    assert [h.doc_id for h in today] == ["d4", "d2", "d0", "d3", "d1", "d5"]
    assert [h.doc_id for h in rerank_hits(Scores(), "q", hits, 5, interpolation=0.0)][:5] == [f"d{i}" for i in range(5)]
    np.testing.assert_allclose(blend_rerank_scores([3.0, 1.0], np.asarray([0.0, 1.0]), 0.5), [0.5, 0.5])


def test_cross_validation_never_scores_a_query_it_tuned_on():
    qids = [f"q{i}" for i in range(23)]
    folds = _folds(qids, 5, seed=3)
    assert sorted(q for f in folds for q in f) == sorted(qids)  # each query held out exactly once
    assert all(set(a).isdisjoint(b) for i, a in enumerate(folds) for b in folds[i + 1 :])


def test_tune_on_the_sample_and_the_profile_loads(sample_index, tmp_path):
    hs, queries, qrels, data = sample_index
    report = tune(hs, queries, qrels, folds=3, budget=40, analyzer_check=True)
    analyzer = report.analyzer
    assert analyzer is not None and analyzer["current"] == "standard"
    assert set(analyzer["cross_validated"]) == {"standard", "english", "folding"}  # the sample has no CJK text
    others = {a: v for a, v in analyzer["cross_validated"].items() if a != "standard"}
    assert analyzer["alternative"] == max(others, key=others.__getitem__)  # the best of the others is compared
    assert analyzer["documents"] == hs.backend.count("sample")
    # the in-memory index with the index's own analyzer scores as the index does, so its tuned estimate is
    # the report's own; the other analyzer's is measured beside it
    assert analyzer["cross_validated"]["standard"] == pytest.approx(report.cross_validated)
    assert analyzer["gain"] == pytest.approx(
        analyzer["cross_validated"][analyzer["alternative"]] - analyzer["cross_validated"]["standard"]
    )
    assert analyzer["recommend"] in (None, analyzer["alternative"]) and "analyzer" in report.table()
    assert report.candidates >= 40 and set(report.fixed_modes) == set(FIXED_MODES)
    assert report.in_sample >= max(report.fixed_modes.values())  # the fixed modes are among the candidates
    assert 0.0 < report.p_vs_default <= 1.0 and len(report.fold_scores) == 3
    assert report.ce_pairs_scored > 0

    profile = tmp_path / "profile.toml"
    common = ["--index", "sample", "--data-dir", str(data), "--quiet"]
    out = _cli(
        "tune",
        "sample",
        *common,
        "--folds",
        "3",
        "--budget",
        "30",
        "--out",
        str(profile),
        "--json",
        str(tmp_path / "tune.json"),
    )
    assert out.returncode == 0, out.stderr
    assert "cross-validated" in out.stdout and json.loads((tmp_path / "tune.json").read_text())["folds"] == 3
    settings = load_settings(profile)
    assert settings.profile["metric"] == "ndcg@10" and settings.profile["folds"] == 3
    # the analyzer is reported with its measured effect, never applied: it needs a reindex
    assert settings.profile["analyzer_current"] == "standard" and "analyzer" in settings.profile["analyzer_advice"]
    assert "[index]" not in profile.read_text() and settings.index.analyzer == "standard"
    chosen = json.loads((tmp_path / "tune.json").read_text())["chosen"]
    assert settings.search.mode == chosen["base"] and settings.search.rerank_interpolation == chosen["interpolation"]
    out = _cli("eval", "sample", *common, "--config", str(profile), "--modes", "bm25,knn")
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()[2:]] == ["bm25", "knn", "tuned"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "hybrid_search.app.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


@pytest.mark.parametrize("analyzer", ["standard", "english", "folding", "cjk"])
def test_the_in_memory_bm25_index_scores_as_the_embedded_backend(analyzer, tmp_path):
    """What the analyzer measurement rests on: same analyzer, same ids and BM25 scores as a real index."""
    from hybrid_search.backends.embedded import LexicalIndex

    with HybridSearch(index="lex", data_dir=tmp_path, overrides={"index": {"analyzer": analyzer}}) as hs:
        hs.ingest("sample")
        docs = [d for batch in hs.backend.iter_documents("lex", batch=7) for d in batch]
        assert len(docs) == len({d.doc_id for d in docs}) == hs.backend.count("lex")
        lexical = LexicalIndex(analyzer)
        lexical.add(docs)
        for _qid, text in select_queries(*_sample_queries())[:15]:
            expected = [(h.doc_id, h.score) for h in hs.backend.search_bm25("lex", text, 20)]
            got = lexical.search(text, 20)
            assert [d for d, _ in got] == [d for d, _ in expected]
            np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-6)


def _sample_queries():
    query_set = open_query_set(SAMPLE)
    return query_set.queries, query_set.qrels, None


def test_the_grid_covers_the_search_space():
    space = grid()
    assert len(space) == len(set(space)) > 400
    assert {p.base for p in space} == {"bm25", "knn", "hybrid"}
    assert {p.normalizer for p in space if p.fusion == "linear"} == {"minmax", "zscore", "l2"}
    assert {p.interpolation for p in space if p.rerank} == {0.25, 0.5, 0.75, 1.0}


def test_randomization_test_by_hand():
    assert randomization_test([1, 1, 1], [1, 1, 1]) == 1.0
    assert randomization_test([1.0] * 30, [0.0] * 30) < 0.001
    assert randomization_test([0.5, 0.6, 0.4, 0.55], [0.55, 0.4, 0.6, 0.5]) > 0.5


@pytest.mark.integration
def test_tune_through_elasticsearch(noida_url, tmp_path):
    with HybridSearch(index="tune-es", backend="elasticsearch", url=noida_url, data_dir=tmp_path) as hs:
        hs.ingest("sample")
        query_set = open_query_set(SAMPLE)
        queries = select_queries(query_set.queries, query_set.qrels, None)
        report = tune(hs, queries, query_set.qrels, folds=2, budget=20, analyzer_check=True)
        assert report.in_sample >= max(report.fixed_modes.values()) and report.queries == len(queries)
        # the corpus is streamed back from the cluster (scrolled) into the analyzer measurement
        assert report.analyzer is not None and report.analyzer["documents"] == hs.backend.count("tune-es")
        hs.delete()


def test_tune_defaults_chooses_across_sets_and_scores_each_by_the_others(sample_index, tmp_path):
    from hybrid_search.app.tune_defaults import tune_defaults

    hs, queries, qrels, data = sample_index
    other = HybridSearch(index="sample-b", data_dir=data)
    other.ingest("sample")
    half = len(queries) // 2
    sets = {"a": (hs, queries[:half], qrels), "b": (other, queries[half:], qrels)}
    report = tune_defaults(sets, analyzers=["standard", "english", "folding"])
    other.close()
    # analyzers on bm25, hybrid and hybrid+rerank: the standard one scores as the index does (the index's
    # own analyzer, in memory), each choice is the best mean, and leave-one-set-out is each set's by the others
    a = report["analyzers"]
    assert set(a["mean"]) == {"standard", "english", "folding"} and set(a["chosen"]) == {
        "bm25",
        "hybrid",
        "hybrid+rerank",
    }
    assert a["mean"]["standard"]["hybrid"] == pytest.approx(report["mean"]["current_default"])
    for label, chosen in a["chosen"].items():
        assert a["mean"][chosen][label] == max(row[label] for row in a["mean"].values())
        picks = a["leave_one_out"][label]["picks"]
        assert a["leave_one_out"][label]["mean"] == pytest.approx(
            np.mean([a["sets"][picks[n]][label][n] for n in "ab"])
        )
    assert set(report["sets"]) == {"a", "b"} and report["chosen_labels"][1].startswith(report["chosen_labels"][0])
    for key in ("current_default", "chosen", "leave_one_out", "chosen_rerank"):
        assert report["mean"][key] == pytest.approx(np.mean([row[key] for row in report["sets"].values()]))
    # the setting chosen on both sets is at least as good on average as today's default (it is a candidate)
    assert report["mean"]["chosen"] >= report["mean"]["current_default"] - 1e-12
    with pytest.raises(ConfigError, match="at least two sets"):
        tune_defaults({"a": sets["a"]})


def test_tune_defaults_to_a_budget_that_finishes_in_minutes():
    from hybrid_search.app.cli import build_parser
    from hybrid_search.app.cli.tune import DEFAULT_BUDGET, DEFAULT_MAX_QUERIES

    args = build_parser().parse_args(["tune", "sample"])
    assert (args.budget, args.max_queries) == (DEFAULT_BUDGET, DEFAULT_MAX_QUERIES) == (120, 300)
    assert build_parser().parse_args(["tune", "sample", "--budget", "all"]).budget is None  # the whole grid
    with pytest.raises(SystemExit):
        build_parser().parse_args(["tune", "sample", "--budget", "0"])
