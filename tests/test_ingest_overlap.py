"""Overlapped ingest stages and precomputed vectors, on the real model and the real embedded backend.

The stages (read + validate, encode, write) run concurrently with bounded queues: the reader never runs more
than a few batches ahead of the writer, a failure in any stage stops the others and is raised as it was, and a
resume after such a failure finishes with every document. Precomputed vectors are checked and stored as
given; bad ones are rejects with their ids and reasons. Faults are injected by thin wrappers around the real
encoder, backend and source.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from hybrid_search.backends.embedded import EmbeddedBackend
from hybrid_search.config.errors import ConfigError
from hybrid_search.ingest.pipeline import Checkpoint, run_ingest
from hybrid_search.ingest.sources import FieldMap, JsonlFile, open_source


def _corpus(path, n: int):
    path.write_text(
        "".join(
            json.dumps({"_id": f"d{i}", "text": f"document number {i} about topic {i % 7}"}) + "\n" for i in range(n)
        )
    )
    return path


def _ingest_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("ingest-")]


class CountingSource:
    """A real JSONL source that counts the records handed out so far."""

    def __init__(self, inner) -> None:
        self.inner, self.yielded = inner, 0
        self.name, self.fields = inner.name, inner.fields

    def count_hint(self):
        return self.inner.count_hint()

    def records(self):
        self.yielded = 0  # per pass: the field check reads the first records once before ingest starts
        for record in self.inner.records():
            self.yielded += 1
            yield record


class SlowBackend:
    """The real backend, each upsert taking a while longer; records how far the reader had got."""

    def __init__(self, inner, source: CountingSource, delay: float) -> None:
        self.inner, self.source, self.delay = inner, source, delay
        self.ahead: list[int] = []
        self.written = 0

    def upsert(self, index, docs):
        time.sleep(self.delay)
        self.ahead.append(self.source.yielded - self.written)
        self.written += len(docs)
        return self.inner.upsert(index, docs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_the_reader_stays_a_bounded_number_of_batches_ahead(tmp_path, memo_encoder, settings):
    batch = settings.ingest.batch_size
    source = CountingSource(JsonlFile(_corpus(tmp_path / "c.jsonl", 40 * batch)))
    with EmbeddedBackend(data_dir=settings.data_dir) as real:
        backend = SlowBackend(real, source, delay=0.05)
        summary = run_ingest(source, backend, memo_encoder, settings, alias="bounded")
        assert summary.stored == 40 * batch == real.count("bounded")
    # at most: one batch being written, two queued for writing, one being encoded, two queued for encoding,
    # one being read (without bounds the reader would have finished during the first slow write)
    assert max(backend.ahead) <= 7 * batch
    assert max(backend.ahead) > batch  # and it does run ahead: the stages overlap
    assert not _ingest_threads()


class FailsOnCall:
    """A real component (encoder, backend) whose ``method`` raises ``error`` on its ``n``-th call."""

    def __init__(self, inner, method: str, n: int, error: BaseException) -> None:
        self.inner, self.method, self.n, self.error, self.calls = inner, method, n, error, 0

    def __getattr__(self, name):
        real = getattr(self.inner, name)
        if name != self.method:
            return real

        def failing(*args, **kwargs):
            self.calls += 1
            if self.calls == self.n:
                raise self.error
            return real(*args, **kwargs)

        return failing


class FailingSource(CountingSource):
    def __init__(self, inner, fail_after: int) -> None:
        super().__init__(inner)
        self.fail_after, self.passes = fail_after, 0

    def records(self):
        self.passes += 1  # the first pass is the field check; the ingest's own pass fails part way
        for record in super().records():
            if self.passes > 1 and self.yielded > self.fail_after:
                raise OSError("disk read error (injected)")
            yield record


@pytest.mark.parametrize("stage", ["read", "encode", "write"])
def test_a_failure_in_any_stage_stops_the_others_and_a_resume_finishes(tmp_path, memo_encoder, settings, stage):
    batch = settings.ingest.batch_size
    path = _corpus(tmp_path / "c.jsonl", 12 * batch)
    expected = {"read": OSError, "encode": RuntimeError, "write": ConnectionError}[stage]
    with EmbeddedBackend(data_dir=settings.data_dir) as real:
        source = FailingSource(JsonlFile(path), 5 * batch + 3) if stage == "read" else JsonlFile(path)
        oom = RuntimeError("CUDA out of memory (injected)")
        reset = ConnectionError("connection reset (injected)")
        encoder = FailsOnCall(memo_encoder, "encode_documents", 4, oom) if stage == "encode" else memo_encoder
        backend = FailsOnCall(real, "upsert", 4, reset) if stage == "write" else real
        with pytest.raises(expected, match="injected"):
            run_ingest(source, backend, encoder, settings, alias="faulty")
        assert not _ingest_threads()  # every stage stopped
        ckpt = Checkpoint.load(Checkpoint.path_for(settings.data_dir, "faulty"))
        assert ckpt is not None and ckpt.position % batch == 0 and 0 < ckpt.position < 12 * batch
        assert not real.index_exists("faulty")  # nothing was swapped in
        summary = run_ingest(JsonlFile(path), real, memo_encoder, settings, alias="faulty", resume=True)
        assert summary.resumed and summary.stored == 12 * batch == real.count("faulty")


def _vector_corpus(path, n: int, dims: int):
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((n, dims))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"_id": f"p{i}", "text": f"passage {i} on topic {i % 5}", "emb": vectors[i].tolist()}))
            fh.write("\n")
    return path


class ThreadsSeen(FailsOnCall):
    """The real backend, noting on each upsert which ingest threads are alive (and failing on one call)."""

    def __init__(self, inner, n: int) -> None:
        super().__init__(inner, "upsert", n, ConnectionError("connection reset (injected)"))
        self.seen: list[list[str]] = []

    def __getattr__(self, name):
        if name == "upsert":
            self.seen.append(_ingest_threads())
        return super().__getattr__(name)


@pytest.mark.parametrize("stage", ["read", "write"])
def test_with_every_vector_given_the_stages_run_in_one_thread_and_a_failure_resumes(
    tmp_path, memo_encoder, settings, stage
):
    """Nothing to encode: read, validate and write run one after another in the caller's thread (threads only
    traded the GIL); a failure still leaves whole-batch checkpoints, and a resume stores every document."""
    batch = settings.ingest.batch_size
    path = _vector_corpus(tmp_path / "v.jsonl", 12 * batch, memo_encoder.dims)
    fields = FieldMap(vector_field="emb")
    with EmbeddedBackend(data_dir=settings.data_dir) as real:
        inner = JsonlFile(path, fields)
        source = FailingSource(inner, 5 * batch + 3) if stage == "read" else inner
        backend = ThreadsSeen(real, 4 if stage == "write" else 0)
        with pytest.raises(OSError if stage == "read" else ConnectionError, match="injected"):
            run_ingest(source, backend, memo_encoder, settings, alias="given")
        assert backend.seen and all(alive == [] for alive in backend.seen), backend.seen
        ckpt = Checkpoint.load(Checkpoint.path_for(settings.data_dir, "given"))
        assert ckpt is not None and ckpt.position % batch == 0 and 0 < ckpt.position < 12 * batch
        assert not real.index_exists("given")
        summary = run_ingest(JsonlFile(path, fields), real, memo_encoder, settings, alias="given", resume=True)
        assert summary.resumed and summary.stored == 12 * batch == real.count("given")
        assert (summary.precomputed, summary.encoded) == (12 * batch - ckpt.position, 0)


@pytest.mark.parametrize("where", ["exact", "graph", "elasticsearch"])
def test_given_vectors_overlap_the_stages_only_where_a_write_waits_outside_python(
    tmp_path, memo_encoder, settings, where, request
):
    """Inline pays only where a write is Python throughout (an exact embedded index); a bulk request to a
    cluster, or HNSW insertions, release the GIL, so the reader works meanwhile on its own thread."""
    from hybrid_search.backends.elasticsearch import ElasticsearchBackend
    from hybrid_search.config.settings import BackendSettings

    batch = settings.ingest.batch_size
    n = 4 * batch
    path = _vector_corpus(tmp_path / "v.jsonl", n, memo_encoder.dims)
    if where == "elasticsearch":
        url = request.getfixturevalue("noida_url")
        real = ElasticsearchBackend(BackendSettings(kind="elasticsearch", urls=(url,)))
    else:
        real = EmbeddedBackend(data_dir=settings.data_dir, exact_below=n + 1 if where == "exact" else n // 2)
    with real:
        backend = ThreadsSeen(real, 0)  # never fails
        source = JsonlFile(path, FieldMap(vector_field="emb"))
        summary = run_ingest(source, backend, memo_encoder, settings, alias=f"given-{where}")
        assert summary.stored == n == real.count(f"given-{where}")
    threaded = [alive for alive in backend.seen if alive]
    assert (threaded != []) is (where != "exact"), backend.seen


# --- precomputed vectors --------------------------------------------------------------------------------------


def test_precomputed_vectors_are_stored_as_given_and_bad_ones_rejected(tmp_path, encoder, settings):
    texts = [f"passage {i} about batteries and electricity" for i in range(20)]
    vectors = encoder.encode_documents(texts).vectors
    rows = [{"_id": f"v{i}", "text": t, "emb": vectors[i].tolist()} for i, t in enumerate(texts)]
    bad = {
        "short": {"_id": "short", "text": "x y", "emb": [0.1] * 10},
        "nan": {"_id": "nan", "text": "x y", "emb": [float("nan")] + [0.0] * 383},
        "long": {"_id": "long", "text": "x y", "emb": (vectors[0] * 3).tolist()},
        "missing": {"_id": "missing", "text": "x y"},
        "words": {"_id": "words", "text": "x y", "emb": "not a vector"},
        "zeros": {"_id": "zeros", "text": "x y", "emb": [0.0] * 384},
    }
    path = tmp_path / "pre.jsonl"
    with open(path, "w") as fh:
        for row in [*rows[:10], *bad.values(), *rows[10:]]:
            fh.write(json.dumps(row, allow_nan=True) + "\n")

    class NoEncoding:
        """The real encoder (for its dimension and pooling), which must not be asked to encode."""

        def encode_documents(self, passages):
            raise AssertionError("precomputed vectors were encoded again")

        def __getattr__(self, name):
            return getattr(encoder, name)

    source = open_source(path, FieldMap(vector_field="emb"))
    with EmbeddedBackend(data_dir=settings.data_dir) as backend:
        summary = run_ingest(source, backend, NoEncoding(), settings, alias="pre")
        assert (summary.stored, summary.rejected, summary.precomputed, summary.encoded) == (20, 6, 20, 0)
        stored = {i: v for ids, vs in backend.iter_vectors("pre") for i, v in zip(ids, vs, strict=True)}
        np.testing.assert_allclose(stored["v3"], vectors[3], atol=1e-6)
        hit = backend.search_knn("pre", encoder.encode_queries([texts[5]])[0], 1, 10)[0]
        assert hit.doc_id == "v5"
    rejects = {r["id"]: r["reason"] for r in map(json.loads, open(summary.rejects_path))}
    assert set(rejects) == set(bad)
    assert "10 dimensions, the index needs 384" in rejects["short"]
    assert "NaN or infinite" in rejects["nan"]
    assert "not unit length (norm 3" in rejects["long"] and "normalise it" in rejects["long"]
    assert "missing vector field 'emb'" in rejects["missing"]
    assert "not a list of numbers" in rejects["words"]
    assert "all zeros" in rejects["zeros"]


def test_precomputed_vectors_from_parquet_and_a_misspelt_vector_field(tmp_path, encoder, settings):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = ["one small document", "another short text", "a third passage"]
    vectors = encoder.encode_documents(texts).vectors
    path = tmp_path / "pre.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": texts, "embedding": [v.tolist() for v in vectors]}), path)
    with EmbeddedBackend(data_dir=settings.data_dir) as backend:
        summary = run_ingest(
            open_source(path, FieldMap(vector_field="embedding")), backend, encoder, settings, alias="pq"
        )
        assert (summary.stored, summary.precomputed, summary.encoded) == (3, 3, 0)
        with pytest.raises(ConfigError, match="no record has the vector field 'embeding'.*--vector-field"):
            run_ingest(open_source(path, FieldMap(vector_field="embeding")), backend, encoder, settings, alias="pq2")


def test_stage_rates_are_reported(tmp_path, memo_encoder, settings):
    with EmbeddedBackend(data_dir=settings.data_dir) as backend:
        summary = run_ingest(JsonlFile(_corpus(tmp_path / "c.jsonl", 64)), backend, memo_encoder, settings, alias="r")
    rates = summary.stage_rates()
    assert set(rates) == {"read", "encode", "write", "end_to_end"}
    assert all(v > 0 for v in rates.values()) and summary.read_seconds > 0


def test_stage_rates_are_reported_when_every_vector_is_given(tmp_path, memo_encoder, settings):
    path = _vector_corpus(tmp_path / "v.jsonl", 64, memo_encoder.dims)
    with EmbeddedBackend(data_dir=settings.data_dir) as backend:
        summary = run_ingest(JsonlFile(path, FieldMap(vector_field="emb")), backend, memo_encoder, settings, alias="g")
    rates = summary.stage_rates()
    assert summary.precomputed == 64 and summary.read_seconds > 0 and summary.upsert_seconds > 0
    assert 0 < rates["read"] < float("inf") and 0 < rates["write"] < float("inf")
