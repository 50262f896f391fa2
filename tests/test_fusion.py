"""Fusion functions against numbers computed by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybrid_search.config.errors import ConfigError
from hybrid_search.search.fusion import FUSERS, fuse, fuse_linear, fuse_rrf, normalize_minmax, normalize_zscore

BM25 = [("a", 12.0), ("b", 9.0), ("c", 3.0)]
KNN = [("b", 0.9), ("d", 0.8), ("a", 0.5)]


def test_rrf_by_hand():
    fused = dict(fuse_rrf([BM25, KNN], k=60))
    # a: 1/61 + 1/63 ; b: 1/62 + 1/61 ; c: 1/63 ; d: 1/62
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 63)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["c"] == pytest.approx(1 / 63)
    assert fused["d"] == pytest.approx(1 / 62)
    assert [d for d, _ in fuse_rrf([BM25, KNN], k=60)] == ["b", "a", "d", "c"]


def test_rrf_small_k_and_weights():
    fused = dict(fuse_rrf([BM25, KNN], k=1, weights=[2.0, 1.0]))
    assert fused["a"] == pytest.approx(2 / 2 + 1 / 4)
    assert fused["d"] == pytest.approx(1 / 3)


def test_minmax_by_hand_and_zero_range():
    assert normalize_minmax([12.0, 9.0, 3.0]) == pytest.approx([1.0, 2 / 3, 0.0])
    assert normalize_minmax([5.0, 5.0]) == [1.0, 1.0]
    assert normalize_minmax([]) == []


def test_zscore_by_hand_and_zero_spread():
    # mean 8, population std sqrt(((4)^2 + 1^2 + 5^2)/3) = sqrt(14)
    assert normalize_zscore([12.0, 9.0, 3.0]) == pytest.approx(
        [4 / math.sqrt(14), 1 / math.sqrt(14), -5 / math.sqrt(14)]
    )
    assert normalize_zscore([2.0]) == [0.0]
    assert normalize_zscore([]) == []


def test_linear_minmax_by_hand():
    fused = dict(fuse_linear([BM25, KNN], weights=[0.3, 0.7], normalizer="minmax"))
    # bm25 minmax: a 1, b 2/3, c 0 ; knn minmax (0.9..0.5): b 1, d 0.75, a 0
    assert fused["a"] == pytest.approx(0.3 * 1 + 0.7 * 0)
    assert fused["b"] == pytest.approx(0.3 * 2 / 3 + 0.7 * 1)
    assert fused["c"] == pytest.approx(0.0)
    assert fused["d"] == pytest.approx(0.7 * 0.75)
    assert [d for d, _ in fuse_linear([BM25, KNN], weights=[0.3, 0.7])] == ["b", "d", "a", "c"]


def test_linear_zscore_missing_doc_contributes_zero():
    fused = dict(fuse_linear([[("x", 1.0), ("y", 3.0)], [("z", 0.5)]], normalizer="zscore"))
    assert fused == pytest.approx({"x": -1.0, "y": 1.0, "z": 0.0})


def test_empty_runs_and_ties_are_deterministic():
    assert fuse_rrf([[], []]) == []
    assert fuse_linear([[], KNN])[0][0] == "b"
    tied = fuse_rrf([[("q", 1.0)], [("p", 1.0)]])
    assert [d for d, _ in tied] == ["p", "q"]  # equal scores break by id


def test_registry_and_errors():
    assert set(FUSERS) == {"rrf", "linear"}
    assert fuse("rrf", [BM25], k=60)[0][0] == "a"
    with pytest.raises(ConfigError, match="unknown fusion"):
        fuse("borda", [BM25])
    with pytest.raises(ConfigError, match="one per run"):
        fuse_rrf([BM25, KNN], weights=[1.0])
    with pytest.raises(ConfigError, match="normalizer"):
        fuse_linear([BM25], normalizer="softmax")


@settings(max_examples=300, deadline=None)
@given(
    scores=st.dictionaries(
        st.text(alphabet="abcdef", min_size=1, max_size=3), st.sampled_from([0.0, 0.25, 0.5, 1.0, -1.0]), max_size=40
    ),
    limit=st.integers(min_value=0, max_value=45),
)
def test_the_first_limit_fused_are_the_head_of_the_whole_ranking_ties_by_id(scores, limit):
    """Fusion ranks its first ``limit`` without sorting everything: the same prefix, ties (here many) by id."""
    runs = [list(scores.items())]
    whole = fuse_linear(runs, normalizer="l2")
    assert fuse_linear(runs, normalizer="l2", limit=limit) == whole[:limit]
    assert fuse_rrf(runs, limit=limit) == fuse_rrf(runs)[:limit]
