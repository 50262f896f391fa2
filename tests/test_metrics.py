"""Evaluation metrics (through ir-measures) against values computed by hand."""

from __future__ import annotations

import math

import pytest

from hybrid_search.app.evaluate import score_run, select_queries

QRELS = {"q1": {"a": 1, "c": 1}, "q2": {"x": 2, "y": 1}, "q3": {"z": 0}}


def test_ndcg_recall_mrr_by_hand():
    run = {"q1": ["b", "a", "c"], "q2": ["y", "x"]}
    m = score_run(QRELS, run)
    # q1: DCG = 1/log2(3) + 1/log2(4); IDCG = 1 + 1/log2(3)
    ndcg_q1 = (1 / math.log2(3) + 0.5) / (1 + 1 / math.log2(3))
    # q2 (graded, trec_eval's linear gain): DCG = 1 + 2/log2(3); IDCG = 2 + 1/log2(3)
    ndcg_q2 = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert m["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2, abs=1e-6)
    assert m["recall@100"] == pytest.approx(1.0)
    assert m["mrr@10"] == pytest.approx((1 / 2 + 1) / 2)


def test_identical_ids_are_ignored_by_default():
    qrels = {"q1": {"d2": 1}}
    run = {"q1": ["q1", "d2"]}
    assert score_run(qrels, run)["mrr@10"] == pytest.approx(1.0)
    assert score_run(qrels, run, ignore_identical_ids=False)["mrr@10"] == pytest.approx(0.5)


def test_query_with_empty_run_counts_as_zero():
    m = score_run(QRELS, {"q1": ["a"], "q2": []})
    assert m["mrr@10"] == pytest.approx(0.5)
    assert m["recall@100"] == pytest.approx((0.5 + 0.0) / 2)


def test_unjudged_queries_are_not_selected():
    queries = {"q1": "one", "q3": "three", "q2": "two", "q9": "nine"}
    assert select_queries(queries, QRELS, None) == [("q1", "one"), ("q2", "two")]
    assert select_queries(queries, QRELS, 1) == [("q1", "one")]
