"""The workbench: the real ``hybrid-search serve`` process on a free loopback port, spoken to over HTTP
(the API: search equal to the CLI's, errors, limits, the API key, concurrent requests, judgements saved as
a BEIR folder that ``eval`` and ``tune`` read, two profiles compared) and, where Debian's chromium and
chromium-driver are installed, driven in a real headless browser (tests/test_workbench_browser.py)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install 'hybrid-search[serve]'")

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hybrid_search.app.cli", *args], env=ENV, capture_output=True, text=True, timeout=timeout
    )


class Served:
    """A ``hybrid-search serve`` child process and requests to it."""

    def __init__(self, data: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data.parent / f"serve-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hybrid_search.app.cli", "serve", "--index", "sample", "--data-dir", str(data)]
            + ["--port", str(self.port), *extra],
            env=ENV,
            stderr=self.log_path.open("w"),
            text=True,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.get("/healthz", key=None)[0] == 200:
                    break
            except OSError:
                pass
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, "serve did not answer within 2 minutes"
            time.sleep(0.2)

    def request(self, method: str, path: str, body: object = None, key: str | None = None, raw: bytes | None = None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if key:
            req.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(req, timeout=300) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                return err.code, json.loads(raw or b"null")
            except ValueError:  # not the API's JSON: the server failed; show what it said
                raise AssertionError(f"{err.code} {raw[:200]!r}; server log:\n{self.log()}") from None

    def get(self, path: str, key: str | None = None):
        return self.request("GET", path, key=key)

    def post(self, path: str, body: object, key: str | None = None):
        return self.request("POST", path, body, key=key)

    def log(self) -> str:
        return self.log_path.read_text()[-4000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("workbench") / "data"
    done = cli("ingest", "sample", "--index", "sample", "--data-dir", str(data), "-q")
    assert done.returncode == 0, done.stderr
    return data


@pytest.fixture(scope="module")
def served(data, tmp_path_factory):
    profiles = tmp_path_factory.mktemp("profiles")
    (profiles / "lexical.toml").write_text('[search]\nmode = "bm25"\n')
    (profiles / "rrf.toml").write_text('[search]\nmode = "hybrid"\nfusion = "rrf"\n')
    server = Served(
        data, "--profile", f"lexical={profiles / 'lexical.toml'}", "--profile", f"rrf={profiles / 'rrf.toml'}"
    )
    yield server
    server.stop()


QUERIES = ["how do batteries make electricity", "baking bread at home", "why is the sky blue"]


@pytest.mark.parametrize("mode", ["bm25", "knn", "hybrid", "hybrid+rerank"])
def test_search_returns_what_the_cli_returns(served, data, mode):
    status, body = served.post("/search", {"query": QUERIES[0], "mode": mode, "top_k": 5})
    assert status == 200, body
    assert body["mode"] == mode and len(body["hits"]) == 5
    shown = cli(
        "search",
        QUERIES[0],
        "--index",
        "sample",
        "--data-dir",
        str(data),
        "--mode",
        mode,
        "--top-k",
        "5",
        "--json",
        "-q",
    )
    assert shown.returncode == 0, shown.stderr
    assert [h["doc_id"] for h in body["hits"]] == [h["doc_id"] for h in json.loads(shown.stdout)["hits"]]
    first = body["hits"][0]
    if mode.startswith("hybrid"):  # "why here": the hit's rank in each leg and what each leg added
        assert set(first["leg_ranks"]) <= {"bm25", "knn"} and first["leg_ranks"]
        assert set(first["contribution"]) == set(first["leg_ranks"])
        if mode == "hybrid":
            assert sum(first["contribution"].values()) == pytest.approx(first["score"], rel=1e-4)


def test_filters_pages_fusion_and_profiles(served):
    page1 = served.post("/search", {"query": QUERIES[1], "mode": "hybrid", "top_k": 3})[1]
    page2 = served.post("/search", {"query": QUERIES[1], "mode": "hybrid", "top_k": 3, "offset": 3})[1]
    assert [h["rank"] for h in page2["hits"]] == [4, 5, 6]
    assert not {h["doc_id"] for h in page1["hits"]} & {h["doc_id"] for h in page2["hits"]}
    rrf = served.post("/search", {"query": QUERIES[1], "mode": "hybrid", "fusion": {"method": "rrf", "k": 60}})[1]
    top = rrf["hits"][0]
    assert sum(top["contribution"].values()) == pytest.approx(top["score"], rel=1e-4)
    lexical = served.post("/search", {"query": QUERIES[1], "profile": "lexical"})[1]
    assert lexical["mode"] == "bm25" and lexical["profile"] == "lexical"
    assert served.get("/profiles")[1] == ["lexical", "rrf"]


def test_errors_are_json_with_the_cli_message_and_limits_hold(served):
    assert served.post("/search", {"query": "  "}) == (
        400,
        {"error": "the query is empty: give some words to search for"},
    )
    status, body = served.post("/search", {"query": "x", "index": "nope"})
    assert status == 404 and "hybrid-search ingest SOURCE --index nope" in body["error"]
    status, body = served.post("/search", {"query": "x", "top_k": 10**6})
    assert status == 400 and "max_top_k" in body["error"]
    status, body = served.post("/search", {"query": "x", "filters": {"nosuchfield": 1}})
    assert status == 400 and "nosuchfield" in body["error"]
    status, body = served.post("/search", {"query": "x", "colour": "red"})
    assert status == 400 and "colour" in body["error"]
    assert served.request("POST", "/search", raw=b"{not json")[0] == 400
    # a body declared over the limit is refused before it is read (the client sends only its start)
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
    conn.putrequest("POST", "/search")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(2 << 20))
    conn.endheaders(b'{"query": "' + b"a" * 1000)
    answer = conn.getresponse()
    assert answer.status == 413 and "bytes" in json.loads(answer.read())["error"]
    conn.close()
    assert served.post("/judgements", {"query": "q", "doc_id": "d01", "grade": 7})[0] == 400


def test_indexes_inspect_and_openapi(served):
    status, listed = served.get("/indexes")
    assert status == 200 and [i["name"] for i in listed] == ["sample"] and listed[0]["count"] == 40
    status, info = served.get("/indexes/sample")
    assert status == 200 and info["count"] == 40 and info["spec"]["dims"] == 384
    schema = served.get("/openapi.json")[1]
    assert schema["openapi"].startswith("3.") and {"/search", "/judgements", "/compare"} <= set(schema["paths"])


def test_concurrent_requests_are_served_alike(served):
    def one(i: int) -> list[str]:
        status, body = served.post("/search", {"query": QUERIES[i % 3], "mode": "hybrid", "top_k": 5})
        assert status == 200, body
        return [h["doc_id"] for h in body["hits"]]

    serial = [one(i) for i in range(3)]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(one, range(24)))
    assert all(parallel[i] == serial[i % 3] for i in range(24))


def test_judgements_feed_eval_tune_and_the_comparison(served, data):
    # judge the top hits of three queries through the API, as the page does (pooled: one query id per text)
    for query in QUERIES:
        hits = served.post("/search", {"query": query, "mode": "hybrid", "top_k": 3})[1]["hits"]
        for rank, hit in enumerate(hits):
            status, summary = served.post("/judgements", {"query": query, "doc_id": hit["doc_id"], "grade": 2 - rank})
            assert status == 200, summary
    judged = served.get("/judgements")[1]
    assert judged["judged_queries"] == 3 and judged["judgements"] == 9
    folder = Path(judged["folder"])
    qrels = (folder / "qrels" / "test.tsv").read_text().splitlines()
    assert qrels[0] == "query-id\tcorpus-id\tscore" and len(qrels) == 10
    # a grade of 0 is a judgement too; removing one (grade null) takes it out
    served.post("/judgements", {"query": QUERIES[0], "doc_id": "d40", "grade": 0})
    assert served.post("/judgements", {"query": QUERIES[0], "doc_id": "d40", "grade": None})[1]["judgements"] == 9
    again = served.post("/search", {"query": QUERIES[0], "mode": "hybrid", "top_k": 3})[1]["hits"]
    assert [h["grade"] for h in again] == [2, 1, 0]

    exported = served.get("/judgements/export")[1]
    assert exported["qrels/test.tsv"] == (folder / "qrels" / "test.tsv").read_text()
    status, merged = served.post(
        "/judgements/import", {"queries.jsonl": exported["queries.jsonl"], "qrels/test.tsv": exported["qrels/test.tsv"]}
    )
    assert status == 200 and merged["judgements"] == 9

    evaluated = cli(
        "eval",
        str(folder),
        "--index",
        "sample",
        "--data-dir",
        str(data),
        "--modes",
        "bm25,hybrid",
        "--json",
        str(data / "e.json"),
        "-q",
    )
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((data / "e.json").read_text())
    assert report["modes"]["hybrid"]["ndcg@10"] == pytest.approx(1.0)  # judged from hybrid's own top 3
    tuned = cli(
        "tune",
        str(folder),
        "--index",
        "sample",
        "--data-dir",
        str(data),
        "--budget",
        "4",
        "--folds",
        "3",
        "--no-analyzer-check",
        "--out",
        str(data / "p.toml"),
        "-q",
    )
    assert tuned.returncode == 0, tuned.stderr
    assert (data / "p.toml").exists()

    status, compared = served.post("/compare", {"profiles": ["lexical", "rrf"]})
    assert status == 200, compared
    assert compared["queries"] == 3 and [p["profile"] for p in compared["profiles"]] == ["lexical", "rrf"]
    assert 0 < compared["p_value"] <= 1 and all(0 <= p["ndcg@10"] <= 1 for p in compared["profiles"])


def test_the_api_key_guard(data):
    assert cli("serve", "--host", "0.0.0.0", "--data-dir", str(data), timeout=120).returncode == 2
    server = Served(data, "--api-key", "s3cret")
    try:
        assert server.get("/healthz")[0] == 200  # liveness stays open
        status, body = server.post("/search", {"query": "bread"})
        assert status == 401 and "API key" in body["error"]
        assert server.post("/search", {"query": "bread"}, key="wrong")[0] == 401
        assert server.post("/search", {"query": "bread", "mode": "bm25"}, key="s3cret")[0] == 200
        with urllib.request.urlopen(server.url + "/", timeout=60) as page:  # the page holds no data: it asks
            assert page.status == 200 and "workbench.js" in page.read().decode()  # for the key (JS) on a 401
    finally:
        server.stop()
