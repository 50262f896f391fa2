"""Index handles of the embedded backend: ``scoring()`` searches that return ids and scores only, and
``fill`` for the few hits a fused search keeps, so a hybrid search reads the texts of its page (or rerank
depth), not of every candidate of every leg."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, cast

from hybrid_search.backends.handles import IndexHandle

if TYPE_CHECKING:
    import numpy as np

    from hybrid_search.backends.embedded.reads import EmbeddedReads
    from hybrid_search.search.filters import Filter
    from hybrid_search.search.hits import Hit
    from hybrid_search.search.request import SearchRequest

__all__ = ["EmbeddedIndexHandle", "ScoringHandle"]


class EmbeddedIndexHandle(IndexHandle):
    """An embedded index: ``IndexHandle`` plus light scoring and ``fill``."""

    __slots__ = ()

    @property
    def _embedded(self) -> EmbeddedReads:
        return cast("EmbeddedReads", self.backend)

    def scoring(self) -> ScoringHandle:
        return ScoringHandle(self.backend, self.name)

    def fill(self, hits: Sequence[Hit]) -> list[Hit]:
        return self._embedded.fill_hits(self.name, hits)

    def with_passages(self, hits: Sequence[Hit], request: SearchRequest) -> list[Hit]:
        return self._embedded.passage_hits(self.name, hits, request)


class ScoringHandle(EmbeddedIndexHandle):
    """The same index, its searches answering ids and scores only (``fill`` adds the fields)."""

    __slots__ = ()

    def scoring(self) -> ScoringHandle:
        return self

    def search_bm25(self, query: str, k: int, filters: Filter | None = None) -> Sequence[Hit]:
        return self._embedded.search_bm25(self.name, query, k, filters, light=True)

    def search_knn(
        self, vector: np.ndarray, k: int, num_candidates: int, filters: Filter | None = None
    ) -> Sequence[Hit]:
        return self._embedded.search_knn(self.name, vector, k, num_candidates, filters, light=True)

    def search_sparse(self, vector: Mapping[str, float], k: int, filters: Filter | None = None) -> Sequence[Hit]:
        return self._embedded.search_sparse(self.name, vector, k, filters, light=True)
