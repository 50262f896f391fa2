"""The ingest pipeline: read -> validate -> encode (batched) -> upsert, three stages that overlap.

Reading and validation run in one thread, encoding in another, and writing (upsert and checkpoint) in the
caller's, joined by queues of at most two batches each: the encoder works on batch n+1 while batch n is written
and batch n+2 is read, and memory stays flat however large the corpus (a few batches in flight, plus the set of
ids seen, to reject duplicates); with every vector given and writes all Python (an exact embedded index:
``IndexBuilder.writes_hold_gil``) they run inline. Batches are written in source order; a failure in any stage
stops the others and is raised from ``run_ingest`` as it was raised. Records may carry a precomputed vector
(``FieldMap.vector_field``): it is checked (dimensions, finite, unit length for a dot-product index) and stored
without encoding. After every committed batch a checkpoint records the source position reached, the counts and the
rejects file's length, so ``resume=True`` continues the same physical index after a crash without re-encoding
stored documents and without writing a reject twice. At the end the stored count must equal read minus rejected;
only then is the new index swapped in behind the alias.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybrid_search.backends.base import IndexBuilder, IndexSpec
from hybrid_search.config.errors import BadRecordError, ConfigError, IndexingError, SourceError
from hybrid_search.config.files import atomic_write_text, read_json_file
from hybrid_search.config.names import check_field_name
from hybrid_search.config.settings import Settings
from hybrid_search.encoding.models import model_identity
from hybrid_search.ingest.chunking import Chunking
from hybrid_search.ingest.passages import DocumentEncoder, EncodedBatch
from hybrid_search.ingest.sources import CorpusSource
from hybrid_search.ingest.validate import Document, Reject, RejectsFile, VectorCheck, validate_for_ingest

if TYPE_CHECKING:
    from hybrid_search.encoding.encoder import Encoder
    from hybrid_search.encoding.sparse import SparseEncoder

__all__ = ["Checkpoint", "IngestSummary", "check_fields", "index_spec_for", "run_ingest"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IngestSummary:
    """What one ingest did. ``rejects_path`` lists every rejected record with its position and reason."""

    alias: str
    physical: str
    source: str
    model: str
    read: int
    stored: int
    rejected: int
    truncated: int
    seconds: float
    encode_seconds: float
    upsert_seconds: float
    rejects_path: str
    resumed: bool
    encoded: int = 0  # documents encoded and upserted by this run (after a resume, fewer than stored)
    read_seconds: float = 0.0  # time the read + validate stage worked (not waiting on the next stage)
    precomputed: int = 0  # documents stored with the vector their record carried
    run_seconds: float = 0.0  # this run's wall time (``seconds`` adds the earlier runs a resume continued)
    passages: int = 0  # passages stored (a document of one passage counts one); with ``stored``, per document
    chunking: str = "none"

    def stage_rates(self) -> dict[str, float]:
        """Each stage's own rate (documents per second of its working time) and the end-to-end rate: with
        the stages overlapped, end to end approaches the slowest stage's rate."""
        docs = self.encoded + self.precomputed

        def rate(seconds: float) -> float:
            return round(docs / seconds, 1) if seconds > 0 else float("inf")

        return {
            "read": rate(self.read_seconds),
            "encode": rate(self.encode_seconds) if self.encoded else float("inf"),
            "write": rate(self.upsert_seconds),
            "end_to_end": rate(self.run_seconds or self.seconds),
        }

    @property
    def docs_per_s(self) -> float:
        return self.stored / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["docs_per_s"] = round(self.docs_per_s, 1)
        return out


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Progress of an unfinished ingest; written atomically after each committed batch."""

    alias: str
    physical: str
    source: str
    model: str
    position: int = 0  # last source position whose fate (stored or rejected) is durable
    read: int = 0
    rejected: int = 0
    truncated: int = 0
    rejects_bytes: int = 0
    elapsed: float = 0.0
    passages: int = 0

    @staticmethod
    def path_for(data_dir: Path, alias: str) -> Path:
        return data_dir / "checkpoints" / f"{alias}.json"

    @staticmethod
    def load(path: Path) -> Checkpoint | None:
        """The checkpoint in ``path``; ``None`` when there is none; ``ConfigError`` naming the file when it
        is damaged."""
        if not path.exists():
            return None
        fix = "ingest without --resume to start over (the damaged checkpoint is then replaced)"
        data = read_json_file(path, expect=dict, fix=fix)
        try:
            ckpt = Checkpoint(**data)
            for name in ("alias", "physical", "source", "model"):
                if not isinstance(getattr(ckpt, name), str) or not getattr(ckpt, name):
                    raise TypeError(f"{name} is missing")
            int(ckpt.position), int(ckpt.read), int(ckpt.rejected), int(ckpt.rejects_bytes)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path} is damaged ({exc}): {fix}") from None
        return ckpt

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(dataclasses.asdict(self)))


def index_spec_for(
    encoder: Encoder,
    settings: Settings,
    metadata_fields: Sequence[str] = (),
    sparse_encoder: SparseEncoder | None = None,
    *,
    chunking: Chunking | None = None,
) -> IndexSpec:
    """The index an encoder's vectors need (its dimension, dot product for normalised vectors), the
    metadata fields its records carry (what filters may name), the sparse model when there is one, and
    whether documents hold passages (``chunking``; records that carry their vectors are one passage each)."""
    chunks = chunking if chunking is not None else Chunking.parse(settings.ingest.chunking)
    return IndexSpec(
        passages=chunks.splits,
        chunking=str(chunks),
        sparse_model=model_identity(sparse_encoder.model_name) if sparse_encoder is not None else "",
        dims=encoder.dims,
        similarity="dot_product" if encoder.pooling.normalize else "cosine",
        analyzer=settings.index.analyzer,
        model=model_identity(encoder.model_name),
        hnsw_m=settings.index.hnsw_m,
        hnsw_ef_construction=settings.index.hnsw_ef_construction,
        metadata_fields=tuple(metadata_fields),
    )


FIELD_SAMPLE = 1_000  # records looked at for the field check


def check_fields(source: CorpusSource, sample: int = FIELD_SAMPLE) -> None:
    """Refuse a text or metadata field that none of the first ``sample`` records has: a misspelt
    ``--text-field`` would store title-only documents, a misspelt ``--metadata-fields`` entry nothing."""
    keys: set[str] = set()
    looked = 0
    for record in itertools.islice(source.records(), sample):
        if record.fields is not None:
            keys.update(record.fields)
            looked += 1
    if not looked:
        return  # nothing readable: validation reports each record
    fields, seen = source.fields, ", ".join(sorted(keys))
    where = (
        f"among the first {looked} records (--no-field-check if it only appears later)"
        if looked == sample
        else f"among the {looked} records"
    )
    if fields.text_field not in keys:
        raise ConfigError(
            f"no record has the text field {fields.text_field!r} {where} (fields seen: {seen}): give the right "
            "one with --text-field"
        )
    named = [("vector", fields.vector_field), ("sparse", fields.sparse_field)]
    for kind, name in [*named, *(("metadata", m) for m in fields.metadata_fields)]:
        if name is not None and name not in keys:
            flag = "--metadata-fields" if kind == "metadata" else f"--{kind}-field"
            raise ConfigError(f"no record has the {kind} field {name!r} {where} (fields seen: {seen}): fix {flag}")


class _Run:
    """Mutable state of one ingest run; the public result is the frozen ``IngestSummary``."""

    def __init__(self, ckpt: Checkpoint, ckpt_path: Path, rejects: RejectsFile, coder: DocumentEncoder) -> None:
        self.ckpt, self.ckpt_path, self.rejects, self.coder = ckpt, ckpt_path, rejects, coder
        self.upsert_s = self.read_s = 0.0
        self.started = self.began = time.perf_counter()

    def commit(self, position: int, read: int, rejected: Sequence[Reject], truncated: int, passages: int = 0) -> None:
        for r in rejected:
            self.rejects.write(r.position, r.doc_id, r.reason)
        c = self.ckpt
        self.ckpt = dataclasses.replace(
            c,
            position=position,
            read=c.read + read,
            rejected=c.rejected + len(rejected),
            truncated=c.truncated + truncated,
            passages=c.passages + passages,
            rejects_bytes=self.rejects.commit(),
            elapsed=c.elapsed + time.perf_counter() - self.started,
        )
        self.started = time.perf_counter()
        self.ckpt.save(self.ckpt_path)


IngestObserver = Callable[["IngestSummary | None", "BaseException | None"], None]  # (summary, error)


def run_ingest(
    source: CorpusSource,
    backend: IndexBuilder,
    encoder: Encoder,
    settings: Settings,
    *,
    alias: str,
    resume: bool = False,
    progress: bool = False,
    on_finish: IngestObserver | None = None,
    sparse_encoder: SparseEncoder | None = None,
) -> IngestSummary:
    """Build (or with ``resume``, finish) ``alias`` from ``source``; see the module docstring. With a
    ``sparse_encoder``, each document also gets a learned-sparse vector (the index records its model).

    ``on_finish`` hears of every run, finished (the summary) or failed (the exception); the application
    uses it to write the ingest log. It is called before the exception propagates.
    """
    try:
        # one writer per index, across processes: a second ingest, reindex or rollback of this alias is
        # refused (naming the holder) before it reads the checkpoint or touches a build
        with backend.writer_lock(alias, force=settings.ingest.force_unlock):
            summary = _run_ingest(
                source, backend, encoder, settings, alias=alias, resume=resume, progress=progress, sparse=sparse_encoder
            )
    except BaseException as exc:
        if on_finish is not None:
            on_finish(None, exc)
        raise
    if on_finish is not None:
        on_finish(summary, None)
    return summary


def _run_ingest(
    source: CorpusSource,
    backend: IndexBuilder,
    encoder: Encoder,
    settings: Settings,
    *,
    alias: str,
    resume: bool,
    progress: bool,
    sparse: SparseEncoder | None,
) -> IngestSummary:
    for name in source.fields.metadata_fields:
        check_field_name(name, "--metadata-fields entry", ConfigError)
    precomputed_sparse = source.fields.sparse_field is not None
    if precomputed_sparse and sparse is None:
        raise ConfigError(
            f"--sparse-field {source.fields.sparse_field!r} needs --sparse-model naming the model that made those "
            "vectors: it encodes the queries, and the index records it"
        )
    if settings.ingest.check_fields:
        check_fields(source)  # a misspelt field fails here: before a model loads or an index is created
    chunking = Chunking.parse(settings.ingest.chunking) if source.fields.vector_field is None else Chunking("none")
    spec = index_spec_for(encoder, settings, source.fields.metadata_fields, sparse, chunking=chunking)
    if source.fields.vector_field is None:  # records that carry their vectors need no model at all
        encoder.load()  # model loading is not encode time
    if sparse is not None and not precomputed_sparse:
        sparse.load()
    ckpt_path = Checkpoint.path_for(settings.data_dir, alias)
    ckpt, resumed = _start(backend, spec, ckpt_path, alias, source.name, encoder.model_name, resume)
    rejects_path = settings.data_dir / "rejects" / f"{alias}.jsonl"
    rejects = RejectsFile(rejects_path, source=source.name, truncate_to=ckpt.rejects_bytes if resumed else None)
    run = _Run(ckpt, ckpt_path, rejects, DocumentEncoder(encoder, chunking=chunking, sparse=sparse))
    try:
        try:
            _stream(source, backend, encoder, settings, run, progress)
        finally:
            rejects.close()
        return _finish(backend, run, alias, rejects_path, resumed, settings)
    except (BadRecordError, SourceError, _NothingStored) as exc:
        # not resumable: a rerun starts over, so the half-built index and its checkpoint go now
        _discard(backend, run)
        if isinstance(exc, _NothingStored):
            raise IndexingError(str(exc)) from None
        raise


class _NothingStored(Exception):
    """The build holds no document; it is discarded and the alias is left as it was."""


def _discard(backend: IndexBuilder, run: _Run) -> None:
    if backend.index_exists(run.ckpt.physical):
        backend.drop_index(run.ckpt.physical)
    run.ckpt_path.unlink(missing_ok=True)


def _start(
    backend: IndexBuilder, spec: IndexSpec, ckpt_path: Path, alias: str, source: str, model: str, resume: bool
) -> tuple[Checkpoint, bool]:
    try:
        previous = Checkpoint.load(ckpt_path)
    except ConfigError:
        if resume:
            raise
        log.warning("%s is damaged; starting a new build (the build it named is removed as an orphan later)", ckpt_path)
        ckpt_path.unlink(missing_ok=True)
        previous = None
    if resume and previous is not None:
        if (previous.source, previous.model) != (source, model):
            raise ConfigError(
                f"the interrupted ingest of {alias!r} read {previous.source} with {previous.model}: resume with "
                "the same source and model, or ingest without --resume to start over"
            )
        backend.begin_build(alias, spec, resume_from=previous.physical)
        log.info("resuming %s into %s after position %d", alias, previous.physical, previous.position)
        return previous, True
    if resume:
        log.warning("no interrupted ingest of %r to resume; starting a new build", alias)
    if previous is not None:
        log.warning(
            "discarding the interrupted ingest of %r into %s (%d records read from %s); use --resume "
            "to continue such a build instead",
            alias,
            previous.physical,
            previous.read,
            previous.source,
        )
        if backend.index_exists(previous.physical):
            backend.drop_index(previous.physical)
    physical = backend.begin_build(alias, spec)
    ckpt = Checkpoint(alias=alias, physical=physical, source=source, model=model)
    ckpt.save(ckpt_path)
    return ckpt, False


@dataclass
class _Batch:
    """One batch moving through the stages: its documents and rejects, how far in the source it reaches,
    and (after the encode stage) its vectors."""

    docs: list[Document]
    rejects: list[Reject]
    position: int
    read: int
    encoded: EncodedBatch | None = None  # what the encode stage made of ``docs``


@dataclass
class _Failed:
    error: BaseException


_DONE = object()
_QUEUE_BATCHES = 2  # batches waiting between two stages: bounds memory, enough to keep each stage busy
_STOP_JOIN_SECONDS = 30.0


def _stream(
    source: CorpusSource, backend: IndexBuilder, encoder: Encoder, settings: Settings, run: _Run, progress: bool
) -> None:
    """Run the read, encode and write stages: inline when nothing is encoded and writes are all Python, else
    overlapped (module doc)."""
    from tqdm.auto import tqdm

    skip_upto = run.ckpt.position
    nothing_to_encode = not run.coder.encodes(source.fields)
    total = source.count_hint() if progress or nothing_to_encode else None  # a file's size hint may read it: once
    # the bar follows the positions whose fate is durable, one update per stored batch (rate and ETA are the
    # ingest's own); miniters=1: tqdm learnt a huge interval from the reader's first burst and froze the bar
    bar = tqdm(
        desc=f"ingest {run.ckpt.alias}",
        unit="rec",
        disable=not progress,
        initial=skip_upto,
        total=total if progress else None,
        mininterval=0.5,
        miniters=1,
    )
    vectors = (
        VectorCheck(encoder.dims, unit=encoder.pooling.normalize) if source.fields.vector_field is not None else None
    )
    batches = _timed(_batches(source, settings, skip_upto, vectors, run), run)
    left = None if total is None else max(total - skip_upto, 0)
    # all Python (an exact embedded index): one thread measured 1.3x three (Quora, 2 cores)
    if nothing_to_encode and backend.writes_hold_gil(run.ckpt.physical, left):
        with contextlib.closing(bar):
            for batch in batches:
                batch.encoded = run.coder.encode(batch.docs)
                _write(batch, backend, settings, run)
                bar.update(batch.position - bar.n)
        return
    stop = threading.Event()
    to_encode: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_BATCHES)
    to_write: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_BATCHES)

    def put(q: queue.Queue[Any], item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(q: queue.Queue[Any]) -> Any:
        while not stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return _DONE

    def read_stage() -> None:
        try:
            for batch in batches:
                if not put(to_encode, batch):
                    return
            put(to_encode, _DONE)
        except BaseException as exc:  # handed to the writer, which raises it
            put(to_encode, _Failed(exc))

    def encode_stage() -> None:
        try:
            while True:
                item = get(to_encode)
                if isinstance(item, _Batch):
                    item.encoded = run.coder.encode(item.docs)
                if not put(to_write, item) or not isinstance(item, _Batch):
                    return
        except BaseException as exc:
            put(to_write, _Failed(exc))

    threads = [
        threading.Thread(target=read_stage, name=f"ingest-read-{run.ckpt.alias}", daemon=True),
        threading.Thread(target=encode_stage, name=f"ingest-encode-{run.ckpt.alias}", daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        while True:
            item = to_write.get()  # the encode stage always hands over a batch, the end, or a failure
            if isinstance(item, _Failed):
                raise item.error
            if not isinstance(item, _Batch):
                break
            _write(item, backend, settings, run)
            bar.update(item.position - bar.n)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=_STOP_JOIN_SECONDS)
        bar.close()


def _timed(batches: Iterator[_Batch], run: _Run) -> Iterator[_Batch]:
    """``batches``, the time spent producing them (reading and validating) added to ``run.read_s``."""
    while True:
        t = time.perf_counter()
        batch = next(batches, None)
        run.read_s += time.perf_counter() - t
        if batch is None:
            return
        yield batch


def _batches(source: CorpusSource, settings: Settings, skip_upto: int, vectors: VectorCheck | None, run: _Run) -> Any:
    """Validated records grouped into batches of ``ingest.batch_size`` documents, in source order."""
    docs: list[Document] = []
    pending: list[Reject] = []
    read, position = 0, skip_upto
    for item in validate_for_ingest(source.records(), source.fields, settings.ingest, vectors):
        if item.position <= skip_upto:
            continue  # its fate is already durable; validated again only to remember its id
        read, position = read + 1, item.position
        if isinstance(item, Reject):
            pending.append(item)
        else:
            docs.append(item)
        if len(docs) >= settings.ingest.batch_size:
            yield _Batch(docs, pending, position, read)
            docs, pending, read = [], [], 0
    if read:
        yield _Batch(docs, pending, position, read)


def _write(batch: _Batch, backend: IndexBuilder, settings: Settings, run: _Run) -> None:
    encoded = batch.encoded or EncodedBatch()
    rejected = sorted(batch.rejects + encoded.rejects, key=lambda r: r.position)
    if encoded.rejects and settings.ingest.strict:
        r = encoded.rejects[0]
        raise BadRecordError(f"record {r.position} (id {r.doc_id}) {r.reason}; run without --strict to collect rejects")
    if encoded.docs:
        t = time.perf_counter()
        result = backend.upsert(run.ckpt.physical, encoded.docs)
        run.upsert_s += time.perf_counter() - t
        if result.failed:
            refused = [
                Reject(encoded.positions.get(f.doc_id, batch.position), f.doc_id, f"refused by backend: {f.reason}")
                for f in result.failed
            ]
            if settings.ingest.strict:
                raise BadRecordError(
                    f"record {refused[0].position} (id {refused[0].doc_id}) "
                    f"{refused[0].reason}; run without --strict to collect rejects"
                )
            rejected = sorted(rejected + refused, key=lambda r: r.position)
    refused_ids = {r.doc_id for r in rejected}
    passages = sum(len(d.passages) or 1 for d in encoded.docs if d.doc_id not in refused_ids)
    run.commit(batch.position, batch.read, rejected, encoded.truncated, passages)


def _check_shrink(backend: IndexBuilder, alias: str, physical: str, stored: int, settings: Settings) -> None:
    """Refuse to swap in a build much smaller than what the alias serves, unless the user allowed it."""
    if settings.ingest.allow_shrink or alias == physical or not backend.index_exists(alias):
        return
    serving = backend.count(alias)
    if stored < settings.ingest.min_kept_fraction * serving:
        raise IndexingError(
            f"this build would shrink {alias!r} from {serving} to {stored} documents (below "
            f"ingest.min_kept_fraction = {settings.ingest.min_kept_fraction}), so {alias!r} is unchanged. If that "
            f"is intended, rerun with --resume --allow-shrink to serve the build {physical}; otherwise check "
            "the source and its fields"
        )


def _finish(
    backend: IndexBuilder, run: _Run, alias: str, rejects_path: Path, resumed: bool, settings: Settings
) -> IngestSummary:
    c = run.ckpt
    backend.refresh(c.physical)
    stored = backend.count(c.physical)
    expected = c.read - c.rejected
    if stored != expected:
        # the server holds fewer documents than it acknowledged (or more than were sent): a resume must send
        # every record again, into the same build (ids make that idempotent), not continue from the end
        run.ckpt = dataclasses.replace(c, position=0, read=0, rejected=0, truncated=0, rejects_bytes=0)
        run.ckpt.save(run.ckpt_path)
        raise IndexingError(
            f"count check failed for {c.physical}: {stored} stored, but {c.read} read - {c.rejected} rejected = "
            f"{expected}; the alias {alias!r} was not switched. Rerun with --resume: it sends every record again "
            "into the same build (nothing is duplicated)"
        )
    if stored == 0:
        why = f"{c.rejected} rejected (reasons in {rejects_path})" if c.rejected else f"{c.source} holds no records"
        raise _NothingStored(
            f"nothing was stored: {c.read} read, {why}; {alias!r} is unchanged. Check the source and "
            "--id-field / --text-field"
        )
    _check_shrink(backend, alias, c.physical, stored, settings)
    backend.finish_build(alias, c.physical)
    run.ckpt_path.unlink(missing_ok=True)
    seconds = c.elapsed + time.perf_counter() - run.started
    run_seconds = time.perf_counter() - run.began
    log.info("ingest of %s finished at %s", alias, datetime.now(UTC).isoformat())
    return IngestSummary(
        alias=alias,
        physical=c.physical,
        source=c.source,
        model=c.model,
        read=c.read,
        stored=stored,
        rejected=c.rejected,
        truncated=c.truncated,
        seconds=seconds,
        encode_seconds=run.coder.seconds,
        upsert_seconds=run.upsert_s,
        rejects_path=str(rejects_path),
        resumed=resumed,
        encoded=run.coder.encoded,
        read_seconds=round(run.read_s, 3),
        precomputed=run.coder.precomputed,
        run_seconds=round(run_seconds, 3),
        passages=c.passages,
        chunking=str(run.coder.chunking),
    )
