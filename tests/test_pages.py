"""Results people expect from a search engine: pages further down one stable ranking (``offset`` /
``--from``, ``next_offset``) in every mode, and highlighted snippets of the terms that matched."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

from hybrid_search import ConfigError, HybridSearch, QueryError
from hybrid_search.app.highlight import _Terms, highlight

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def hs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pages")
    with HybridSearch(index="p", data_dir=root) as client:
        client.ingest("sample")
        yield client


@pytest.mark.parametrize("mode", ["bm25", "knn", "hybrid", "hybrid+rerank"])
def test_pages_tile_the_ranking(hs, mode):
    whole = hs.search("how do batteries make electricity", mode=mode, top_k=12)
    pages, offset = [], 0
    while offset is not None and offset < len(whole.hits):
        page = hs.search("how do batteries make electricity", mode=mode, top_k=4, offset=offset)
        assert page.offset == offset
        pages.append(page)
        offset = page.next_offset
    assert [h.doc_id for p in pages for h in p.hits] == whole.doc_ids
    assert [h.rank for p in pages for h in p.hits] == list(range(1, len(whole.hits) + 1))  # the whole's ranks
    if mode != "bm25":  # every document is a neighbour: 40 of them
        last = hs.search("how do batteries make electricity", mode=mode, top_k=10, offset=35)
        assert len(last.hits) == 5 and last.next_offset is None  # the candidates ran out on this page


def test_bad_pages_are_refused(hs):
    with pytest.raises(ConfigError, match="offset must be a whole number"):
        hs.search("tea", offset=-1)
    with pytest.raises(QueryError, match="pages past search.max_top_k"):
        hs.search("tea", top_k=10, offset=hs.settings.search.max_top_k)


def test_highlights_mark_the_matching_terms(hs):
    result = hs.search("green tea temperature", mode="bm25", top_k=3, highlight=True)
    top = result.hits[0]
    assert top.highlight is not None and "<em>" in top.highlight
    marked = {w.lower() for w in __import__("re").findall(r"<em>(.*?)</em>", top.highlight)}
    assert marked and marked <= {"green", "tea", "temperature"}
    assert top.highlight.replace("<em>", "").replace("</em>", "").strip("…") in top.text
    plain = hs.search("green tea temperature", mode="bm25", top_k=3)
    assert plain.doc_ids == result.doc_ids and plain.hits[0].highlight is None  # order untouched, off by default


def test_highlights_follow_the_analyzer():
    assert highlight("A naïve résumé.", _Terms("folding", "naive resume")) == "A <em>naïve</em> <em>résumé</em>."
    assert highlight("A naïve résumé.", _Terms("standard", "naive resume")) is None
    assert highlight("She was running late", _Terms("english", "run")) == "She was <em>running</em> late"
    assert highlight("私は緑茶が好きです", _Terms("cjk", "緑茶")) == "私は<em>緑茶</em>が好きです"
    long = "filler " * 100 + "the battery stores charge " + "filler " * 100
    snippet = highlight(long, _Terms("standard", "battery"))
    assert snippet is not None and snippet.startswith("…") and snippet.endswith("…") and len(snippet) < 260
    assert "<em>battery</em>" in snippet


def test_the_cli_pages_and_highlights(hs):
    common = ["--index", "p", "--data-dir", str(hs.settings.data_dir), "--mode", "bm25", "--top-k", "2"]

    def run(*extra: str) -> dict:
        out = subprocess.run(
            [sys.executable, "-m", "hybrid_search.app.cli", "search", "green tea", *common, *extra, "--json"],
            capture_output=True,
            text=True,
            env=ENV,
            cwd=REPO,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    first, second = run(), run("--from", "2", "--highlight")  # "green tea" matches three documents
    assert first["next_offset"] == 2 and second["offset"] == 2 and second["next_offset"] is None
    assert [h["doc_id"] for h in first["hits"] + second["hits"]] == hs.search("green tea", mode="bm25", top_k=6).doc_ids
    assert len(second["hits"]) == 1 and "<em>green</em>" in second["hits"][0]["highlight"]
    assert first["hits"][0]["highlight"] is None  # only when asked for
