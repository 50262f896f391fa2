"""Handles on one index of a backend, its name checked once when it is opened (``Backend.open_index``).

An ``IndexHandle`` answers searches, counts, stats and corpus-wide reads for its index without taking a name;
a ``BuildHandle`` adds the writes a build needs (upsert, delete, refresh). Each call goes to the backend's
name-taking method with the handle's ``CheckedName``, which ``checks_names`` does not check again: one rule
(``config.names``) and one check per handle. Like LanceDB's ``db.open_table(name)`` and haystack's store
bound to one index.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from hybrid_search.backends.base import CheckedName
from hybrid_search.search.passages import choose_by_terms

if TYPE_CHECKING:
    import numpy as np

    from hybrid_search.backends.base import Backend, BulkResult, IndexedDocument, IndexSpec, IndexStats, StoredDocument
    from hybrid_search.search.filters import Filter
    from hybrid_search.search.hits import Hit
    from hybrid_search.search.request import SearchRequest

__all__ = ["BuildHandle", "IndexHandle", "OpensIndexes"]


class IndexHandle:
    """One index or alias of ``backend``. Construction checks the name and does no I/O."""

    __slots__ = ("backend", "name")

    def __init__(self, backend: Backend, name: str) -> None:
        self.backend = backend
        self.name: str = CheckedName(name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.backend.name}:{self.name})"

    # --- retrieval ----------------------------------------------------------------------------------
    def search_bm25(self, query: str, k: int, filters: Filter | None = None) -> Sequence[Hit]:
        return self.backend.search_bm25(self.name, query, k, filters)

    def search_knn(
        self, vector: np.ndarray, k: int, num_candidates: int, filters: Filter | None = None
    ) -> Sequence[Hit]:
        return self.backend.search_knn(self.name, vector, k, num_candidates, filters)

    def search_sparse(self, vector: Mapping[str, float], k: int, filters: Filter | None = None) -> Sequence[Hit]:
        return self.backend.search_sparse(self.name, vector, k, filters)

    def fusion_refusal(self, request: SearchRequest) -> str | None:
        return self.backend.fusion_refusal(request)

    def search_fused(self, request: SearchRequest) -> list[Hit]:
        return self.backend.search_fused(self.name, request)

    def scoring(self) -> IndexHandle:
        """This index: a cluster returns each hit's fields with its score in the same request."""
        return self

    def fill(self, hits: Sequence[Hit]) -> list[Hit]:
        return list(hits)

    def with_passages(self, hits: Sequence[Hit], request: SearchRequest) -> list[Hit]:
        """Hits with their best passages, where the index holds passages: a cluster's kNN hits carry them
        (``inner_hits``); for the others, chosen by the query's terms among the spans the hit carries."""
        head, wanted, shown = request.passage_split
        out = []
        for i, hit in enumerate(hits):
            n = wanted if i < head else shown
            chosen = choose_by_terms(hit, request.query, n)
            out.append(replace(chosen, passages=chosen.passages[:n]) if len(chosen.passages) > n else chosen)
        return out

    def knn_batch(self, vectors: np.ndarray, k: int, num_candidates: int) -> list[list[tuple[str, float]]]:
        return self.backend.knn_batch(self.name, vectors, k, num_candidates)

    # --- what the index holds -----------------------------------------------------------------------
    def exists(self) -> bool:
        return self.backend.index_exists(self.name)

    def spec(self) -> IndexSpec | None:
        return self.backend.index_spec(self.name)

    def count(self) -> int:
        return self.backend.count(self.name)

    def stats(self) -> IndexStats:
        return self.backend.stats(self.name)

    def get_texts(self, doc_ids: Sequence[str]) -> dict[str, str]:
        return self.backend.get_texts(self.name, doc_ids)

    def iter_documents(self, batch: int = 1_000) -> Iterable[list[StoredDocument]]:
        return self.backend.iter_documents(self.name, batch)

    def iter_vectors(self, batch: int = 1_000) -> Iterable[tuple[list[str], np.ndarray]]:
        return self.backend.iter_vectors(self.name, batch)


class BuildHandle(IndexHandle):
    """A physical build being written: the reads of ``IndexHandle`` plus upsert, delete and refresh."""

    __slots__ = ()

    def upsert(self, docs: Sequence[IndexedDocument]) -> BulkResult:
        return self.backend.upsert(self.name, docs)

    def delete(self, doc_ids: Sequence[str]) -> int:
        return self.backend.delete(self.name, doc_ids)

    def refresh(self) -> None:
        self.backend.refresh(self.name)


class OpensIndexes:
    """``open_index`` and ``open_build`` for a backend class (written once for every engine)."""

    def open_index(self: Backend, name: str) -> IndexHandle:
        """A handle on index (or alias) ``name``; the name is checked here, once."""
        return IndexHandle(self, name)

    def open_build(self: Backend, physical: str) -> BuildHandle:
        """A handle for writing physical build ``physical`` (from ``begin_build``)."""
        return BuildHandle(self, physical)
