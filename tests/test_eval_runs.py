"""Evaluation keeps what it finished: each mode's row and JSON as it completes, per-query runs cached so a
rerun (or one after a kill mid-mode) skips finished queries, the estimate up front, TREC run files and
per-query metrics that other tools score the same way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import ir_measures
import pytest
from conftest import REPO, SAMPLE

from hybrid_search import HybridSearch
from hybrid_search.app.eval_runs import QueryRunCache, format_seconds
from hybrid_search.app.evaluate import EvalOutputs
from hybrid_search.ingest.sources import open_query_set

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
CLI = [sys.executable, "-m", "hybrid_search.app.cli"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-runs")
    out = subprocess.run(
        [*CLI, "ingest", "sample", "--index", "s", "--data-dir", str(root), "--quiet"],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    return root


def _eval(data_dir, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "eval", "sample", "--index", "s", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=REPO,
        timeout=600,
    )


def test_rows_json_runs_and_the_estimate(data_dir, tmp_path):
    report, runs = tmp_path / "r.json", tmp_path / "runs"
    out = _eval(data_dir, "--modes", "bm25,knn", "--json", str(report), "--runs", str(runs), "--no-cache")
    assert out.returncode == 0, out.stderr
    assert "estimated time left: bm25" in out.stderr and "knn" in out.stderr.split("estimated time left")[1]
    rows = [line.split()[0] for line in out.stdout.splitlines()[2:]]
    assert rows == ["bm25", "knn"]
    payload = json.loads(report.read_text())
    assert payload["complete"] is True and set(payload["modes"]) == {"bm25", "knn"}
    # the TREC run, scored by ir_measures on its own, gives the report's nDCG@10
    qs = open_query_set(SAMPLE)
    for mode in ("bm25", "knn"):
        lines = (runs / f"{mode}.trec").read_text().splitlines()
        qid, q0, _doc, rank, _score, tag = lines[0].split()
        assert q0 == "Q0" and rank == "1" and tag == mode and qid in qs.queries
        run = list(ir_measures.read_trec_run(str(runs / f"{mode}.trec")))
        qrels = [ir_measures.Qrel(q, d, g) for q, docs in qs.qrels.items() for d, g in docs.items()]
        ndcg = ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, run)[ir_measures.nDCG @ 10]
        assert ndcg == pytest.approx(payload["modes"][mode]["ndcg@10"], abs=1e-4)
    per_query = (runs / "per-query.tsv").read_text().splitlines()
    assert per_query[0] == "mode\tquery_id\tmetric\tvalue"
    assert {tuple(r.split("\t")[:3:2]) for r in per_query[1:]} == {
        (m, metric) for m in ("bm25", "knn") for metric in ("ndcg@10", "recall@100", "mrr@10")
    }


def test_a_kill_mid_mode_keeps_finished_modes_and_queries(data_dir, tmp_path):
    report = tmp_path / "r.json"
    args = ["--modes", "bm25,hybrid+rerank", "--rerank-depth", "100", "--json", str(report)]
    proc = subprocess.Popen(
        [*CLI, "eval", "sample", "--index", "s", "--data-dir", str(data_dir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=ENV,
        cwd=REPO,
    )
    cache_root = data_dir / "eval-cache" / "s"
    deadline = time.monotonic() + 300
    killed = False
    while proc.poll() is None and time.monotonic() < deadline:
        files = list(cache_root.glob("*/hybrid+rerank-*.jsonl"))
        lines = len(files[0].read_text().splitlines()) if files else 0
        if report.exists() and lines >= 5:  # bm25 is done and written; rerank is midway
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.05)
    proc.wait()
    first = json.loads(report.read_text())
    assert "bm25" in first["modes"]
    if killed:  # a machine fast enough to finish first still checks the rerun below
        assert first["complete"] is False and "hybrid+rerank" not in first["modes"]
    kept = len(QueryRunCache(next(cache_root.glob("*/hybrid+rerank-*.jsonl"))))
    assert kept >= 5
    again = _eval(data_dir, *args)
    assert again.returncode == 0, again.stderr
    second = json.loads(report.read_text())
    assert second["complete"] is True and second["modes"]["bm25"]["cached"] == first["modes"]["bm25"]["queries"]
    assert second["modes"]["hybrid+rerank"]["cached"] == kept
    with HybridSearch(index="s", data_dir=data_dir) as hs:  # the cached rerun scores as a fresh one
        fresh = hs.evaluate("sample", modes=["hybrid+rerank"], outputs=EvalOutputs(cache=False))
    for metric in ("ndcg@10", "recall@100", "mrr@10"):
        assert second["modes"]["hybrid+rerank"][metric] == pytest.approx(fresh.modes["hybrid+rerank"].metrics[metric])


def test_a_torn_cache_line_is_run_again(tmp_path):
    path = tmp_path / "c.jsonl"
    cache = QueryRunCache(path)
    cache.add("q1", [("d1", 2.0), ("d2", 1.0)], 3.5)
    cache.close()
    with path.open("a") as fh:
        fh.write('{"qid": "q2", "docs": [["d')  # a kill mid-write
    again = QueryRunCache(path)
    assert len(again) == 1 and again.get("q1") == ([("d1", 2.0), ("d2", 1.0)], 3.5) and again.get("q2") is None


def test_estimates_read_as_people_say_them():
    assert [format_seconds(s) for s in (4, 600, 4.6 * 3600, float("inf"))] == ["4 s", "10 min", "4.6 h", "unknown"]


def test_a_long_estimate_suggests_max_queries(monkeypatch, capsys):
    from hybrid_search.app.cli.eval import _print_estimate

    _print_estimate({"bm25": 3.0, "hybrid+rerank": 4.5 * 3600}, None)
    err = capsys.readouterr().err
    assert "hybrid+rerank 4.5 h" in err and "--max-queries 200" in err
    _print_estimate({"bm25": 3.0}, None)
    assert "--max-queries" not in capsys.readouterr().err
