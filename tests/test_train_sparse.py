"""``train sparse``: a few SpladeLoss steps on the real SPLADE-tiny change its weights, save a folder that both
sentence-transformers' ``SparseEncoder`` and ours load (to the same vectors), which indexes and searches as
``--sparse-model``; the command measures before and after on a judged folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, SAMPLE
from test_train import PAIRS, _write_csv

from hybrid_search import HybridSearch
from hybrid_search.app import training as train
from hybrid_search.encoding.sparse import SparseEncoder

st = pytest.importorskip("sentence_transformers", reason="training needs the train extra (in dev)")


@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory):
    # the bi-encoder tests' Quora-style pairs: the ranking loss learns from their positives
    return _write_csv(tmp_path_factory.mktemp("pairs") / "pairs.csv", PAIRS)


def test_few_steps_train_a_folder_both_loaders_load_and_search_with(splade, pairs_csv, tmp_path):
    out = tmp_path / "splade-ft"
    options = train.TrainOptions(batch_size=4, lr=5e-4, max_steps=4, seed=0, device="cpu")
    summary = train.train_sparse_encoder(train.read_pairs(pairs_csv), out, base="splade-tiny", options=options)
    assert summary.kind == "sparse-encoder" and summary.steps == 4 and summary.loss_curve
    assert all(np.isfinite(p["loss"]) for p in summary.loss_curve)

    texts = ["how do batteries store energy", "Batteries turn chemical energy into electricity."]
    ours = SparseEncoder(str(out))
    try:
        mine = ours.encode(texts)
        theirs = st.SparseEncoder(str(out), device="cpu").encode(texts, convert_to_tensor=True).to_dense().numpy()
        keep, tokens = ours._vocabulary
        for vector, row in zip(mine, theirs, strict=True):
            expected = {tokens[j]: float(row[j]) for j in np.flatnonzero(row > 0) if keep[j]}
            assert set(vector) == set(expected)
            assert max(abs(vector[t] - expected[t]) for t in expected) < 1e-4
        # the weights moved: the same text no longer encodes to the base model's vector
        before = splade.encode(texts[:1])[0]
        shared = set(before) & set(mine[0])
        assert shared and max(abs(before[t] - mine[0][t]) for t in shared) > 1e-4
    finally:
        ours.close()

    overrides = {"models": {"sparse_encoder": str(out), "device": "cpu"}}
    with HybridSearch(index="ft", data_dir=tmp_path / "data", overrides=overrides) as hs:
        hs.ingest("sample")
        assert hs.backend.index_spec("ft").sparse_model == str(out.resolve())
        result = hs.search("how do batteries make electricity", mode="sparse", top_k=3)
        assert result.hits and result.hits[0].sparse_score > 0


def test_train_sparse_from_the_command_line_measures_before_and_after(splade, pairs_csv, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    report = tmp_path / "sparse.json"
    command = [
        sys.executable,
        "-m",
        "hybrid_search.app.cli",
        "train",
        "sparse",
        str(pairs_csv),
        "--out",
        str(tmp_path / "m"),
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--eval",
        str(SAMPLE),
        "--json",
        str(report),
        "--quiet",
    ]
    out = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    summary = json.loads(report.read_text())
    assert summary["kind"] == "sparse-encoder" and summary["steps"] == 2
    assert set(summary["before"]) == set(summary["after"]) == {"ndcg@10", "recall@100", "mrr@10"}
    assert 0.3 < summary["before"]["ndcg@10"] <= 1.0  # SPLADE-tiny on the sample, exact dot product
    assert "trained sparse-encoder" in out.stdout and (tmp_path / "m" / "modules.json").exists()
    out = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert out.returncode == 2 and "already exists" in out.stderr  # a trained model is never replaced unasked
