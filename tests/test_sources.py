"""Sources and the validation stage: every bad record becomes a reject with its position and reason."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hybrid_search.config.errors import BadRecordError, SourceError
from hybrid_search.ingest.sources import (
    BeirFolder,
    CsvFile,
    FieldMap,
    HubBeir,
    JsonlFile,
    ParquetFile,
    open_query_set,
    open_source,
)
from hybrid_search.ingest.validate import Document, Reject, validate

BAD_JSONL = b"\n".join(
    [
        b'{"_id": "1", "title": "T", "text": "first good"}',
        b'{"title": "no id", "text": "x"}',
        b'{"_id": "3", "title": "", "text": "   "}',
        b'{"_id": "4", "text": "bad bytes \xff\xfe here"}',
        b'{"_id": "1", "text": "duplicate of the first"}',
        b'{"_id": "6", "text": "unterminated',
        b'["not", "an", "object"]',
        b"",
        b'{"id": 9, "text": "numeric id under id"}',
    ]
)


def _split(items):
    docs = [i for i in items if isinstance(i, Document)]
    rejects = [i for i in items if isinstance(i, Reject)]
    return docs, rejects


def test_jsonl_bad_records_each_have_position_and_reason(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(BAD_JSONL)
    src = open_source(path)
    assert isinstance(src, JsonlFile)
    docs, rejects = _split(list(validate(src.records(), src.fields)))
    assert [d.doc_id for d in docs] == ["1", "9"]
    reasons = {r.position: r.reason for r in rejects}
    assert reasons[2].startswith("missing id")
    assert reasons[3].startswith("empty text")
    assert reasons[4].startswith("undecodable bytes in text")
    assert reasons[5] == "duplicate id (first seen at position 1)"
    assert reasons[6].startswith("malformed JSON line")
    assert reasons[7].startswith("malformed line")
    assert len(docs) + len(rejects) == 8  # the blank line is not a record


def test_strict_makes_the_first_reject_fatal(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(BAD_JSONL)
    src = open_source(path)
    with pytest.raises(BadRecordError, match="record 2 .*missing id.*--strict"):
        list(validate(src.records(), src.fields, strict=True))


def test_csv_with_fields_and_metadata(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(
        b"doc,headline,body,lang\n"
        b'a,Hello,"multi\nline body",en\n'
        b"b,Too,many,fields,here\n"
        b"c,Bad,\xff\xfe,de\n"
        b"d,,plain,fr\n"
    )
    fields = FieldMap(id_fields=("doc",), title_field="headline", text_field="body", metadata_fields=("lang",))
    src = CsvFile(path, fields)
    docs, rejects = _split(list(validate(src.records(), src.fields)))
    assert [(d.doc_id, d.text, dict(d.metadata)) for d in docs] == [
        ("a", "multi\nline body", {"lang": "en"}),
        ("d", "plain", {"lang": "fr"}),
    ]
    assert [(r.position, r.reason.split(":")[0]) for r in rejects] == [
        (2, "malformed row"),
        (3, "undecodable bytes in body (not UTF-8)"),
    ]


def test_parquet_with_binary_column(tmp_path):
    path = tmp_path / "c.parquet"
    table = pa.table(
        {"id": ["p1", "p2", None], "title": ["A", "B", "C"], "text": [b"fine text", b"\xff broken", b"orphan"]}
    )
    pq.write_table(table, path)
    src = open_source(path)
    assert isinstance(src, ParquetFile)
    docs, rejects = _split(list(validate(src.records(), src.fields)))
    assert [d.doc_id for d in docs] == ["p1"] and docs[0].passage == "A fine text"
    assert [(r.position, r.reason[:12]) for r in rejects] == [(2, "undecodable "), (3, "missing id (")]


def test_beir_folder_corpus_queries_qrels():
    from conftest import SAMPLE

    src = open_source(SAMPLE)
    assert isinstance(src, BeirFolder)
    assert sum(1 for _ in src.records()) == 40
    qs = open_query_set(SAMPLE)
    assert qs.queries["q01"].startswith("how do I keep")
    assert qs.qrels["q13"] == {"d32": 2, "d31": 1}
    with pytest.raises(SourceError, match="choose --split from \\['test'\\]"):
        open_query_set(SAMPLE, "dev")


def test_hub_source_streams_through_datasets(tmp_path):
    """The hub path runs ``datasets`` for real, over local JSON files standing in for the hub repository."""
    from datasets import load_dataset

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"_id": f"h{i}", "title": "", "text": f"q {i}"}) for i in range(5)))
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "x", "text": "query"}))
    (tmp_path / "qrels.jsonl").write_text(json.dumps({"query-id": "x", "corpus-id": "h1", "score": 1}))
    calls = []

    def local_loader(repo, config=None, split=None, streaming=False):
        calls.append((repo, config, split, streaming))
        name = "qrels" if repo.endswith("-qrels") else config
        return load_dataset(
            "json", data_files={split: str(tmp_path / f"{name}.jsonl")}, split=split, streaming=streaming
        )

    src = HubBeir("BeIR/quora", loader=local_loader)
    docs, _ = _split(list(validate(src.records(), src.fields)))
    assert [d.doc_id for d in docs] == [f"h{i}" for i in range(5)]
    assert calls[0] == ("BeIR/quora", "corpus", "corpus", True)  # the corpus is streamed
    qs = src.query_set("test")
    assert qs.queries == {"x": "query"} and qs.qrels == {"x": {"h1": 1}}


def test_hub_failure_is_a_clear_error():
    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    with pytest.raises(SourceError, match="could not load BeIR/nq .*pass its path instead"):
        next(HubBeir("BeIR/nq", loader=offline).records())


def test_unknown_sources_say_what_to_give(tmp_path):
    with pytest.raises(SourceError, match="quora or nq"):
        open_source(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(SourceError, match=r"\.jsonl, \.json, \.csv or \.parquet"):
        open_source(tmp_path / "x.txt")
    assert isinstance(open_source("quora"), HubBeir)


def test_the_duplicate_check_keeps_no_python_object_per_id(tmp_path):
    """100k ids: the Python heap stays flat (a dict would grow by several MB); duplicates still name the
    position each id was first seen at."""
    import tracemalloc

    from hybrid_search.ingest.validate import Reject, validate

    n = 100_000
    path = tmp_path / "many.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(f'{{"_id": "id-{i:07d}", "text": "t"}}\n')
        fh.write('{"_id": "id-0000042", "text": "again"}\n')
    source = open_source(path)
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    peak_growth, rejects, count = 0, [], 0
    for item in validate(source.records(), source.fields):
        count += 1
        if isinstance(item, Reject):
            rejects.append(item)
        if count % 10_000 == 0:
            peak_growth = max(peak_growth, tracemalloc.get_traced_memory()[0] - baseline)
    tracemalloc.stop()
    assert count == n + 1 and [(r.position, r.doc_id) for r in rejects] == [(n + 1, "id-0000042")]
    assert "first seen at position 43" in rejects[0].reason
    assert peak_growth < 2 * 1024 * 1024, peak_growth


def test_a_byte_order_mark_costs_no_record(tmp_path):
    """Found by the fuzz tests: a BOM made the first JSONL record malformed and CSV's id column unknown."""
    from hybrid_search.ingest.validate import Document, validate

    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(b'\xef\xbb\xbf{"_id": "first", "text": "a"}\n{"_id": "second", "text": "b"}\n')
    csv_path = tmp_path / "bom.csv"
    csv_path.write_bytes(b"\xef\xbb\xbfid,text\nfirst,a\nsecond,b\n")
    for path in (jsonl, csv_path):
        source = open_source(path)
        docs = [d.doc_id for d in validate(source.records(), source.fields) if isinstance(d, Document)]
        assert docs == ["first", "second"], path


def test_broken_queries_or_qrels_stop_evaluation_with_the_line(tmp_path):
    """Found by the fuzz tests: undecodable qrels escaped as UnicodeDecodeError; malformed lines were skipped
    silently, which changes every metric."""
    from hybrid_search.ingest.sources import open_query_set

    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n')
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n')
    for qrels, line in (
        (b"query-id\tcorpus-id\tscore\nq1\td1\t1\n\x80\x81\n", 3),
        (b"q1\td1\n", 1),
        (b"q1\td1\tmany\n", 1),
    ):
        (root / "qrels" / "test.tsv").write_bytes(qrels)
        with pytest.raises(SourceError, match=f"test.tsv line {line} is not a qrels line"):
            open_query_set(root)
    (root / "qrels" / "test.tsv").write_bytes(b"\xef\xbb\xbfquery-id\tcorpus-id\tscore\nq1\td1\t1\n")
    assert open_query_set(root).qrels == {"q1": {"d1": 1}}
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n{"_id": "q2", "text": \n')
    with pytest.raises(SourceError, match="queries.jsonl line 2"):
        open_query_set(root)


# --- .json: one array of objects, streamed ---------------------------------------------------------------
def _read(path):
    src = open_source(path)
    return list(validate(src.records(), src.fields))


def test_a_json_array_is_read_element_by_element(tmp_path):
    long_text = "word " * 180_000  # 900 kB after 500 kB: the element runs over the 1 MiB read block
    rows = [{"_id": "a", "text": "x " * 250_000}, {"_id": "b", "text": long_text}, 7, {"_id": "c", "text": "last"}]
    path = tmp_path / "docs.json"
    path.write_text("\ufeff[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n", encoding="utf-8")
    docs, rejects = _split(_read(path))
    assert [d.doc_id for d in docs] == ["a", "b", "c"] and docs[1].text == long_text.strip()
    assert [(r.position, "expected a JSON object" in r.reason) for r in rejects] == [(3, True)]


def test_json_lines_named_json_and_a_broken_array(tmp_path):
    lines = tmp_path / "lines.json"
    lines.write_text('{"_id": "1", "text": "one"}\n{"_id": "2", "text": "two"}\n')
    assert [d.doc_id for d in _split(_read(lines))[0]] == ["1", "2"]
    broken = tmp_path / "broken.json"
    broken.write_text('[{"_id": "1", "text": "one"}, {"_id": "2", "text": "tw}, {"_id": "3"}]')
    docs, rejects = _split(_read(broken))
    assert [d.doc_id for d in docs] == ["1"]
    assert len(rejects) == 1 and rejects[0].position == 2 and "the rest of the file was not read" in rejects[0].reason
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    assert list(open_source(empty).records()) == []
    scalar = tmp_path / "scalar.json"
    scalar.write_text('"just a string"')
    assert "expected an array of objects" in (next(iter(open_source(scalar).records())).error or "")


def test_a_validation_started_in_one_thread_closes_its_id_store_in_another():
    """An ingest's reader thread runs ``validate``; when the ingest stops early (a failed write, a full disk,
    Ctrl-C) the generator is closed from the main thread. Its temporary id store (a SQLite database on disk)
    must close there too, not raise and stay open until garbage collection."""
    import threading

    from hybrid_search.ingest.sources import RawRecord

    records = (RawRecord(i, {"_id": f"d{i}", "text": f"text {i}"}) for i in range(1, 1_000))
    checked = validate(records, FieldMap(), chunk=10)
    first: list[object] = []
    reader = threading.Thread(target=lambda: first.append(next(checked)))
    reader.start()
    reader.join()
    assert isinstance(first[0], Document)
    checked.close()  # raised sqlite3.ProgrammingError (used from another thread) before the fix
    with pytest.raises(StopIteration):
        next(checked)
