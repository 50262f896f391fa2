"""What searching needs from the parts around it, as small protocols the searcher owns.

Storage backends (``hybrid_search.backends``) implement ``Retriever`` and open ``SearchableIndex`` handles;
the bi-encoder (``hybrid_search.encoding``) satisfies ``QueryEncoder``; the cross-encoder
(``hybrid_search.rerank``) satisfies ``Reranker``. Declaring them here keeps ``search`` independent of all
three: it imports only ``config``, and the packages that implement these protocols depend on ``search``,
never the reverse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from hybrid_search.search.filters import Filter
from hybrid_search.search.hits import Hit, SearchResult
from hybrid_search.search.request import FusionSpec

if TYPE_CHECKING:
    import numpy as np

    from hybrid_search.search.request import SearchRequest

__all__ = [
    "QueryEncoder",
    "Reranker",
    "ResultRecorder",
    "Retriever",
    "SearchableIndex",
    "ServerFusion",
    "SparseQueryEncoder",
]


@dataclass(frozen=True, slots=True)
class ServerFusion:
    """Deprecated: the two-leg fusion parameters of ``search_hybrid``; ``FusionSpec`` replaces it."""

    method: Literal["rrf", "linear"]
    rrf_k: int = 60
    normalizer: Literal["minmax", "zscore", "l2"] = "minmax"
    bm25_weight: float = 0.5
    knn_weight: float = 0.5

    def spec(self) -> FusionSpec:
        return FusionSpec.of(
            self.method,
            weights={"bm25": self.bm25_weight, "knn": self.knn_weight},
            normalizer=self.normalizer,
            k=self.rrf_k,
        )


@runtime_checkable
class SearchableIndex(Protocol):
    """One index of a backend, bound by name when it was opened: what a retrieval leg searches."""

    name: str

    def search_bm25(self, query: str, k: int, filters: Filter | None = None) -> Sequence[Hit]: ...

    def search_knn(
        self, vector: np.ndarray, k: int, num_candidates: int, filters: Filter | None = None
    ) -> Sequence[Hit]: ...

    def search_sparse(self, vector: Mapping[str, float], k: int, filters: Filter | None = None) -> Sequence[Hit]: ...

    def fusion_refusal(self, request: SearchRequest) -> str | None: ...

    def search_fused(self, request: SearchRequest) -> list[Hit]: ...

    def scoring(self) -> SearchableIndex:
        """The same index answering with ids and scores only (no title, text or metadata) where the engine
        can fetch those afterwards for the few hits kept (``fill``); the index itself otherwise."""

    def fill(self, hits: Sequence[Hit]) -> list[Hit]:
        """``scoring`` hits with their stored title, text and metadata, in order, ranked again from 1 (a
        document deleted since it was scored is left out); hits that have them are returned as they are."""

    def with_passages(self, hits: Sequence[Hit], request: SearchRequest) -> list[Hit]:
        """Filled hits with their best passages (``Hit.passage``) where the index holds passages of long
        documents; the hits as they are otherwise."""


@runtime_checkable
class Retriever(Protocol):
    """First-stage retrieval over one index (an alias or a physical index): one leg at a time, or a whole
    fused request where the engine can fuse on the server (``fusion_refusal`` says whether)."""

    name: str

    def open_index(self, name: str) -> SearchableIndex:
        """A handle on index (or alias) ``name``, checked once here: its calls take no name."""

    def search_bm25(self, index: str, query: str, k: int, filters: Filter | None = None) -> Sequence[Hit]:
        """BM25 over title and text; user text is never parsed as query syntax."""

    def search_knn(
        self, index: str, vector: np.ndarray, k: int, num_candidates: int, filters: Filter | None = None
    ) -> Sequence[Hit]:
        """Approximate nearest neighbours of ``vector``, nearest first; ``filters`` restricts the candidates."""

    def search_sparse(
        self, index: str, vector: Mapping[str, float], k: int, filters: Filter | None = None
    ) -> Sequence[Hit]:
        """Learned-sparse retrieval: highest dot product of ``vector`` (token -> weight) with the stored ones."""

    def fusion_refusal(self, request: SearchRequest) -> str | None:
        """``None`` when this engine can fuse ``request``'s legs on the server; otherwise why not (the caller
        then fuses in the client). A capability: asking never raises for a normal request."""

    def search_fused(self, index: str, request: SearchRequest) -> list[Hit]:
        """The request's legs fused on the server, ``request.candidates`` deep. Only asked after
        ``fusion_refusal`` said yes; a server that refuses at run time raises ``FusionUnsupported`` once
        and is refused by ``fusion_refusal`` from then on."""


class QueryEncoder(Protocol):
    """Turns queries into vectors of the index's model."""

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray: ...

    def close(self) -> None: ...


class SparseQueryEncoder(Protocol):
    """Turns queries into learned-sparse vectors (token -> weight) of the index's sparse model."""

    def encode_queries(self, queries: Sequence[str]) -> list[dict[str, float]]: ...

    def close(self) -> None: ...


class Reranker(Protocol):
    """Scores passages against a query; higher is more relevant."""

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray: ...

    def close(self) -> None: ...


class ResultRecorder(Protocol):
    """Takes each result for the query log; must never block or raise."""

    def record(self, result: SearchResult, *, top_k: int | None = None, filtered: bool = False) -> None: ...

    def close(self) -> object: ...
