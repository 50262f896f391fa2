"""No user mistake may silently destroy a serving index.

A re-ingest whose records are all rejected (a typo in ``--id-field``), an empty file, or a much smaller
corpus must leave the alias serving what it served; the previous build is kept for ``rollback``; failed
builds leave no half-built index or checkpoint behind. Real model, real embedded backend, real files.
"""

from __future__ import annotations

import json
import logging

import pytest
from conftest import SAMPLE

from hybrid_search.backends.embedded import EmbeddedBackend
from hybrid_search.config.errors import BadRecordError, IndexingError, IndexNotFound
from hybrid_search.ingest.pipeline import Checkpoint, run_ingest
from hybrid_search.ingest.sources import FieldMap, open_source


def _jsonl(tmp_path, name, n, start=0):
    path = tmp_path / name
    path.write_text(
        "".join(json.dumps({"_id": f"x{i}", "text": f"short document {i}"}) + "\n" for i in range(start, start + n)),
        encoding="utf-8",
    )
    return path


def _physical_indexes(backend):
    root = backend.data_dir / "indexes"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def _with_ingest(settings, **changes):
    return settings.model_copy(update={"ingest": settings.ingest.model_copy(update=changes)})


@pytest.fixture()
def serving(settings, encoder):
    """An alias serving the 40-document sample."""
    backend = EmbeddedBackend(data_dir=settings.data_dir)
    run_ingest(open_source(SAMPLE), backend, encoder, settings, alias="live")
    assert backend.count("live") == 40
    yield backend
    backend.close()


def test_all_records_rejected_keeps_the_serving_index(settings, encoder, serving):
    before = _physical_indexes(serving)
    typo = open_source(
        SAMPLE / "corpus.jsonl", FieldMap(id_fields=("doc_id",))
    )  # a typo in --id-field: every record lacks it
    with pytest.raises(IndexingError, match=r"nothing was stored.*40 read, 40 rejected.*'live' is unchanged"):
        run_ingest(typo, serving, encoder, settings, alias="live")
    assert serving.count("live") == 40
    assert _physical_indexes(serving) == before  # the empty build was removed
    assert not Checkpoint.path_for(settings.data_dir, "live").exists()


def test_an_empty_file_keeps_the_serving_index(settings, encoder, serving, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(
        IndexingError, match=r"nothing was stored: 0 read, jsonl:.*empty.jsonl holds no records"
    ) as caught:
        run_ingest(open_source(empty), serving, encoder, settings, alias="live")
    assert "rejects" not in str(caught.value)  # no pointer to an empty rejects file
    assert serving.count("live") == 40


def test_an_ingest_that_stores_nothing_fails_without_an_index_too(settings, encoder, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with EmbeddedBackend(data_dir=settings.data_dir) as backend:
        with pytest.raises(IndexingError, match="nothing was stored"):
            run_ingest(open_source(empty), backend, encoder, settings, alias="fresh")
        assert not backend.index_exists("fresh") and _physical_indexes(backend) == []


def test_a_much_smaller_build_is_refused_unless_allowed(settings, encoder, serving, tmp_path):
    small = open_source(_jsonl(tmp_path, "small.jsonl", 5))
    with pytest.raises(IndexingError, match=r"would shrink 'live' from 40 to 5 documents.*--allow-shrink"):
        run_ingest(small, serving, encoder, settings, alias="live")
    assert serving.count("live") == 40
    # the refused build is complete and kept: --resume with --allow-shrink serves it without re-encoding
    summary = run_ingest(small, serving, encoder, _with_ingest(settings, allow_shrink=True), alias="live", resume=True)
    assert summary.resumed and summary.stored == 5 and serving.count("live") == 5


def test_a_build_within_the_threshold_replaces_the_alias(settings, encoder, serving, tmp_path):
    near = open_source(_jsonl(tmp_path, "near.jsonl", 30))  # 30 of 40 is above the default 0.5
    run_ingest(near, serving, encoder, settings, alias="live")
    assert serving.count("live") == 30


def test_the_previous_build_is_kept_until_the_next_and_rollback_restores_it(settings, encoder, serving, tmp_path):
    first = serving.stats("live").physical
    second = run_ingest(open_source(_jsonl(tmp_path, "b.jsonl", 35)), serving, encoder, settings, alias="live")
    assert serving.count("live") == 35 and serving.index_exists(first)
    assert serving.rollback("live") == (first, second.physical)
    assert serving.count("live") == 40 and serving.count("live-previous") == 35
    assert serving.rollback("live") == (second.physical, first)  # rolling back twice undoes it
    third = run_ingest(open_source(_jsonl(tmp_path, "c.jsonl", 36)), serving, encoder, settings, alias="live")
    assert serving.count("live") == 36
    assert not serving.index_exists(first)  # only one previous build is kept
    assert serving.stats("live-previous").physical == second.physical != third.physical


def test_rollback_without_a_previous_build_says_so(settings):
    with EmbeddedBackend(data_dir=settings.data_dir) as backend:
        with pytest.raises(IndexNotFound, match="no previous build of 'nothing'"):
            backend.rollback("nothing")


def test_strict_failure_cleans_up_its_half_built_index(settings, encoder, serving, tmp_path):
    lines = [json.dumps({"_id": f"s{i}", "text": f"text {i}"}) for i in range(40)]
    lines[25] = json.dumps({"_id": "s25", "text": ""})
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = _physical_indexes(serving)
    with pytest.raises(BadRecordError):
        run_ingest(open_source(bad), serving, encoder, _with_ingest(settings, strict=True), alias="live")
    assert _physical_indexes(serving) == before
    assert not Checkpoint.path_for(settings.data_dir, "live").exists()
    assert serving.count("live") == 40


def test_a_fresh_ingest_says_it_discards_an_interrupted_build(settings, encoder, serving, tmp_path, caplog):
    ckpt_path = Checkpoint.path_for(settings.data_dir, "live")
    physical = serving.begin_build("live", serving.index_spec("live"))
    Checkpoint(alias="live", physical=physical, source="old.jsonl", model="m", read=12).save(ckpt_path)
    with caplog.at_level(logging.WARNING):
        run_ingest(open_source(_jsonl(tmp_path, "n.jsonl", 39)), serving, encoder, settings, alias="live")
    assert any(
        "discarding the interrupted ingest of 'live'" in r.getMessage() and "12 records" in r.getMessage()
        for r in caplog.records
    )
    assert not serving.index_exists(physical)
