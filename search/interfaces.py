"""What searching needs from the parts around it, as small protocols the searcher owns.

Storage backends (``hybrid_search.backends``) implement ``Retriever``; the bi-encoder
(``hybrid_search.encoding``) satisfies ``QueryEncoder``; the cross-encoder (``hybrid_search.rerank``)
satisfies ``Reranker``. Declaring them here keeps ``search`` independent of all three: it imports only
``config``, and the packages that implement these protocols depend on ``search``, never the reverse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from hybrid_search.search.filters import Filter
from hybrid_search.search.hits import Hit, SearchResult

if TYPE_CHECKING:
    import numpy as np

__all__ = ["QueryEncoder", "Reranker", "ResultRecorder", "Retriever", "ServerFusion"]


@dataclass(frozen=True, slots=True)
class ServerFusion:
    """A request for fusion on the server: the method and its parameters, as the searcher would do it."""

    method: Literal["rrf", "linear"]
    rrf_k: int = 60
    normalizer: Literal["minmax", "zscore", "l2"] = "minmax"
    bm25_weight: float = 0.5
    knn_weight: float = 0.5


@runtime_checkable
class Retriever(Protocol):
    """First-stage retrieval over one index (an alias or a physical index)."""

    name: str

    def search_bm25(self, index: str, query: str, k: int, filters: Filter | None = None) -> list[Hit]:
        """BM25 over title and text; user text is never parsed as query syntax."""

    def search_knn(
        self, index: str, vector: np.ndarray, k: int, num_candidates: int, filters: Filter | None = None
    ) -> list[Hit]:
        """Approximate nearest neighbours of ``vector``, nearest first; ``filters`` restricts the candidates."""

    def search_hybrid(
        self,
        index: str,
        query: str,
        vector: np.ndarray,
        k: int,
        *,
        bm25_depth: int,
        knn_depth: int,
        num_candidates: int,
        fusion: ServerFusion,
        filters: Filter | None = None,
    ) -> list[Hit]:
        """Server-side fusion; raises ``FusionUnsupported`` when the engine cannot, so the caller fuses."""


class QueryEncoder(Protocol):
    """Turns queries into vectors of the index's model."""

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray: ...

    def close(self) -> None: ...


class Reranker(Protocol):
    """Scores passages against a query; higher is more relevant."""

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray: ...

    def close(self) -> None: ...


class ResultRecorder(Protocol):
    """Takes each result for the query log; must never block or raise."""

    def record(self, result: SearchResult, *, top_k: int | None = None, filtered: bool = False) -> None: ...

    def close(self) -> object: ...
