"""The command line, run as a user runs it: a subprocess, offline, on the bundled sample."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO, SAMPLE

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hybrid_search.app.cli", *args],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd or REPO,
        timeout=300,
    )


def test_help_imports_no_heavy_library():
    code = (
        "import sys, hybrid_search.app.cli as c\n"
        "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'faiss', 'tantivy', 'onnxruntime', 'datasets') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=REPO)
    assert out.returncode == 0
    assert out.stdout.strip().endswith("[]")
    assert "ingest" in out.stdout and "eval" in out.stdout


def test_errors_are_one_line_with_what_to_do(tmp_path):
    out = run("search", "anything", "--index", "missing", "--mode", "bm25", "--data-dir", str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: index 'missing' does not exist")
    assert "hybrid-search ingest" in out.stderr and "Traceback" not in out.stderr
    out = run("search", "x", "--mode", "fuzzy", "--data-dir", str(tmp_path))
    assert out.returncode == 2 and "unknown mode 'fuzzy'" in out.stderr


def test_ingest_search_eval_on_the_sample(tmp_path):
    data = str(tmp_path / "data")
    out = run("ingest", str(SAMPLE), "--index", "demo", "--data-dir", data, "--quiet")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert (summary["read"], summary["stored"], summary["rejected"]) == (40, 40, 0)

    out = run("search", "green tea water temperature", "--index", "demo", "--data-dir", data, "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["mode"] == "hybrid" and result["hits"][0]["doc_id"] == "d06"

    report = tmp_path / "eval.json"
    out = run(
        "eval",
        str(SAMPLE),
        "--index",
        "demo",
        "--data-dir",
        data,
        "--quiet",
        "--json",
        str(report),
        "--modes",
        "bm25,knn,hybrid,hybrid+rerank",
        "--rerank-depth",
        "10",
    )
    assert out.returncode == 0, out.stderr
    assert "hybrid+rerank" in out.stdout and "nDCG@10" in out.stdout
    modes = json.loads(report.read_text())["modes"]
    assert set(modes) == {"bm25", "knn", "hybrid", "hybrid+rerank"}
    for metrics in modes.values():
        assert set(metrics) >= {"ndcg@10", "recall@100", "mrr@10", "latency_ms"}
        assert set(metrics["latency_ms"]) == {"p50", "p95"}
        assert 0.0 <= metrics["ndcg@10"] <= 1.0
    assert modes["hybrid+rerank"]["ndcg@10"] > modes["bm25"]["ndcg@10"]


def test_a_typo_in_id_field_fails_and_keeps_the_index_then_rollback(tmp_path):
    data = str(tmp_path / "data")
    corpus = str(SAMPLE / "corpus.jsonl")
    assert run("ingest", corpus, "--index", "live", "--data-dir", data, "--quiet").returncode == 0
    out = run("ingest", corpus, "--index", "live", "--data-dir", data, "--quiet", "--id-field", "doc_id")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "nothing was stored: 40 read, 40 rejected" in out.stderr and "'live' is unchanged" in out.stderr
    out = run("search", "green tea", "--index", "live", "--data-dir", data, "--mode", "bm25", "--json", "--quiet")
    assert out.returncode == 0 and json.loads(out.stdout)["hits"]
    out = run("rollback", "--index", "live", "--data-dir", data, "--quiet")
    assert out.returncode == 2 and "no previous build of 'live'" in out.stderr
    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps({"_id": f"s{i}", "text": f"tea {i}"}) + "\n" for i in range(3)))
    out = run("ingest", str(small), "--index", "live", "--data-dir", data, "--quiet")
    assert out.returncode == 2 and "shrink 'live' from 40 to 3" in out.stderr
    out = run("ingest", str(small), "--index", "live", "--data-dir", data, "--quiet", "--resume", "--allow-shrink")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["stored"] == 3
    out = run("rollback", "--index", "live", "--data-dir", data, "--quiet")
    assert out.returncode == 0 and "40 documents" in out.stdout


def test_a_missing_extra_is_one_line_naming_it(tmp_path):
    for backend, module, extra in (
        ("elasticsearch", "elasticsearch", "elasticsearch"),
        ("opensearch", "opensearchpy", "opensearch"),
    ):
        code = (
            f"import sys; sys.modules[{module!r}] = None\n"  # as if the extra were not installed
            "from hybrid_search.app.cli import main\n"
            f"sys.exit(main(['search', 'x', '--mode', 'bm25', '--backend', {backend!r}, "
            "'--url', 'http://127.0.0.1:9']))"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=tmp_path)
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert out.stderr.strip().splitlines() == [
            f"error: the {'Elasticsearch' if backend == 'elasticsearch' else 'OpenSearch'} backend needs the "
            f"{module!r} package, which is not installed: pip install 'hybrid-search[{extra}]'"
        ]
