"""An ingest's SQLite work runs a few statements per batch, never one per row.

Each SQLite statement releases the GIL, and a thread getting it back while another thread runs Python (an
ingest's reader beside its writer) waits up to a switch interval, 5 ms: one statement per row made the
writer of a 20,000-row ingest wait 100 s where 0.1 s of work was done. Counted here with SQLite's own
trace of the statements it runs, on real indexes and real records.
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np
from backend_contract import SPEC, unit

from hybrid_search.backends.base import IndexedDocument
from hybrid_search.backends.embedded import EmbeddedBackend
from hybrid_search.ingest.sources import open_source
from hybrid_search.ingest.validate import Document, Reject, SeenIds, validate


def _counting(db: sqlite3.Connection) -> list[str]:
    ran: list[str] = []
    db.set_trace_callback(ran.append)
    return ran


def test_a_batch_write_runs_a_few_statements_whatever_its_size(tmp_path):
    rng = np.random.default_rng(3)
    docs = [IndexedDocument(f"d{i}", "", f"text {i}", unit(*rng.normal(size=SPEC.dims)), {"n": i}) for i in range(1000)]
    with EmbeddedBackend(data_dir=tmp_path, exact_below=0) as b:
        b.ensure_index("many", SPEC)
        b.upsert("many", docs[:10])  # opens the index and its connection
        ran = _counting(b._open["many"].db)
        b.upsert("many", docs)  # 10 replaced, 990 new: tombstones and rows
        assert len(ran) < 40, f"{len(ran)} statements for 1,000 rows: {ran[:5]}"
        assert b.count("many") == 1000
        for i in (0, 9, 10, 500, 999):  # every row still under its own id, text and vector
            assert b.search_knn("many", docs[i].vector, 1, 50)[0].doc_id == f"d{i}"
            assert b.search_bm25("many", f"text {i}", 1)[0].doc_id == f"d{i}"


def test_the_duplicate_check_looks_ids_up_in_a_few_statements(tmp_path):
    """700 distinct ids, then 300 repeats; a record refused for another reason is not remembered, so its id
    is free for a later record."""
    path = tmp_path / "dups.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        fh.write(json.dumps({"_id": "late", "text": ""}) + "\n")  # refused: empty text
        for i in range(1000):
            fh.write(json.dumps({"_id": f"id{i % 700}", "text": f"t {i}"}) + "\n")
        fh.write(json.dumps({"_id": "late", "text": "now with text"}) + "\n")
        fh.write(json.dumps({"_id": "id5", "text": "again"}) + "\n")
    source = open_source(path)
    seen = SeenIds()
    ran = _counting(seen._db)
    results = list(validate(source.records(), source.fields, seen=seen))
    seen.close()
    assert len(ran) < 40, f"{len(ran)} statements for 1,003 records"
    docs = [r for r in results if isinstance(r, Document)]
    rejects = [r for r in results if isinstance(r, Reject)]
    assert [d.doc_id for d in docs] == [f"id{i}" for i in range(700)] + ["late"]
    assert rejects[0].doc_id == "late" and "empty text" in rejects[0].reason
    dups = rejects[1:]
    assert len(dups) == 301
    for r in dups:  # the first occurrence of id<k> is the record at position k + 2 (position 1 is "late")
        k = int(r.doc_id.removeprefix("id"))
        assert r.reason == f"duplicate id (first seen at position {k + 2})", r
    assert [r.position for r in results] == sorted(r.position for r in results)  # source order kept


def test_the_duplicate_check_reads_the_source_no_further_ahead_than_its_chunk(tmp_path):
    # a pipeline passes its batch size: read-ahead stays bounded and a read failure leaves whole batches behind
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"_id": f"id{i}", "text": f"t {i}"}) + "\n" for i in range(100)))
    source = open_source(path)
    read = 0

    def counted():
        nonlocal read
        for record in source.records():
            read += 1
            yield record

    yielded = 0
    for _ in validate(counted(), source.fields, chunk=16):
        yielded += 1
        assert read - yielded < 16, f"{read} read when {yielded} were yielded"
    assert yielded == 100 == read


def test_the_vector_check_takes_the_whole_float32_range_and_refuses_nan_and_infinity():
    from hybrid_search.ingest.validate import VectorCheck

    check = VectorCheck(4, unit=False)
    cases = {
        "huge": [3e38, 3e38, 0.0, 1.0],  # squares overflow float32
        "tiny": [1e-45, 0.0, 0.0, 0.0],  # the smallest subnormal: squares underflow float32
        "plain": [1.0, 2.0, 2.0, 0.0],
    }
    for name, value in cases.items():
        vector, why = check.reason(value, "v")
        assert why is None and vector is not None, (name, why)
        assert vector.dtype == np.float32 and vector.tolist() == np.float32(value).tolist()
    for value in ([np.nan, 1, 1, 1], [np.inf, 1, 1, 1], [np.inf, -np.inf, 1, 1], [1e38, np.nan, 1, 1]):
        assert check.reason(value, "v") == (None, "vector has NaN or infinite values"), value
    assert check.reason([0.0] * 4, "v")[1] == "vector is all zeros"
    unit = VectorCheck(4)
    assert unit.reason([0.6, 0.8, 0, 0], "v")[1] is None
    assert "norm 2e+38" in (unit.reason([2e38, 0, 0, 0], "v")[1] or "")
