"""The validation stage: raw records in, documents or rejects out, in source order.

Every record leaves as exactly one :class:`Document` or one :class:`Reject` with its position and reason,
so nothing is dropped silently. ``strict`` turns the first reject into :class:`BadRecordError`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from hybrid_search.config.errors import BadRecordError
from hybrid_search.config.settings import IngestSettings
from hybrid_search.config.text import passage_text
from hybrid_search.ingest.sources import FieldMap, RawRecord

__all__ = [
    "Document",
    "RecordLimits",
    "Reject",
    "RejectsFile",
    "SeenIds",
    "VectorCheck",
    "validate",
    "validate_for_ingest",
]


@dataclass(frozen=True, slots=True)
class Document:
    """A valid corpus document, before encoding."""

    doc_id: str
    title: str
    text: str
    position: int
    metadata: Mapping[str, Any] = field(default_factory=dict)
    vector: np.ndarray | None = None  # precomputed (``--vector-field``), checked; None: to be encoded
    sparse: Mapping[str, float] | None = None  # precomputed (``--sparse-field``), checked; None: to be encoded

    @property
    def passage(self) -> str:
        """What encoders and cross-encoders read: title and text joined by a space (BEIR's convention)."""
        return passage_text(self.title, self.text)

    @property
    def content_hash(self) -> str:
        """SHA-256 of everything stored from the record (title, text, metadata and any precomputed vectors):
        an upsert re-encodes and rewrites a document only when this changed."""
        digest = hashlib.sha256()
        if isinstance(self.metadata, dict) and not self.metadata and self.sparse is None:
            # most records: the JSON below, built without the encoder's per-call setup (a third of the hash)
            quote = json.encoder.encode_basestring  # what a JSONEncoder with ensure_ascii=False quotes with
            text = f'{{"metadata": {{}}, "sparse": null, "text": {quote(self.text)}, "title": {quote(self.title)}}}'
        else:
            parts = {"title": self.title, "text": self.text, "metadata": self.metadata, "sparse": self.sparse}
            text = _HASH_JSON.encode(parts)
        digest.update(text.encode())
        if self.vector is not None:
            digest.update(np.ascontiguousarray(self.vector, dtype=np.float32).data)  # its bytes, not a copy
        return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Reject:
    """A record that will not be stored, where it was, and why."""

    position: int
    doc_id: str | None
    reason: str


_HASH_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str)  # one, not one per hash
_CHECK_CHUNK = 256  # records checked before their ids are looked up together (a few SQLite statements)
_IDS_PER_STATEMENT = 400  # (id, position) pairs per statement: under the oldest SQLite limit of 999 values
_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_undecodable(value: str) -> bool:
    """Undecodable bytes (kept as lone surrogates by ``surrogateescape``) or a lone surrogate escape such as
    ``\\ud800`` from JSON: neither can be stored as UTF-8."""
    return not value.isascii() and _SURROGATE.search(value) is not None  # isascii reads a flag: O(1)


@dataclass(frozen=True, slots=True)
class RecordLimits:
    """Bounds on one record; a record past one is rejected with the reason (``IngestSettings`` sets them)."""

    max_field_chars: int = 1_000_000
    max_depth: int = 32


def _limit_reason(value: Any, limits: RecordLimits, name: str, depth: int = 0) -> str | None:
    """Why a record's field breaks a limit (too long, nested too deeply, not storable text); ``None`` if fine."""
    if depth > limits.max_depth:
        return f"field {name!r} is nested more than {limits.max_depth} levels deep (ingest.max_depth)"
    if isinstance(value, str):
        if len(value) > limits.max_field_chars:
            return (
                f"field {name!r} has {len(value):,} characters, over ingest.max_field_chars = "
                f"{limits.max_field_chars:,}: split the document or raise the limit"
            )
        if _has_undecodable(value):
            return f"undecodable bytes in {name} (not UTF-8)"
    elif isinstance(value, dict):
        for key, item in value.items():
            why = _limit_reason(item, limits, name, depth + 1) or (
                _limit_reason(key, limits, name, depth + 1) if isinstance(key, str) else None
            )
            if why:
                return why
    elif isinstance(value, list):
        for item in value:
            why = _limit_reason(item, limits, name, depth + 1)
            if why:
                return why
    return None


def _field_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


class SeenIds:
    """The ids read so far, each with the position it was first seen at, for the duplicate check.

    Kept in a private temporary SQLite database (spilled to disk past an 8 MiB page cache), so memory
    stays flat however many ids a corpus has: a dict of BEIR NQ's 2.68M ids would hold hundreds of MB.
    """

    def __init__(self) -> None:
        # "": temporary, on disk, deleted on close. One thread at a time uses it, but not always the same one:
        # an ingest's reader thread fills it and the main thread closes it when the ingest stops early
        self._db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        self._db.executescript(
            "PRAGMA cache_size=-8192; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            "CREATE TABLE seen (id TEXT PRIMARY KEY, position INTEGER NOT NULL) WITHOUT ROWID; BEGIN;"
        )

    def first_seen(self, doc_id: str, position: int) -> int | None:
        """Remember ``doc_id`` at ``position``; return the earlier position if it was seen before."""
        return self.first_seen_many([(doc_id, position)])[0]

    def first_seen_many(self, items: Sequence[tuple[str, int]]) -> list[int | None]:
        """``first_seen`` for each (id, position) in order, in a few statements rather than two per id (each
        SQLite statement hands the GIL to the ingest's other threads and waits to get it back)."""
        earlier: dict[str, int] = {}
        unique = list(dict.fromkeys(doc_id for doc_id, _ in items))
        for i in range(0, len(unique), _IDS_PER_STATEMENT):
            part = unique[i : i + _IDS_PER_STATEMENT]
            marks = ",".join("?" * len(part))
            earlier.update(self._db.execute(f"SELECT id, position FROM seen WHERE id IN ({marks})", part))
        out: list[int | None] = []
        new: dict[str, int] = {}
        for doc_id, position in items:
            first = earlier.get(doc_id, new.get(doc_id))
            out.append(first)
            if first is None:
                new[doc_id] = position
        pairs = list(new.items())
        for i in range(0, len(pairs), _IDS_PER_STATEMENT):
            chunk = pairs[i : i + _IDS_PER_STATEMENT]
            marks = ",".join(["(?, ?)"] * len(chunk))
            self._db.execute(f"INSERT INTO seen VALUES {marks}", [v for row in chunk for v in row])
        return out

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM seen").fetchone()[0])

    def close(self) -> None:
        self._db.close()


@dataclass(frozen=True, slots=True)
class VectorCheck:
    """What a precomputed vector must be: ``dims`` finite numbers, of unit length when ``unit`` (an index
    scored by dot product assumes normalised vectors; a cosine index normalises them itself)."""

    dims: int
    unit: bool = True
    tolerance: float = 1e-3

    def reason(self, value: Any, name: str) -> tuple[np.ndarray | None, str | None]:
        """(the vector as float32, None) or (None, why it is refused)."""
        if value is None:
            return None, f"missing vector field {name!r}"
        if isinstance(value, str):
            try:
                value = json.loads(value)  # CSV cells and some JSONL writers carry the list as text
            except ValueError:
                return None, f"vector field {name!r} is not a list of numbers"
        try:
            vector = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            return None, f"vector field {name!r} is not a list of numbers"
        if vector.ndim != 1:
            return None, f"vector field {name!r} is not a flat list of numbers"
        if vector.shape[0] != self.dims:
            return None, f"vector has {vector.shape[0]} dimensions, the index needs {self.dims}"
        wide = vector.astype(np.float64)
        # in float64 no finite float32 vector's squares overflow or underflow, and any NaN or infinity makes
        # the sum NaN or infinite: one pass checks both (a third of isfinite + a float32 dot under errstate)
        squares = float(np.dot(wide, wide))
        if not math.isfinite(squares):
            return None, "vector has NaN or infinite values"
        norm = math.sqrt(squares)
        if norm == 0.0:
            return None, "vector is all zeros"
        if self.unit and not math.isclose(norm, 1.0, abs_tol=self.tolerance):
            return None, (
                f"vector is not unit length (norm {norm:.4g}) and the index scores by dot product: normalise it, "
                "or use a model whose index uses cosine"
            )
        return vector, None


def _check(
    record: RawRecord,
    fields: FieldMap,
    vectors: VectorCheck | None = None,
    limits: RecordLimits = RecordLimits(),
) -> Document | Reject:
    if record.error is not None or record.fields is None:
        return Reject(record.position, None, record.error or "unreadable record")
    raw = record.fields
    raw_id = None
    for id_field in fields.id_fields:  # a loop, not next(genexpr): this runs once per record
        if (value := raw.get(id_field)) not in (None, ""):
            raw_id = value
            break
    # every field kept is checked (length, depth, storable text) before anything else reads it
    for name in [*fields.id_fields, fields.title_field, fields.text_field, *fields.metadata_fields]:
        why = _limit_reason(raw.get(name), limits, name)
        if why:
            shown = raw_id is not None and _limit_reason(raw_id, limits, "id") is None
            return Reject(record.position, _field_text(raw_id).strip() if shown else None, why)
    if raw_id is None:
        return Reject(record.position, None, f"missing id (looked in {', '.join(fields.id_fields)})")
    doc_id = _field_text(raw_id).strip()
    title, text = _field_text(raw.get(fields.title_field)), _field_text(raw.get(fields.text_field))
    if not doc_id:
        return Reject(record.position, None, "missing id (blank)")
    if not text.strip() and not title.strip():
        return Reject(record.position, doc_id, f"empty text (no {fields.title_field} or {fields.text_field})")
    vector = None
    if fields.vector_field is not None and vectors is not None:
        vector, why = vectors.reason(raw.get(fields.vector_field), fields.vector_field)
        if why is not None:
            return Reject(record.position, doc_id, why)
    sparse = None
    if fields.sparse_field is not None:
        sparse, why = sparse_reason(raw.get(fields.sparse_field), fields.sparse_field)
        if why is not None:
            return Reject(record.position, doc_id, why)
    metadata = {m: raw[m] for m in fields.metadata_fields if raw.get(m) is not None}
    return Document(doc_id, title.strip(), text.strip(), record.position, metadata, vector, sparse)


MAX_SPARSE_TOKENS = 65_536  # above any model vocabulary (BERT's has 30,522): a bigger one is not a token vector


def sparse_reason(value: Any, name: str) -> tuple[dict[str, float] | None, str | None]:
    """(the precomputed sparse vector, None) or (None, why it is refused): an object of token -> positive
    finite weight (JSON text in a CSV cell), tokens without ``.``, at most ``MAX_SPARSE_TOKENS`` of them."""
    from hybrid_search.encoding.sparse import check_sparse_vector

    if value is None:
        return None, f"missing sparse field {name!r}"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None, f"sparse field {name!r} is not an object of token -> weight"
    if isinstance(value, dict) and len(value) > MAX_SPARSE_TOKENS:
        return (
            None,
            f"sparse field {name!r} has {len(value):,} tokens, over {MAX_SPARSE_TOKENS:,}: is it a sparse vector?",
        )
    checked = check_sparse_vector(value)
    if isinstance(checked, str):
        return None, f"sparse field {name!r}: {checked}"
    return checked, None


def validate(
    records: Iterable[RawRecord],
    fields: FieldMap,
    *,
    strict: bool = False,
    seen: SeenIds | None = None,
    vectors: VectorCheck | None = None,
    limits: RecordLimits = RecordLimits(),
    chunk: int = _CHECK_CHUNK,
) -> Iterator[Document | Reject]:
    """Check each record; ``seen`` may be shared to continue an earlier pass (the caller closes it);
    ``vectors`` checks the precomputed vector of ``fields.vector_field`` (required when that is set).
    Ids are looked up ``chunk`` records at a time, so the source is read at most that far ahead of what
    was yielded: a pipeline passes its batch size to keep its bound on read-ahead and its checkpoints."""
    if fields.vector_field is not None and vectors is None:
        raise ValueError("a vector field needs a VectorCheck")
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    own = seen is None
    ids = SeenIds() if seen is None else seen
    try:
        checked: list[Document | Reject] = []
        for record in records:
            checked.append(_check(record, fields, vectors, limits))
            if len(checked) >= chunk:
                yield from _without_duplicates(checked, ids, strict)
                checked = []
        yield from _without_duplicates(checked, ids, strict)
    finally:
        if own:
            ids.close()


def validate_for_ingest(
    records: Iterable[RawRecord], fields: FieldMap, ingest: IngestSettings, vectors: VectorCheck | None
) -> Iterator[Document | Reject]:
    """``validate`` as an ingest runs it: its strictness and record limits, and ids looked up one batch at a
    time (never reading further ahead than the batch being assembled, so checkpoints stay whole batches)."""
    limits = RecordLimits(max_field_chars=ingest.max_field_chars, max_depth=ingest.max_depth)
    return validate(records, fields, strict=ingest.strict, vectors=vectors, limits=limits, chunk=ingest.batch_size)


def _without_duplicates(checked: list[Document | Reject], seen: SeenIds, strict: bool) -> Iterator[Document | Reject]:
    """``checked`` in order, a document whose id was seen before (in an earlier chunk or this one) turned into
    a reject naming where it was first seen; only documents that passed every other check are remembered."""
    docs = [c for c in checked if isinstance(c, Document)]
    firsts = iter(seen.first_seen_many([(d.doc_id, d.position) for d in docs]))
    for result in checked:
        if isinstance(result, Document) and (first := next(firsts)) is not None:
            result = Reject(result.position, result.doc_id, f"duplicate id (first seen at position {first})")
        if strict and isinstance(result, Reject):
            raise BadRecordError(
                f"record {result.position} (id {result.doc_id or '?'}) rejected: {result.reason}; "
                "fix the source or run without --strict to collect rejects in a file"
            )
        yield result


class RejectsFile:
    """Appends rejects as JSON lines; ``truncate_to`` rolls back lines written after the last checkpoint."""

    def __init__(self, path: Path, *, source: str, truncate_to: int | None = None) -> None:
        self.path = path
        self.source = source
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: TextIO = path.open("a+" if truncate_to is not None else "w", encoding="utf-8")
        if truncate_to is not None:
            self._fh.truncate(truncate_to)
            self._fh.seek(truncate_to)

    def write(self, position: int, doc_id: str | None, reason: str) -> None:
        row = {"position": position, "id": doc_id, "reason": reason, "source": self.source}
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    def commit(self) -> int:
        """Flush to disk; return the byte offset that a checkpoint can later truncate back to."""
        self._fh.flush()
        return self._fh.tell()

    def close(self) -> None:
        self._fh.close()
