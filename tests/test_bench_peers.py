"""``bench peers`` at a tiny size: the bundled sample through this project and LanceDB with the same vectors,
each mode's latency and nDCG@10 side by side, ratios computed in the same run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def test_bench_peers_reports_both_systems_side_by_side(tmp_path):
    pytest.importorskip("lancedb", reason="the bench extra is not installed: pip install 'hybrid-search[bench]'")
    out = tmp_path / "peers.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hybrid_search.app.cli",
            "bench",
            "peers",
            "--queries",
            "6",
            "--data-dir",
            str(tmp_path),
            "-q",
        ]
        + ["--json", str(out)],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["docs"] == 40 and report["queries"] == 6
    for system in ("project", "lancedb"):
        assert report[system]["ingest_docs_per_s"] > 0 and report[system]["disk_bytes"] > 0
        for mode in ("bm25", "knn", "hybrid"):
            row = report[system][mode]
            assert 0 < row["p50_ms"] <= row["p95_ms"] and 0 <= row["ndcg@10"] <= 1
    # the same vectors: exact kNN on both sides ranks the same documents, so the scores agree
    assert report["project"]["knn"]["ndcg@10"] == pytest.approx(report["lancedb"]["knn"]["ndcg@10"], abs=0.02)
    assert report["hybrid_p50_lancedb_over_project"] > 0 and report["ingest_project_over_lancedb"] > 0
    assert report["disk_project_over_lancedb"] == pytest.approx(
        report["project"]["disk_bytes"] / report["lancedb"]["disk_bytes"], abs=0.01
    )
    assert "WARN" not in done.stderr
