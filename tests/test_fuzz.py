"""Property-based tests of every parser of user input (hypothesis).

The invariant everywhere: a result, or one ``HybridSearchError`` subclass with a message; never another
exception, and never a lost valid record. ``HYBRID_SEARCH_FUZZ_EXAMPLES`` raises the number of inputs per
property (default 150 here; the figures in the note used 2,000).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hybrid_search.app.cli import _parse_filters
from hybrid_search.backends.base import IndexedDocument, IndexSpec, check_index_name
from hybrid_search.backends.cluster import bm25_body
from hybrid_search.backends.embedded import EmbeddedBackend
from hybrid_search.config.errors import HybridSearchError
from hybrid_search.config.settings import load_settings
from hybrid_search.ingest.sources import FieldMap, open_source
from hybrid_search.ingest.validate import Document, Reject, validate
from hybrid_search.search.filters import clauses, to_query_dsl, to_sql

EXAMPLES = int(os.environ.get("HYBRID_SEARCH_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=60)
GARBAGE = st.binary(max_size=200)
ID = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)


def _outcome(source_path: Path, fields: FieldMap | None = None) -> list[Document | Reject]:
    """Every record's fate, or a ``HybridSearchError``; anything else fails the property."""
    try:
        source = open_source(source_path, fields)
        return list(validate(source.records(), source.fields))
    except HybridSearchError as exc:
        assert str(exc)
        return []


@st.composite
def dirty_jsonl(draw):
    """Valid records (unique ids) interleaved with garbage lines, a BOM or not, CRLF or not."""
    valid = draw(st.lists(st.tuples(ID, TEXT.filter(lambda t: t.strip())), max_size=15, unique_by=lambda r: r[0]))
    lines: list[bytes] = []
    for doc_id, text in valid:
        if draw(st.booleans()):
            lines.append(draw(GARBAGE).replace(b"\n", b" ").replace(b"\r", b" "))
        lines.append(json.dumps({"_id": doc_id, "text": text}, ensure_ascii=draw(st.booleans())).encode("utf-8"))
    if draw(st.booleans()):
        lines.append(draw(GARBAGE))  # a truncated or binary last line, maybe without a newline
    sep = b"\r\n" if draw(st.booleans()) else b"\n"
    body = (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + sep.join(lines)
    return body, valid


@FUZZ
@given(case=dirty_jsonl())
def test_jsonl_never_loses_a_valid_record(tmp_path_factory, case):
    body, valid = case
    path = tmp_path_factory.mktemp("fz") / "c.jsonl"
    path.write_bytes(body)
    out = _outcome(path)
    stored = {d.doc_id: d.text for d in out if isinstance(d, Document)}
    for doc_id, text in valid:
        # a garbage line that happens to be a record with the same id may come first: then it is a duplicate
        assert doc_id in stored or any(isinstance(r, Reject) and r.doc_id == doc_id for r in out)
        if doc_id in stored and sum(1 for d in out if getattr(d, "doc_id", None) == doc_id) == 1:
            assert stored[doc_id] == text.strip()
    positions = [r.position for r in out]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)


@FUZZ
@given(data=GARBAGE, suffix=st.sampled_from([".jsonl", ".csv", ".parquet", ".ndjson"]))
def test_random_bytes_in_any_file_type_are_results_or_one_error(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("fz") / f"c{suffix}"
    path.write_bytes(data)
    for item in _outcome(path):
        assert isinstance(item, (Document, Reject))


@FUZZ
@given(
    rows=st.lists(st.tuples(ID, TEXT, TEXT), max_size=12, unique_by=lambda r: r[0]),
    bom=st.booleans(),
    cut=st.integers(min_value=0, max_value=400),
)
def test_csv_with_quotes_newlines_and_truncation(tmp_path_factory, rows, bom, cut):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "title", "text"])
    writer.writerows(rows)
    data = ("\ufeff" if bom else "") + buf.getvalue()
    path = tmp_path_factory.mktemp("fz") / "c.csv"
    path.write_text(data, encoding="utf-8")
    full = {d.doc_id for d in _outcome(path) if isinstance(d, Document)}
    assert full == {i for i, title, text in rows if (title + text).strip()}
    path.write_text(data[: len(data) - cut], encoding="utf-8")  # truncated mid-row: results or rejects
    _outcome(path)


@FUZZ
@given(rows=st.lists(st.tuples(ID, st.one_of(TEXT, st.none(), st.integers())), max_size=12, unique_by=lambda r: r[0]))
def test_parquet_with_any_text_column(tmp_path_factory, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [t if t is None or isinstance(t, str) else str(t) for _, t in rows]
    path = tmp_path_factory.mktemp("fz") / "c.parquet"
    pq.write_table(pa.table({"id": [i for i, _ in rows], "text": pa.array(texts, pa.string())}), path)
    out = _outcome(path)
    assert {d.doc_id for d in out if isinstance(d, Document)} == {
        i for (i, _), t in zip(rows, texts, strict=True) if t and t.strip()
    }


@FUZZ
@given(corpus=GARBAGE, queries=GARBAGE, qrels=GARBAGE)
def test_a_beir_folder_of_garbage_is_results_or_one_error(tmp_path_factory, corpus, queries, qrels):
    from hybrid_search.ingest.sources import open_query_set

    root = tmp_path_factory.mktemp("beir")
    (root / "corpus.jsonl").write_bytes(corpus)
    (root / "queries.jsonl").write_bytes(queries)
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_bytes(qrels)
    _outcome(root)
    try:
        open_query_set(root)
    except HybridSearchError as exc:
        assert str(exc)


@FUZZ
@given(items=st.lists(TEXT, max_size=5))
def test_filter_flags_parse_or_say_why(items):
    try:
        parsed = _parse_filters(items)
    except HybridSearchError as exc:
        assert "--filter" in str(exc)
        return
    try:
        for translate in (to_query_dsl, to_sql):
            translate(parsed)
    except HybridSearchError as exc:
        assert str(exc)


SCALARS = st.one_of(TEXT, st.integers(), st.floats(allow_nan=False), st.booleans())


@FUZZ
@given(
    filters=st.dictionaries(
        st.one_of(TEXT, st.integers()),
        st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.none(), st.dictionaries(TEXT, TEXT)),
        max_size=4,
    )
)
def test_filter_dicts_translate_or_raise_one_error(filters):
    try:
        found = clauses(filters)
    except HybridSearchError as exc:
        assert "filter" in str(exc)
        return
    assert len(found) == len(filters)
    json.dumps(to_query_dsl(filters))
    sql, params = to_sql(filters)
    assert sql.count("?") == len(params)  # values are bound, never spliced into the SQL text


@FUZZ
@given(name=st.text(max_size=260))
def test_index_names_are_safe_or_refused(name):
    try:
        check_index_name(name)
    except HybridSearchError as exc:
        assert "index name" in str(exc)
        return
    assert "/" not in name and "\\" not in name and name not in (".", "..") and name == name.lower()
    assert not name.startswith(("-", "_", "+", ".")) and len(name.encode()) <= 255


@FUZZ
@given(text=TEXT, kind=st.sampled_from(["toml", "yaml"]))
@example(text="?", kind="yaml")  # a YAML mapping with a null key (found by this test)
@example(text="search:\n  1: x\n", kind="yaml")
def test_settings_files_load_or_say_why(tmp_path_factory, text, kind):
    path = tmp_path_factory.mktemp("cfg") / f"settings.{kind}"
    path.write_text(text, encoding="utf-8")
    try:
        load_settings(path)
    except HybridSearchError as exc:
        assert str(exc)


@FUZZ
@given(
    value=TEXT,
    name=st.sampled_from(
        [
            "HYBRID_SEARCH_SEARCH__RRF_K",
            "HYBRID_SEARCH_BACKEND__URLS",
            "HYBRID_SEARCH_BACKEND__KIND",
            "HYBRID_SEARCH_INGEST__BATCH_SIZE",
            "HYBRID_SEARCH_LOGS__QUERIES",
            "HYBRID_SEARCH_DATA_DIR",
        ]
    ),
)
def test_environment_values_load_or_say_why(monkeypatch, value, name):
    monkeypatch.setenv(name, value.replace("\x00", ""))
    try:
        load_settings()
    except HybridSearchError as exc:
        assert str(exc)


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory):
    backend = EmbeddedBackend(data_dir=tmp_path_factory.mktemp("q"))
    backend.ensure_index("q", IndexSpec(dims=4))
    rng = np.random.default_rng(0)
    docs = [
        IndexedDocument(f"d{i}", f"title {i}", t, rng.normal(size=4).astype(np.float32), {"lang": "en"})
        for i, t in enumerate(["the cat sat", "AND OR NOT", "field:value title:(x)", '"quoted" *wild?'])
    ]
    backend.upsert("q", docs)
    backend.refresh("q")
    yield backend
    backend.close()


QUERIES = st.one_of(
    TEXT,
    st.sampled_from(
        [
            "",
            " ",
            "AND",
            "title:cat",
            "a AND (b",
            '"unclosed',
            "*",
            "x~2^3",
            "\x00\x01\x7f",
            "\u200b",
            "NOT NOT",
            '+-&&||!(){}[]^"~*?:\\/',
        ]
    ),
    st.text(min_size=1, max_size=3).map(lambda s: s * 40_000),
)


@FUZZ
@given(query=QUERIES)
def test_queries_are_never_parsed_as_syntax(tiny_index, query):
    try:
        hits = tiny_index.search_bm25("q", query, 4, {"lang": "en"})
    except HybridSearchError as exc:
        assert str(exc)
        return
    assert all(h.doc_id.startswith("d") for h in hits)
    body = bm25_body(query, 4, None)
    assert "query_string" not in json.dumps(body) and json.loads(json.dumps(body))["size"] == 4
