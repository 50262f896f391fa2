"""``EmbeddedReads``: what the embedded backend answers about an index: existence and spec, the serving
build and orphans, BM25, kNN, counts, stats and corpus-wide reads, each from the physical index the name
resolves to. The embedded engine fuses in the client; ``fusion_refusal`` says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, cast

import numpy as np

from hybrid_search.backends.base import (
    IndexSpec,
    IndexStats,
    StoredDocument,
    checks_names,
)
from hybrid_search.backends.embedded.disk import EmbeddedDisk
from hybrid_search.backends.embedded.handle import EmbeddedIndexHandle
from hybrid_search.backends.embedded.physical import PhysicalIndex
from hybrid_search.config.errors import (
    FusionUnsupported,
)
from hybrid_search.config.names import build_pattern
from hybrid_search.config.text import passage_text
from hybrid_search.search.filters import METADATA_FIELD, Filter
from hybrid_search.search.hits import Hit
from hybrid_search.search.request import SearchRequest

if TYPE_CHECKING:
    from hybrid_search.backends.base import Backend

__all__ = ["EmbeddedReads"]


class EmbeddedReads(EmbeddedDisk):
    """Reads and searches over the data directory's indexes."""

    @checks_names
    def index_exists(self, index: str) -> bool:
        return (self._path(self._physical(index)) / "spec.json").exists()

    @checks_names
    def index_spec(self, index: str) -> IndexSpec | None:
        if not self.index_exists(index):
            return None
        return PhysicalIndex.read_spec(self._path(self._physical(index)))

    @checks_names
    def serving_build(self, alias: str) -> str | None:
        physical = self._aliases().get(alias)
        if physical is not None:
            return physical
        return alias if self.index_exists(alias) else None

    def catalog(self) -> dict[str, tuple[str, ...]]:
        aliases = self._aliases()
        return {p: tuple(sorted(a for a, t in aliases.items() if t == p)) for p in sorted(self._all_physical())}

    @checks_names
    def orphan_builds(self, alias: str) -> list[str]:
        pattern = build_pattern(alias)
        served = set(self._aliases().values())
        return sorted(p for p in self._all_physical() if pattern.match(p) and p not in served)

    @checks_names
    def search_bm25(
        self, index: str, query: str, k: int, filters: Filter | None = None, *, light: bool = False
    ) -> Sequence[Hit]:
        return self._get(index).bm25(query, k, filters, light=light)

    @checks_names
    def search_knn(
        self,
        index: str,
        vector: np.ndarray,
        k: int,
        num_candidates: int,
        filters: Filter | None = None,
        *,
        light: bool = False,
    ) -> Sequence[Hit]:
        return self._get(index).knn(vector, k, num_candidates, filters, light=light)

    @checks_names
    def search_sparse(
        self, index: str, vector: Mapping[str, float], k: int, filters: Filter | None = None, *, light: bool = False
    ) -> Sequence[Hit]:
        """Exact learned-sparse search (``embedded.sparse``)."""
        return self._get(index).sparse(vector, k, filters, light=light)

    @checks_names
    def fill_hits(self, index: str, hits: Sequence[Hit]) -> list[Hit]:
        """``light`` hits with their stored fields (``RowStore.fill``)."""
        return self._get(index).fill(hits)

    @checks_names
    def passage_hits(self, index: str, hits: Sequence[Hit], request: SearchRequest) -> list[Hit]:
        """Hits with their best passages (``PassageRows.passages_for``): as many as the request shows, or
        as the reranker reads of the hits it reranks."""
        head, wanted, shown = request.passage_split
        idx = self._get(index)
        return idx.passages_for(hits[:head], request.query, request.vector, wanted) + idx.passages_for(
            hits[head:], request.query, request.vector, shown
        )

    def open_index(self, name: str) -> EmbeddedIndexHandle:
        """A handle on index (or alias) ``name`` whose fused searches fetch texts only for the hits kept."""
        return EmbeddedIndexHandle(cast("Backend", self), name)

    def fusion_refusal(self, request: SearchRequest) -> str | None:
        return "the embedded backend fuses in the client"

    def search_fused(self, index: str, request: SearchRequest) -> list[Hit]:
        raise FusionUnsupported("the embedded backend fuses in the client")

    @checks_names
    def count(self, index: str) -> int:
        return self._get(index).count()

    @checks_names
    def stats(self, index: str) -> IndexStats:
        idx = self._get(index)
        spec = idx.spec
        vector = {
            "type": "faiss IndexHNSWFlat" if idx.is_graph else f"faiss IndexFlatIP (exact below {idx.exact_below:,})",
            "dims": spec.dims,
            "metric": "inner_product",
            "similarity": spec.similarity,
            "m": spec.hnsw_m,
            "ef_construction": spec.hnsw_ef_construction,
            "ef_search": self.ef_search,
            "vectors_in_graph": idx.vectors.ntotal,
            "tombstones": idx._dead_count(),
            **({"passages": idx.passage_count(), "chunking": spec.chunking} if spec.passages else {}),
        }
        churn = idx.reclaimable()
        fields = {
            "title": f"text (tantivy, {spec.analyzer})",
            "text": f"text (tantivy, {spec.analyzer})",
            "vector": f"float32[{spec.dims}] (SQLite + faiss {'HNSW' if idx.is_graph else 'flat'})",
            METADATA_FIELD: "json (tantivy raw terms)",
            **({"passages": "spans and float32 vectors (SQLite + one graph entry each)"} if spec.passages else {}),
            **(
                {"sparse": f"token weights of {spec.sparse_model} (SQLite + exact postings)"}
                if spec.sparse_model
                else {}
            ),
        }
        return IndexStats(
            alias=index if index in self._aliases() else "",
            physical=idx.path.name,
            count=idx.count(),
            spec=spec,
            store_bytes=idx.store_bytes(),
            vector=vector,
            fields=fields,
            metadata_fields=idx.metadata_types(),
            deleted_documents=churn["deleted_documents"],
            reclaimable_bytes=churn["reclaimable_bytes"],
            last_write=idx.last_write(),
            write_generation=idx.write_generation(),
        )

    @checks_names
    def iter_vectors(self, index: str, batch: int = 10_000) -> Iterable[tuple[list[str], np.ndarray]]:
        """Stored vectors straight from disk, for corpus-wide jobs such as duplicate mining."""
        return self._get(index).iter_vectors(batch)

    @checks_names
    def iter_documents(self, index: str, batch: int = 1_000) -> Iterable[list[StoredDocument]]:
        """Stored documents straight from disk, a batch at a time (re-encoding, training, corpus statistics)."""
        return self._get(index).iter_documents(batch)

    @checks_names
    def knn_batch(self, index: str, vectors: np.ndarray, k: int, num_candidates: int) -> list[list[tuple[str, float]]]:
        """Neighbours of many vectors at once over the HNSW graph (no per-query round trips)."""
        return self._get(index).knn_batch(vectors, k, num_candidates)

    @checks_names
    def get_texts(self, index: str, doc_ids: Sequence[str]) -> dict[str, str]:
        """``title text`` of each id found."""
        rows = self._get(index)._rows_by("doc_id", list(doc_ids))
        return {doc_id: passage_text(row[2], row[3]) for doc_id, row in rows.items()}
