"""A batch of documents made ready for one write of a physical index: each checked (a refused one is named
with its reason, the rest still stored), vectors checked and normalised as one matrix rather than one array
at a time, and rows shaped for SQLite. ``insert_rows`` writes many rows per SQLite statement.

It never touches an index: ``physical`` writes what this prepares.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybrid_search.backends.base import IndexedDocument, IndexSpec
from hybrid_search.backends.embedded.passages import PASSAGE_BITS
from hybrid_search.config.errors import FailedItem

__all__ = ["PreparedBatch", "insert_rows", "prepare_batch"]

_SCALE_MIN, _SCALE_MAX = 1e-30, 1e30  # norms a float32 reciprocal scales exactly enough (the rest: float64)
_ROWS_PER_STATEMENT = 1024  # bounds one statement's text; a batch is a few statements, not one per row


@dataclass
class PreparedBatch:
    """What one write stores. ``rows``: (doc id, title, text, metadata JSON, vector bytes, hash) in the order
    of ``vectors`` (float32, normalised for a cosine index) and ``metadata`` (the same metadata as dicts, for
    the text index); ``sparse``: (doc id, terms JSON); ``passages``: (doc id, number, start, end, vector
    bytes) of documents of more than one passage."""

    rows: list[tuple[str, str, str, str, bytes, str]] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    metadata: list[dict[str, Any]] = field(default_factory=list)
    sparse: list[tuple[str, str]] = field(default_factory=list)
    passages: list[tuple[str, int, int, int, bytes]] = field(default_factory=list)
    failed: list[FailedItem] = field(default_factory=list)


def _refusal(spec: IndexSpec, doc: IndexedDocument) -> str | None:
    """Why ``doc`` cannot be stored, vectors aside (``_vector_matrix`` checks them)."""
    if not doc.doc_id:
        return "empty document id"
    if doc.sparse is not None and not spec.sparse_model:
        return "the document has a sparse vector but the index has no sparse field (ingest with a sparse model)"
    if doc.passages and not spec.passages:
        return "the document has passages but the index holds one vector per document (built with chunking none)"
    if len(doc.passages) > 1 << PASSAGE_BITS:
        return f"the document has {len(doc.passages)} passages, over the {1 << PASSAGE_BITS} one document may hold"
    return None


def _vector_matrix(spec: IndexSpec, vectors: Sequence[Any]) -> tuple[np.ndarray, list[str | None]]:
    """The vectors as one float32 matrix (normalised for a cosine index) and, per vector, why it is refused
    (a wrong shape, a NaN or an infinity) or None. Rows of refused vectors are zeros. No float64 copy of the
    matrix is made: on a fresh 3 MB temporary the page faults alone cost more than the arithmetic."""
    n, dims = len(vectors), spec.dims
    reasons: list[str | None] = [None] * n
    try:
        matrix = np.array(vectors, dtype=np.float32)  # a copy: scaled in place below
    except (TypeError, ValueError):  # ragged or not numbers: shape them one by one
        matrix = np.empty((0,), dtype=np.float32)
    if matrix.shape != (n, dims):
        matrix = np.zeros((n, dims), dtype=np.float32)
        for i, vec in enumerate(vectors):
            try:
                arr = np.asarray(vec, dtype=np.float32)
            except (TypeError, ValueError):
                reasons[i] = f"vector is not numbers, the index expects ({dims},)"
                continue
            if arr.shape != (dims,):
                reasons[i] = f"vector has shape {arr.shape}, the index expects ({dims},)"
            else:
                matrix[i] = arr
    # summed in float64, no finite float32 row's squares overflow or underflow, and a NaN or an infinity makes
    # the sum NaN or infinite: one pass checks finiteness and gives the norms
    squares = np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64)
    for i in np.flatnonzero(~np.isfinite(squares)).tolist():
        reasons[i] = "vector contains NaN or infinity"
        matrix[i] = 0.0
        squares[i] = 0.0
    if spec.similarity == "cosine":
        norms = np.sqrt(squares)
        plain = (norms > _SCALE_MIN) & (norms < _SCALE_MAX)  # 1 / norm is a normal float32 with room to spare
        matrix *= np.divide(1.0, norms, out=np.ones_like(norms), where=plain).astype(np.float32)[:, None]
        for i in np.flatnonzero(~plain & (norms > 0)).tolist():  # huge or tiny: scaled in float64
            matrix[i] = (matrix[i].astype(np.float64) / norms[i]).astype(np.float32)
    return matrix, reasons


def prepare_batch(spec: IndexSpec, docs: Sequence[IndexedDocument]) -> PreparedBatch:
    """Check and shape ``docs`` (the last of an id wins) for one write; see ``PreparedBatch``."""
    out = PreparedBatch()
    latest = list({d.doc_id: d for d in docs}.values())
    matrix, reasons = _vector_matrix(spec, [d.vector for d in latest])
    keep: list[int] = []
    for i, doc in enumerate(latest):
        reason = reasons[i] or _refusal(spec, doc)
        if reason is None and doc.passages:
            pmatrix, preasons = _vector_matrix(spec, [p.vector for p in doc.passages])
            if any(preasons):
                reason = f"a passage {next(r for r in preasons if r)}"
            elif len(doc.passages) > 1:  # one passage: the row's vector
                out.passages += [
                    (doc.doc_id, n, p.start, p.end, pmatrix[n].tobytes()) for n, p in enumerate(doc.passages)
                ]
        if reason:
            out.failed.append(FailedItem(doc.doc_id, reason))
            continue
        keep.append(i)
        metadata = dict(doc.metadata)
        out.metadata.append(metadata)
        meta_json = json.dumps(metadata) if metadata else "{}"
        out.rows.append((doc.doc_id, doc.title, doc.text, meta_json, matrix[i].tobytes(), doc.content_hash))
        if doc.sparse:
            out.sparse.append((doc.doc_id, json.dumps(dict(doc.sparse))))
    out.vectors = matrix[keep] if len(keep) < len(latest) else matrix
    return out


def insert_rows(db: sqlite3.Connection, head: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run ``head`` ("INSERT INTO t(a, b)") over ``rows`` with many rows per statement. executemany runs one
    statement per row, and each releases the GIL: behind a busy thread (an ingest's reader), getting it back
    costs up to a switch interval (5 ms) per row, measured 100 s for 20,000 rows instead of 0.1 s."""
    if not rows:
        return
    width = len(rows[0])
    per = max(1, min(_ROWS_PER_STATEMENT, db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width))
    marks = "(" + ",".join("?" * width) + ")"
    for i in range(0, len(rows), per):
        part = rows[i : i + per]
        db.execute(f"{head} VALUES {','.join([marks] * len(part))}", [v for row in part for v in row])
