"""From validated documents to what a backend stores: each document chunked into passages (``chunking``), the
passages encoded in one call per batch, and learned-sparse vectors beside them. Both the full build and the
incremental writes encode through here, so a document is stored the same way by either.

With chunking, every document carries its passages' spans and vectors (a short one: one passage, its whole
text), its first passage's vector standing for the document where one vector is read; without, documents
carry one vector each, as before chunking existed.
Learned-sparse vectors stay per document (the sparse model reads the document up to its own limit).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from hybrid_search.backends.base import IndexedDocument, PassageVector
from hybrid_search.config.text import passage_text
from hybrid_search.ingest.chunking import MAX_PASSAGES, Chunker, Chunking
from hybrid_search.ingest.validate import Document, Reject

if TYPE_CHECKING:
    from hybrid_search.encoding.encoder import Encoder
    from hybrid_search.encoding.sparse import SparseEncoder
    from hybrid_search.ingest.sources import FieldMap

__all__ = ["DocumentEncoder", "EncodedBatch", "chunker_for"]


def chunker_for(encoder: Encoder, chunking: Chunking) -> Chunker:
    """A chunker that counts with ``encoder``'s tokenizer and fits its max sequence length."""
    return Chunker(
        chunking,
        token_offsets=encoder.token_offsets,
        max_tokens=encoder.max_length,
        overhead=encoder.passage_overhead,
    )


@dataclass
class EncodedBatch:
    """Documents ready to store, in input order, and the ones refused while encoding (with reasons)."""

    docs: list[IndexedDocument] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    truncated: int = 0  # passages the model read only the first max-length tokens of
    positions: dict[str, int] = field(default_factory=dict)  # doc id -> source position


class DocumentEncoder:
    """Encodes batches of documents for one index; counts what it did (``encoded``, ``precomputed``,
    ``passages``, ``seconds``)."""

    def __init__(
        self,
        encoder: Encoder,
        *,
        chunking: Chunking | None = None,
        sparse: SparseEncoder | None = None,
    ) -> None:
        self.encoder = encoder
        self.chunking = chunking or Chunking("none")
        self.sparse = sparse
        self._chunker: Chunker | None = None
        self.seconds = 0.0
        self.encoded = self.precomputed = self.passages = 0

    @property
    def chunker(self) -> Chunker:
        if self._chunker is None:
            self._chunker = chunker_for(self.encoder, self.chunking)
        return self._chunker

    def encode(self, docs: Sequence[Document]) -> EncodedBatch:
        out = EncodedBatch(positions={d.doc_id: d.position for d in docs})
        if not docs:
            return out
        t = time.perf_counter()
        try:
            if docs[0].vector is not None:  # a vector field is required of every record, so all or none
                kept, vectors = list(docs), np.stack([d.vector for d in docs if d.vector is not None])
                passages = self._whole(kept, vectors) if self.chunking.splits else None
                self.precomputed += len(docs)
            else:
                kept, vectors, passages = self._encode_passages(docs, out)
            sparse = self._sparse(kept)
        finally:
            self.seconds += time.perf_counter() - t
        self.passages += sum(len(p) or 1 for p in passages) if passages else len(kept)
        out.docs = [
            IndexedDocument(
                d.doc_id,
                d.title,
                d.text,
                vectors[i],
                d.metadata,
                sparse[i],
                d.content_hash,
                passages[i] if passages else (),
            )
            for i, d in enumerate(kept)
        ]
        return out

    def _encode_passages(
        self, docs: Sequence[Document], out: EncodedBatch
    ) -> tuple[list[Document], np.ndarray, list[tuple[PassageVector, ...]]]:
        spans = (
            self.chunker.spans_batch([(d.title, d.text) for d in docs])
            if self.chunking.splits
            else [[(0, len(d.text))] for d in docs]
        )
        kept: list[Document] = []
        kept_spans: list[list[tuple[int, int]]] = []
        for doc, found in zip(docs, spans, strict=True):
            if len(found) > MAX_PASSAGES:
                out.rejects.append(
                    Reject(
                        doc.position,
                        doc.doc_id,
                        f"its text makes {len(found)} passages with chunking {self.chunking}, more than the "
                        f"{MAX_PASSAGES} one document may hold: split it into several documents or chunk in larger "
                        "windows",
                    )
                )
                continue
            kept.append(doc)
            kept_spans.append(found)
        texts = [
            doc.passage if len(found) == 1 else passage_text(doc.title, doc.text[s:e])
            for doc, found in zip(kept, kept_spans, strict=True)
            for s, e in found
        ]
        encoded = self.encoder.encode_documents(texts)  # a document of one passage reads as before chunking
        out.truncated += encoded.truncated
        self.encoded += len(kept)
        first = np.empty((len(kept), encoded.vectors.shape[1]), dtype=np.float32)
        passages: list[tuple[PassageVector, ...]] = []
        row = 0
        for i, found in enumerate(kept_spans):
            first[i] = encoded.vectors[row]
            if self.chunking.splits:
                passages.append(tuple(PassageVector(s, e, encoded.vectors[row + j]) for j, (s, e) in enumerate(found)))
            row += len(found)
        return kept, first, passages

    @staticmethod
    def _whole(docs: Sequence[Document], vectors: np.ndarray) -> list[tuple[PassageVector, ...]]:
        """One passage per document, its whole text (records that carried their own vector)."""
        return [(PassageVector(0, len(d.text), vectors[i]),) for i, d in enumerate(docs)]

    def encodes(self, fields: FieldMap) -> bool:
        """Whether records read with ``fields`` need a model: no vector field (dense encoding), or a sparse
        model and no sparse field (what ``_sparse`` then encodes). Encoding releases the GIL; nothing else
        in an ingest does for long."""
        return fields.vector_field is None or (self.sparse is not None and fields.sparse_field is None)

    def _sparse(self, docs: Sequence[Document]) -> list[dict[str, float] | None]:
        if not docs:
            return []
        if docs[0].sparse is not None:  # a sparse field is required of every record, so all or none
            return [dict(d.sparse or {}) for d in docs]
        if self.sparse is not None:
            return list(self.sparse.encode_documents([d.passage for d in docs]))
        return [None] * len(docs)
