"""The ingest pipeline on the real model and the real embedded backend: counts, rejects, resume, count check.

Crashes and silent losses are faults that cannot be caused otherwise, so thin wrappers around the real
backend inject them; everything else runs for real.
"""

from __future__ import annotations

import json

import pytest
from conftest import logged_ingest

from hybrid_search.backends.embedded import EmbeddedBackend
from hybrid_search.config.errors import BadRecordError, ConfigError, IndexingError
from hybrid_search.ingest.pipeline import Checkpoint, run_ingest
from hybrid_search.ingest.sources import open_source


class Crash(Exception):
    pass


class CrashingBackend:
    """The real backend, dying on the n-th upsert."""

    def __init__(self, inner, crash_on: int) -> None:
        self.inner, self.crash_on, self.calls = inner, crash_on, 0

    def upsert(self, index, docs):
        self.calls += 1
        if self.calls == self.crash_on:
            raise Crash("power cut")
        return self.inner.upsert(index, docs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class LossyBackend(CrashingBackend):
    """The real backend, acknowledging one document it never stores."""

    def upsert(self, index, docs):
        return self.inner.upsert(index, docs[1:]).__class__(stored=tuple(d.doc_id for d in docs), failed=())


class CountingEncoder:
    """The real encoder, counting what it encodes."""

    def __init__(self, inner) -> None:
        self.inner, self.encoded = inner, 0

    def encode_documents(self, passages):
        self.encoded += len(passages)
        return self.inner.encode_documents(passages)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture()
def dirty(tmp_path):
    lines = [
        json.dumps({"_id": f"g{i}", "title": f"Title {i}", "text": f"good document number {i}"}) for i in range(50)
    ]
    lines[10] = '{"_id": "g10", "text": '  # malformed
    lines[20] = json.dumps({"_id": "g3", "text": "duplicate"})
    lines[30] = json.dumps({"_id": "g30", "text": ""})
    path = tmp_path / "dirty.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return open_source(path)


def _rejects(summary):
    return [json.loads(line) for line in open(summary.rejects_path, encoding="utf-8")]


def test_ingest_counts_rejects_and_swaps_alias(settings, encoder, dirty):
    with EmbeddedBackend(data_dir=settings.data_dir) as backend:
        summary = run_ingest(dirty, backend, encoder, settings, alias="dirty")
        assert (summary.read, summary.stored, summary.rejected) == (50, 47, 3)
        assert backend.count("dirty") == 47
        assert [(r["position"], r["id"], r["reason"].split(" (")[0]) for r in _rejects(summary)] == [
            (11, None, "malformed JSON line: Expecting value at character 24"),
            (21, "g3", "duplicate id"),
            (31, "g30", "empty text"),
        ]
        assert backend.search_bm25("dirty", "number 42", 1)[0].doc_id == "g42"
        assert not Checkpoint.path_for(settings.data_dir, "dirty").exists()


def test_strict_stops_at_the_first_bad_record(settings, encoder, dirty):
    strict = settings.model_copy(update={"ingest": settings.ingest.model_copy(update={"strict": True})})
    with EmbeddedBackend(data_dir=settings.data_dir) as backend, pytest.raises(BadRecordError, match="record 11"):
        run_ingest(dirty, backend, encoder, strict, alias="strict")


def test_resume_after_a_crash_stores_everything_once_without_reencoding(settings, encoder, dirty):
    counting = CountingEncoder(encoder)
    with EmbeddedBackend(data_dir=settings.data_dir) as real, pytest.raises(Crash):
        logged_ingest(dirty, CrashingBackend(real, crash_on=3), counting, settings, alias="resumed")
    ckpt = Checkpoint.load(Checkpoint.path_for(settings.data_dir, "resumed"))
    assert ckpt is not None and (ckpt.read, ckpt.rejected) == (35, 3)  # two batches of 16, three rejects
    with EmbeddedBackend(data_dir=settings.data_dir) as real:
        assert not real.index_exists("resumed")  # the alias is not switched to a half-built index
        failed = real.log_sink().latest("resumed-ingest")  # the failed run left its summary document
        assert failed["status"] == "failed" and "power cut" in failed["error"] and "physical" not in failed
        again = CountingEncoder(encoder)
        summary = logged_ingest(dirty, real, again, settings, alias="resumed", resume=True)
        assert summary.resumed and (summary.read, summary.stored, summary.rejected) == (50, 47, 3)
        assert again.encoded == 47 - 32  # only what was not stored before the crash
        # this run's time apart from the crashed run's, and the end-to-end rate over what this run did
        assert 0 < summary.run_seconds <= summary.seconds and summary.seconds > ckpt.elapsed
        assert summary.stage_rates()["end_to_end"] == pytest.approx(15 / summary.run_seconds, rel=0.02)
        assert real.count("resumed") == 47
        done = real.log_sink().latest("resumed-ingest")
        assert (done["status"], done["resumed"], done["stored"]) == ("completed", True, 47)
        assert real.log_sink().count("resumed-ingest") == 2
        assert [r["position"] for r in _rejects(summary)] == [11, 21, 31]  # none written twice


def test_a_build_commits_its_text_index_when_flushed_and_a_resume_replays_what_a_crash_left(settings, encoder, dirty):
    """Nobody searches a build before its alias swaps, so its text index is committed when the build is
    flushed (at the end, every checkpoint_seconds, or every 65,536 rows), not after every batch (a tantivy
    commit is ~20 ms: 19 of them made a 20k ingest 4x slower to index its text than one); rows a crash left
    uncommitted are SQLite's, and the resumed build replays their text, each document once."""
    with EmbeddedBackend(data_dir=settings.data_dir) as backend:
        run_ingest(dirty, backend, encoder, settings, alias="once")  # 47 documents in batches of 16
        built = backend._get("once")
        assert built.text_index.searcher().num_segments == 1 and built._meta("text_upto") == 47
    with EmbeddedBackend(data_dir=settings.data_dir) as real, pytest.raises(Crash):
        run_ingest(dirty, CrashingBackend(real, crash_on=3), encoder, settings, alias="crashed")
        # not reached: the build's two stored batches (below) are in SQLite, their text not yet committed
    ckpt = Checkpoint.load(Checkpoint.path_for(settings.data_dir, "crashed"))
    assert ckpt is not None and ckpt.physical
    with EmbeddedBackend(data_dir=settings.data_dir) as real:
        assert real._get(ckpt.physical).text_index.searcher().num_docs == 32  # replayed at open, as recovery does
        run_ingest(dirty, real, encoder, settings, alias="crashed", resume=True)
        hits = real.search_bm25("crashed", "good document number", 100)
        assert len(hits) == len({h.doc_id for h in hits}) == 47
        assert real._get("crashed").text_index.searcher().num_docs == 47


def test_resume_refuses_another_source(settings, encoder, dirty, tmp_path):
    with EmbeddedBackend(data_dir=settings.data_dir) as real, pytest.raises(Crash):
        run_ingest(dirty, CrashingBackend(real, crash_on=1), encoder, settings, alias="other")
    from conftest import SAMPLE

    with EmbeddedBackend(data_dir=settings.data_dir) as real, pytest.raises(ConfigError, match="same source"):
        run_ingest(open_source(SAMPLE), real, encoder, settings, alias="other", resume=True)


def test_count_check_catches_silent_loss(settings, encoder, dirty):
    with EmbeddedBackend(data_dir=settings.data_dir) as real:
        with pytest.raises(IndexingError, match="count check failed .* 'lossy' was not switched"):
            run_ingest(dirty, LossyBackend(real, crash_on=0), encoder, settings, alias="lossy")
        assert not real.index_exists("lossy")


def test_reingest_replaces_the_previous_build(settings, encoder):
    from conftest import SAMPLE

    with EmbeddedBackend(data_dir=settings.data_dir) as backend:
        first = run_ingest(open_source(SAMPLE), backend, encoder, settings, alias="sample")
        second = run_ingest(open_source(SAMPLE), backend, encoder, settings, alias="sample")
        assert first.physical != second.physical
        assert backend.stats("sample-previous").physical == first.physical  # kept for rollback
        third = run_ingest(open_source(SAMPLE), backend, encoder, settings, alias="sample")
        assert not backend.index_exists(first.physical)
        assert backend.stats("sample-previous").physical == second.physical != third.physical
        assert backend.count("sample") == 40
