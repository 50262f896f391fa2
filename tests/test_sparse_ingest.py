"""Sparse vectors in and out of builds: precomputed ones from a source (``--sparse-field``), checked like
dense ones, each bad one rejected with its id and reason; and ``reindex``, which keeps the index's sparse field
(it dropped it), swaps its model, or drops it when asked. Real SPLADE-tiny, real files, the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SAMPLE

from hybrid_search import HybridSearch
from hybrid_search.config.errors import ConfigError
from hybrid_search.ingest.validate import MAX_SPARSE_TOKENS, sparse_reason

OVERRIDES = {"models": {"sparse_encoder": "splade-tiny", "device": "cpu"}}
QUERY = "what temperature water for green tea"


def test_a_precomputed_sparse_vector_is_checked():
    assert sparse_reason({"tea": 1.5, "##ing": 0.2}, "sp") == ({"tea": 1.5, "##ing": 0.2}, None)
    assert sparse_reason('{"tea": 2}', "sp") == ({"tea": 2.0}, None)  # JSON text, as a CSV cell holds it
    assert sparse_reason({}, "sp") == ({}, None)  # a passage may weigh nothing
    for value, why in (
        (None, "missing sparse field 'sp'"),
        ("tea:1", "not an object"),
        ([1.0, 2.0], "must be an object"),
        ({"a.b": 1.0}, "without '.'"),
        ({"tea": -1.0}, "positive finite"),
        ({"tea": float("nan")}, "positive finite"),
        ({"tea": True}, "positive finite"),
        ({"tea": "1"}, "positive finite"),
        ({f"t{i}": 1.0 for i in range(MAX_SPARSE_TOKENS + 1)}, "tokens, over"),
    ):
        vector, reason = sparse_reason(value, "sp")
        assert vector is None and reason is not None and why in reason, (value, reason)


def _sample_records() -> list[dict]:
    return [json.loads(line) for line in (SAMPLE / "corpus.jsonl").read_text().splitlines() if line.strip()]


def test_precomputed_sparse_vectors_are_stored_and_searched_as_encoded_ones(splade, tmp_path):
    records = _sample_records()
    vectors = splade.encode_documents([f"{r.get('title', '')} {r['text']}".strip() for r in records])
    rows = [{**r, "sp": v} for r, v in zip(records, vectors, strict=True)]
    bad = {records[0]["_id"]: {"tea.pot": 1.0}, records[1]["_id"]: {"tea": 0.0}, records[2]["_id"]: "oops"}
    for row in rows:
        if row["_id"] in bad:
            row["sp"] = bad[row["_id"]]
    path = tmp_path / "with-sparse.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    with HybridSearch(index="pre", data_dir=tmp_path / "pre", overrides=OVERRIDES) as pre:
        summary = pre.ingest(path, sparse_field="sp")
        assert summary.stored == len(rows) - 3 and summary.rejected == 3
        rejects = [json.loads(line) for line in Path(summary.rejects_path).read_text().splitlines()]
        assert {r["id"] for r in rejects} == set(bad) and all("sparse field 'sp'" in r["reason"] for r in rejects)
        with HybridSearch(index="enc", data_dir=tmp_path / "enc", overrides=OVERRIDES) as enc:
            enc.ingest(path)  # the same records, encoded here
            ours, theirs = pre.search(QUERY, mode="sparse", top_k=8), enc.search(QUERY, mode="sparse", top_k=8)
            kept = [h.doc_id for h in theirs.hits if h.doc_id not in bad]
            assert [h.doc_id for h in ours.hits][: len(kept) - 1] == kept[:-1]
            scores = {h.doc_id: h.sparse_score for h in theirs.hits}
            assert all(
                h.sparse_score == pytest.approx(scores[h.doc_id], rel=1e-5) for h in ours.hits if h.doc_id in scores
            )

    with (
        HybridSearch(index="no-model", data_dir=tmp_path / "x") as plain,
        pytest.raises(ConfigError, match="--sparse-model"),
    ):
        plain.ingest(path, sparse_field="sp")
    with HybridSearch(index="typo", data_dir=tmp_path / "y", overrides=OVERRIDES) as typo:
        with pytest.raises(ConfigError, match="no record has the sparse field 'spp'"):
            typo.ingest(path, sparse_field="spp")


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "hybrid_search.app.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


def test_reindex_keeps_swaps_or_drops_the_sparse_field(splade, tmp_path):
    common = ["--index", "r", "--data-dir", str(tmp_path / "data"), "--quiet"]
    out = _cli("ingest", str(SAMPLE), "--sparse-model", "splade-tiny", *common)
    assert out.returncode == 0, out.stderr
    with HybridSearch(index="r", data_dir=tmp_path / "data") as hs:
        before = hs.search(QUERY, mode="sparse", top_k=5).doc_ids
        model = hs.backend.index_spec("r").model

    # a new bi-encoder only: the sparse field and its model carry over (this reindex used to drop them)
    out = _cli("reindex", "--model", model, *common)
    assert out.returncode == 0, out.stderr
    assert "sparse splade-tiny" in out.stdout
    with HybridSearch(index="r", data_dir=tmp_path / "data") as hs:
        assert hs.backend.index_spec("r").sparse_model == "splade-tiny"
        assert hs.search(QUERY, mode="sparse", top_k=5).doc_ids == before

    # another sparse model (a copy of the same weights in a folder of its own): recorded, used for queries
    folder = shutil.copytree(splade.folder, tmp_path / "my-splade")
    out = _cli("reindex", "--sparse-model", str(folder), *common)
    assert out.returncode == 0, out.stderr
    with HybridSearch(index="r", data_dir=tmp_path / "data") as hs:
        spec = hs.backend.index_spec("r")
        assert spec.sparse_model == str(folder.resolve()) and spec.model == model  # the bi-encoder stays
        assert hs.search(QUERY, mode="sparse", top_k=5).doc_ids == before

    out = _cli("reindex", "--sparse-model", "none", *common)
    assert out.returncode == 0, out.stderr
    with HybridSearch(index="r", data_dir=tmp_path / "data") as hs:
        assert hs.backend.index_spec("r").sparse_model == ""
        with pytest.raises(ConfigError, match="sparse"):
            hs.search(QUERY, mode="sparse")
    out = _cli("reindex", *common)
    assert out.returncode == 2 and "--model" in out.stderr and "--sparse-model" in out.stderr
