"""Incremental writes into the index an alias serves: add new records, upsert changed ones, delete by id or
by filter, without a rebuild.

Each record is validated as a build validates it and hashed (``Document.content_hash``); the hashes the
index holds decide what happens: ``append`` refuses an id the index has, ``upsert`` skips a record whose
hash is unchanged (not encoded, counted) and re-encodes only the new and changed ones, with the model the
index records (another is refused with the ``reindex`` hint). Every batch is one backend upsert, which
stores each document whole or not at all; a rerun of an interrupted write skips what was stored (its hash
matches) and finishes the rest, so no checkpoint is needed. The index's writer lock is held throughout, so a
build, a rollback or another write of the same alias waits its turn. It never swaps builds.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from hybrid_search.backends.base import BulkResult, IndexBuilder, IndexSpec
from hybrid_search.config.errors import BadRecordError, ConfigError, IndexNotFound
from hybrid_search.config.settings import Settings
from hybrid_search.encoding.models import model_identity
from hybrid_search.ingest.chunking import Chunking
from hybrid_search.ingest.passages import DocumentEncoder
from hybrid_search.ingest.sources import CorpusSource
from hybrid_search.ingest.validate import Document, Reject, RejectsFile, VectorCheck, validate_for_ingest

if TYPE_CHECKING:
    from hybrid_search.encoding.encoder import Encoder
    from hybrid_search.encoding.sparse import SparseEncoder

__all__ = ["WriteMode", "WriteSummary", "check_write_model", "delete_documents", "run_incremental"]

log = logging.getLogger(__name__)

WriteMode = Literal["append", "upsert"]
WRITE_MODES: tuple[WriteMode, ...] = ("append", "upsert")


@dataclass(frozen=True, slots=True)
class WriteSummary:
    """What one incremental write did: ``added`` new ids, ``updated`` changed ones, ``unchanged`` skipped
    (same content hash: not encoded), ``deleted``, ``rejected`` (reasons in ``rejects_path``)."""

    index: str
    physical: str
    source: str
    mode: str
    read: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0
    encoded: int = 0
    precomputed: int = 0
    seconds: float = 0.0
    encode_seconds: float = 0.0
    rejects_path: str = ""
    refreshed: bool = True

    @property
    def docs_per_s(self) -> float:
        """Records settled (written, skipped or deleted) per second of the whole write."""
        done = self.added + self.updated + self.unchanged + self.deleted
        return done / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "docs_per_s": round(self.docs_per_s, 1)}

    def line(self) -> str:
        """The one line the CLI prints."""
        if self.mode == "delete":
            return f"{self.index}: deleted {self.deleted} of {self.read} ids asked in {self.seconds:.2f}s"
        parts = f"added {self.added}, updated {self.updated}, unchanged {self.unchanged}, rejected {self.rejected}"
        tail = "" if self.refreshed else " (not refreshed: visible after the next refresh)"
        return (
            f"{self.index} ({self.mode}): {parts}; encoded {self.encoded} in {self.seconds:.2f}s "
            f"({self.docs_per_s:,.1f} records/s){tail}" + (f"; rejects in {self.rejects_path}" if self.rejected else "")
        )


def check_write_model(spec: IndexSpec, encoder_model: str, index: str) -> None:
    """The query model rule for writes: new vectors come from the model the index records."""
    if spec.model and model_identity(encoder_model) != spec.model:
        raise ConfigError(
            f"index {index!r} holds vectors from {spec.model}, but these records would be encoded with "
            f"{encoder_model}: write with --model {spec.model}, or re-encode the whole index first with "
            f"hybrid-search reindex --index {index} --model {encoder_model}"
        )


def run_incremental(
    source: CorpusSource,
    backend: IndexBuilder,
    encoder: Encoder,
    settings: Settings,
    *,
    alias: str,
    mode: WriteMode = "upsert",
    refresh: bool = True,
    sparse_encoder: SparseEncoder | None = None,
) -> WriteSummary:
    """Write ``source`` into the build ``alias`` serves (see the module docstring); with ``refresh`` the
    writes are visible to every new search when this returns."""
    if mode not in WRITE_MODES:
        raise ConfigError(f"unknown write mode {mode!r}: use one of {', '.join(WRITE_MODES)}")
    with backend.writer_lock(alias, force=settings.ingest.force_unlock):
        physical = backend.serving_build(alias)
        spec = backend.index_spec(alias)
        if physical is None or spec is None:
            raise IndexNotFound(
                f"index {alias!r} does not exist: build it first with `hybrid-search ingest SOURCE --index {alias}`"
            )
        check_write_model(spec, encoder.model_name, alias)
        if spec.sparse_model and sparse_encoder is None and source.fields.sparse_field is None:
            raise ConfigError(f"index {alias!r} has sparse vectors from {spec.sparse_model}: pass that sparse model")
        fields = _fields_for(source, spec, alias)
        writer = _Writer(backend, physical, spec, encoder, sparse_encoder, mode, settings)
        rejects_path = settings.data_dir / "rejects" / f"{alias}-writes.jsonl"  # a build's own file stays
        rejects = RejectsFile(rejects_path, source=source.name, truncate_to=None)
        try:
            for docs, refused in _batches(source, fields, spec, settings):
                writer.write(docs, refused)
                for r in writer.take_rejects():
                    rejects.write(r.position, r.doc_id, r.reason)
                rejects.commit()
        finally:
            rejects.close()
            backend.mark_written(physical)
        if refresh:
            backend.refresh(physical)
        return dataclasses.replace(
            writer.summary(alias, source.name), rejects_path=str(rejects_path), refreshed=refresh
        )


def delete_documents(
    backend: IndexBuilder,
    settings: Settings,
    *,
    alias: str,
    ids: Sequence[str] = (),
    filters: Mapping[str, Any] | None = None,  # a search filter (``search.filters``), checked by the caller
    refresh: bool = True,
) -> WriteSummary:
    """Delete the documents named by ``ids`` and those ``filters`` allows, under the writer lock."""
    if not ids and not filters:
        raise ConfigError("say what to delete: ids, a filter (--where), or both")
    started = time.perf_counter()
    with backend.writer_lock(alias, force=settings.ingest.force_unlock):
        physical = backend.serving_build(alias)
        if physical is None:
            raise IndexNotFound(f"index {alias!r} does not exist: nothing to delete")
        wanted = list(dict.fromkeys(str(i) for i in ids))
        if filters:
            named = set(wanted)
            wanted += [i for i in backend.matching_ids(physical, filters) if i not in named]
        deleted = 0
        try:
            for start in range(0, len(wanted), settings.ingest.batch_size):
                deleted += backend.delete(physical, wanted[start : start + settings.ingest.batch_size])
        finally:
            backend.mark_written(physical)
        if refresh:
            backend.refresh(physical)
    return WriteSummary(
        index=alias,
        physical=physical,
        source="",
        mode="delete",
        read=len(wanted),
        deleted=deleted,
        seconds=time.perf_counter() - started,
        refreshed=refresh,
    )


def _fields_for(source: CorpusSource, spec: IndexSpec, alias: str) -> Any:
    """The source's field map with the index's metadata fields when it names none; a metadata field the
    index was not built with is refused (its filters would miss every older document)."""
    fields = source.fields
    if spec.metadata_fields is None:
        return fields
    if not fields.metadata_fields:
        return dataclasses.replace(fields, metadata_fields=spec.metadata_fields)
    extra = sorted(set(fields.metadata_fields) - set(spec.metadata_fields))
    if extra:
        kept = ", ".join(spec.metadata_fields) or "none"
        raise ConfigError(
            f"index {alias!r} was built with metadata fields {kept}; {', '.join(extra)} would be new: rebuild "
            "with `hybrid-search ingest` (no --mode) to add a filterable field"
        )
    return fields


def _batches(
    source: CorpusSource, fields: Any, spec: IndexSpec, settings: Settings
) -> Iterator[tuple[list[Document], list[Reject]]]:
    vectors = VectorCheck(spec.dims, unit=spec.similarity == "dot_product") if fields.vector_field else None
    docs: list[Document] = []
    refused: list[Reject] = []
    for item in validate_for_ingest(source.records(), fields, settings.ingest, vectors):
        if isinstance(item, Reject):
            refused.append(item)
        else:
            docs.append(item)
        if len(docs) >= settings.ingest.batch_size:
            yield docs, refused
            docs, refused = [], []
    if docs or refused:
        yield docs, refused


class _Writer:
    """The counts and the per-batch work of one incremental write."""

    def __init__(
        self,
        backend: IndexBuilder,
        physical: str,
        spec: IndexSpec,
        encoder: Encoder,
        sparse: SparseEncoder | None,
        mode: WriteMode,
        settings: Settings,
    ) -> None:
        self.backend, self.physical, self.spec = backend, physical, spec
        self.encoder, self.sparse, self.mode, self.strict = encoder, sparse, mode, settings.ingest.strict
        self.counts = dict.fromkeys(("read", "added", "updated", "unchanged", "rejected"), 0)
        # the index's own chunking, so a written document is split as the build split the others
        chunking = Chunking.parse(spec.chunking) if spec.passages and spec.chunking else Chunking("none")
        self.coder = DocumentEncoder(encoder, chunking=chunking, sparse=sparse if spec.sparse_model else None)
        self.started = time.perf_counter()
        self._rejects: list[Reject] = []

    def take_rejects(self) -> list[Reject]:
        out, self._rejects = sorted(self._rejects, key=lambda r: r.position), []
        return out

    def write(self, docs: list[Document], refused: list[Reject]) -> None:
        c = self.counts
        c["read"] += len(docs) + len(refused)
        self._reject(refused)
        stored = self.backend.content_hashes(self.physical, [d.doc_id for d in docs]) if docs else {}
        todo: list[tuple[Document, str]] = []
        for doc in docs:
            digest = doc.content_hash
            if doc.doc_id in stored and self.mode == "append":
                self._reject([Reject(doc.position, doc.doc_id, "id already in the index (use --mode upsert)")])
            elif stored.get(doc.doc_id) == digest:
                c["unchanged"] += 1
            else:
                todo.append((doc, digest))
        if not todo:
            return
        encoded = self.coder.encode([d for d, _ in todo])
        self._reject(encoded.rejects)
        result = self.backend.upsert(self.physical, encoded.docs) if encoded.docs else BulkResult()
        self._reject(
            [Reject(encoded.positions[f.doc_id], f.doc_id, f"refused by backend: {f.reason}") for f in result.failed]
        )
        failed = {f.doc_id for f in result.failed} | {r.doc_id for r in encoded.rejects}
        for doc, _ in todo:
            if doc.doc_id not in failed:
                c["updated" if doc.doc_id in stored else "added"] += 1

    def _reject(self, rejects: list[Reject]) -> None:
        if rejects and self.strict:
            r = rejects[0]
            raise BadRecordError(
                f"record {r.position} (id {r.doc_id}) {r.reason}; run without --strict to collect rejects"
            )
        self._rejects += rejects
        self.counts["rejected"] += len(rejects)

    def summary(self, alias: str, source: str) -> WriteSummary:
        c = self.counts
        return WriteSummary(
            index=alias,
            physical=self.physical,
            source=source,
            mode=self.mode,
            read=c["read"],
            added=c["added"],
            updated=c["updated"],
            unchanged=c["unchanged"],
            rejected=c["rejected"],
            encoded=self.coder.encoded,
            precomputed=self.coder.precomputed,
            seconds=time.perf_counter() - self.started,
            encode_seconds=round(self.coder.seconds, 3),
        )
