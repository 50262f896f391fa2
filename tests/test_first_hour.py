"""A new user's first hour, as a subprocess runs the CLI: mistakes end in one clear line before anything
slow happens or anything is stored, and the default output holds only what the user asked for."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, SAMPLE

from hybrid_search import HybridSearch, QueryError

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def cli(*args: str, env: dict[str, str] | None = None, merge: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hybrid_search.app.cli", *args],
        capture_output=not merge,
        stdout=subprocess.PIPE if merge else None,
        stderr=subprocess.STDOUT if merge else None,
        text=True,
        env=env or ENV,
        cwd=REPO,
        timeout=300,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The sample with a ``lang`` field, ingested once as ``docs`` (metadata: lang)."""
    root = tmp_path_factory.mktemp("first-hour")
    corpus = root / "corpus.jsonl"
    lines = []
    for i, line in enumerate((SAMPLE / "corpus.jsonl").read_text(encoding="utf-8").splitlines()):
        record = json.loads(line)
        record["lang"] = "de" if i % 5 == 0 else "en"
        lines.append(json.dumps(record))
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = cli(
        "ingest", str(corpus), "--index", "docs", "--data-dir", str(root / "d"), "--metadata-fields", "lang", "--quiet"
    )
    assert out.returncode == 0, out.stderr
    return root, corpus


def _d(data) -> list[str]:
    return ["--data-dir", str(data[0] / "d")]


# --- silent wrong results become clear errors ---------------------------------------------------------------
def test_an_empty_query_is_an_error_in_every_mode(data):
    for mode in ("bm25", "knn", "hybrid", "hybrid+rerank"):
        out = cli("search", "   ", "--index", "docs", "--mode", mode, *_d(data))
        assert out.returncode == 2 and out.stderr.startswith("error: the query is empty"), (mode, out.stderr)
    with HybridSearch(index="docs", data_dir=data[0] / "d") as hs, pytest.raises(QueryError, match="empty"):
        hs.search("\n\t", mode="knn")


def test_a_filter_on_a_field_the_index_lacks_is_an_error(data):
    out = cli("search", "tea", "--index", "docs", "--mode", "bm25", "--filter", "topic=food", *_d(data))
    assert out.returncode == 2
    assert "no metadata field 'topic'" in out.stderr and "lang" in out.stderr
    with HybridSearch(index="docs", data_dir=data[0] / "d") as hs:
        with pytest.raises(QueryError, match="no metadata field 'langue'"):
            hs.search("tea", mode="bm25", filters={"langue": "en"})
        assert all(h.metadata["lang"] == "de" for h in hs.search("tea", mode="bm25", filters={"lang": "de"}).hits)
    out = cli("inspect", "--index", "docs", "--json", *_d(data))
    assert json.loads(out.stdout)["stats"]["metadata_fields"] == {"lang": "keyword"}


def test_a_wrong_text_field_or_metadata_field_stores_nothing(data, tmp_path):
    _, corpus = data
    out = cli("ingest", str(corpus), "--index", "wrong", "--text-field", "body", "--data-dir", str(tmp_path), "--quiet")
    assert out.returncode == 2
    assert "no record has the text field 'body'" in out.stderr and "fields seen: _id, lang, text, title" in out.stderr
    out = cli(
        "ingest",
        str(corpus),
        "--index",
        "wrong",
        "--metadata-fields",
        "lang,lnag",
        "--data-dir",
        str(tmp_path),
        "--quiet",
    )
    assert out.returncode == 2 and "no record has the metadata field 'lnag'" in out.stderr
    assert not (tmp_path / "indexes").exists() or not any((tmp_path / "indexes").iterdir())


def test_eval_against_an_index_of_another_corpus_stops(data, tmp_path):
    other = tmp_path / "other"
    (other / "qrels").mkdir(parents=True)
    (other / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"x{i}", "text": f"other {i}"}) + "\n" for i in range(5))
    )
    (other / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "other"}) + "\n")
    (other / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tx1\t1\nq1\tx2\t1\n")
    out = cli("eval", str(other), "--index", "docs", "--modes", "bm25", *_d(data))
    assert out.returncode == 2
    assert "0 of the 2 judged documents" in out.stderr and "another corpus" in out.stderr


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_max_queries_must_be_a_positive_count(value, tmp_path):
    out = cli("eval", str(SAMPLE), "--max-queries", value, "--data-dir", str(tmp_path))
    assert out.returncode == 2 and "--max-queries" in out.stderr and "Traceback" not in out.stderr


# --- fail fast -----------------------------------------------------------------------------------------------
def test_the_index_and_names_are_checked_before_any_model_loads(tmp_path):
    broken_model = {**ENV, "HYBRID_SEARCH_MODELS__BI_ENCODER": str(tmp_path / "no-such-model")}
    out = cli("search", "x", "--index", "missing", "--data-dir", str(tmp_path), env=broken_model)
    assert out.returncode == 2 and "index 'missing' does not exist" in out.stderr  # not the model's error
    out = cli("search", "x", "--index", "Bad/Name", "--data-dir", str(tmp_path), env=broken_model)
    assert out.returncode == 2 and "index name 'Bad/Name' is not valid" in out.stderr
    out = cli("ingest", str(SAMPLE), "--index", "../up", "--data-dir", str(tmp_path), env=broken_model)
    assert out.returncode == 2 and "index name '../up' is not valid" in out.stderr
    assert not (tmp_path / "logs").exists()  # nothing written for a command that could not start


# --- quiet, honest output ------------------------------------------------------------------------------------
def test_default_output_holds_only_what_was_asked_for(data, tmp_path):
    out = cli("ingest", "sample", "--index", "quiet", "--data-dir", str(tmp_path), "--quiet")
    assert out.returncode == 0
    assert out.stderr.strip().startswith("ingested quiet") and len(out.stderr.strip().splitlines()) == 1
    out = cli("search", "green tea", "--index", "docs", "--mode", "hybrid+rerank", "--top-k", "2", *_d(data))
    assert out.returncode == 0 and out.stderr == "", out.stderr  # no INFO lines, no library progress bars
    assert out.stdout.splitlines()[0].startswith("hybrid+rerank on docs: 2 hits")
    out = cli("eval", "sample", "--index", "quiet", "--modes", "bm25", "--data-dir", str(tmp_path), "--quiet")
    assert out.returncode == 0 and out.stderr == "" and "{" not in out.stdout  # the table, not dicts after it


def test_the_query_log_summary_comes_after_the_results(data):
    out = cli("search", "green tea", "--index", "docs", "--mode", "bm25", "--log-queries", *_d(data), merge=True)
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("bm25 on docs") and lines[-1].startswith("query log docs-queries")


def test_version_and_defaults_in_help():
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("hybrid-search 0.")
    text = " ".join(cli("search", "--help").stdout.split())  # argparse wraps lines
    assert "(default: corpus)" in text and "(default: 10)" in text and "(default: hybrid)" in text


def test_progress_knows_the_total_of_a_cheap_source(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hybrid_search.ingest.sources import open_source

    parquet = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["x", "y", "z"]}), parquet)
    jsonl = tmp_path / "j.jsonl"
    jsonl.write_text('{"_id": "a", "text": "x"}\n\n{"_id": "b", "text": "y"}\n{"_id": "c", "text": "z"}')
    assert open_source(parquet).count_hint() == 3
    assert open_source(jsonl).count_hint() == 4  # lines, blank ones included: positions count them too
    assert open_source(SAMPLE).count_hint() == 40
    out = cli("ingest", "sample", "--index", "bar", "--data-dir", str(tmp_path / "d"))
    assert out.returncode == 0 and "40/40" in out.stderr  # the bar shows a total


def test_installing_prints_no_setuptools_warning(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-v",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0
    assert "Warning" not in out.stdout + out.stderr and "deprecated" not in (out.stdout + out.stderr).lower()


def test_a_bm25_search_loads_no_model(data):
    # a device that does not exist fails any model load: BM25 must not need one, kNN must
    no_device = {**ENV, "HYBRID_SEARCH_MODELS__DEVICE": "cuda:7"}
    out = cli("search", "green tea", "--index", "docs", "--mode", "bm25", *_d(data), env=no_device)
    assert out.returncode == 0 and "hits" in out.stdout, out.stderr
    out = cli("search", "green tea", "--index", "docs", "--mode", "knn", *_d(data), env=no_device)
    assert out.returncode == 2 and "CUDA is not available" in out.stderr


def test_a_misspelt_option_gets_the_commands_usage_and_a_suggestion(tmp_path):
    out = cli("search", "tea", "--mdoe", "bm25", "--data-dir", str(tmp_path))
    assert out.returncode == 2
    assert "usage: hybrid-search search" in out.stderr and "did you mean --mode?" in out.stderr
    out = cli("eval", "sample", "--max-querys", "5", "--data-dir", str(tmp_path))
    assert "usage: hybrid-search eval" in out.stderr and "did you mean --max-queries?" in out.stderr


def test_the_python_api_prints_nothing_of_its_own(data):
    script = (
        "from hybrid_search import HybridSearch\n"
        f"with HybridSearch(index='docs', data_dir={str(data[0] / 'd')!r}) as hs:\n"
        "    print(hs.search('green tea', mode='hybrid+rerank', top_k=1).doc_ids[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "" and len(out.stdout.split()) == 1  # no "Loading weights" bar, no log lines


def test_ingest_prints_json_to_a_pipe_and_only_its_line_to_a_terminal(tmp_path):
    import pty

    def ingest_on_a_terminal(*extra: str) -> str:
        leader, follower = pty.openpty()
        args = ["ingest", "sample", "--index", "t", "--data-dir", str(tmp_path), "--quiet", *extra]
        proc = subprocess.run(
            [sys.executable, "-m", "hybrid_search.app.cli", *args], stdout=follower, stderr=subprocess.PIPE, env=ENV
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.decode().startswith("ingested t")
        return b"".join(chunks).decode()

    assert ingest_on_a_terminal().strip() == ""
    assert json.loads(ingest_on_a_terminal("--json"))["stored"] == 40
    piped = cli("ingest", "sample", "--index", "t", "--data-dir", str(tmp_path), "--quiet")
    assert json.loads(piped.stdout)["stored"] == 40


def test_the_ingest_bar_moves_with_each_stored_batch_and_shows_rate_and_eta(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "text": f"document {i} " * 20}) + "\n" for i in range(600)))
    out = cli("ingest", str(corpus), "--index", "bar", "--data-dir", str(tmp_path), "--batch-size", "50")
    assert out.returncode == 0, out.stderr
    frames = [f for f in out.stderr.replace("\r", "\n").splitlines() if f.startswith("ingest bar:")]
    counts = {int(f.split("|")[-1].split("/")[0]) for f in frames if "|" in f}
    assert len(counts) >= 4 and max(counts) == 600  # several positions shown on the way, not 0 then 600
    assert any("rec/s" in f and "<" in f for f in frames)  # a rate and an ETA


def test_the_rerank_runtime_flag_its_errors_name_reaches_the_cross_encoder(data):
    # the offline cross-encoder is an ONNX file only: torch, asked for by the flag, is refused naming the other
    out = cli(
        "search", "green tea", "--index", "docs", "--mode", "hybrid+rerank", "--rerank-runtime", "torch", *_d(data)
    )
    assert out.returncode == 2 and "use --rerank-runtime onnx" in out.stderr, out.stderr
    out = cli(
        "search", "green tea", "--index", "docs", "--mode", "hybrid+rerank", "--rerank-runtime", "onnx", *_d(data)
    )
    assert out.returncode == 0 and "rerank=" in out.stdout, out.stderr
