"""The faiss side of a physical index: the HNSW graph (loaded, checked by CRC, written, rebuilt), kNN over
it with tombstones and filters as selectors (an exact pass below ``_EXACT_FILTER_LIMIT`` allowed rows), and
batched kNN and vector scans for corpus-wide jobs.

An index of fewer than ``exact_below`` vectors keeps them in a flat faiss index instead: every search is
exact, as fast as the graph's up to about that size, an ingest of a small corpus builds no graph, and no
vector file is written (the rows are read back at open: the vectors are on disk once). The graph is built
in one bulk add when the index grows past it (``_grow_graph``); a graph file is read as a graph."""

from __future__ import annotations

import contextlib
import json
import os
import re
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from hybrid_search.backends.embedded.passages import PassageRows, collapse
from hybrid_search.config.errors import (
    CorruptIndex,
    QueryError,
)
from hybrid_search.search.filters import Filter
from hybrid_search.search.hits import Hit

__all__ = ["VECTOR_FILE", "VectorSearch"]

_EXACT_FILTER_LIMIT = 20_000  # below this many allowed docs, a filtered kNN is answered exactly
_FILTER_CACHE_SIZE = 32  # distinct filters whose allowed rows are kept (a bitmap of N/8 bytes each)
VECTOR_FILE = re.compile(r"^vectors-(\d+)\.faiss$")


def _file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            crc = zlib.crc32(block, crc)
    return crc


class VectorSearch(PassageRows):
    """The HNSW graph of a physical index and the kNN searches over it."""

    def _load_vectors(self, *, tidy: bool = True) -> tuple[Any, int]:
        files = sorted(
            ((int(m.group(1)), p) for p in self.path.iterdir() if (m := VECTOR_FILE.match(p.name))),
            reverse=True,
        )
        for _upto, stale in files[1:] if tidy else ():
            with contextlib.suppress(OSError):  # tidying only: a read-only or full disk must not stop a search
                stale.unlink(missing_ok=True)
        if not files:
            return self._new_vector_index(), 0
        upto, path = files[0]
        expected = self._meta_text(f"crc:{path.name}")
        if expected is not None and str(_file_crc(path)) != expected:
            raise CorruptIndex(f"{path} does not match the checksum recorded when it was written (damaged on disk)")
        try:
            return faiss.read_index(str(path)), upto
        except RuntimeError as exc:
            raise CorruptIndex(f"{path} cannot be read by faiss ({str(exc).splitlines()[0][:200]})") from None

    def _new_vector_index(self) -> Any:
        """An empty vector index: flat (searched exactly); ``_grow_graph`` turns it into HNSW at
        ``exact_below`` entries."""
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.spec.dims))

    @property
    def is_graph(self) -> bool:
        """Whether the vectors are in an HNSW graph (else a flat index, every search exact)."""
        return isinstance(faiss.downcast_index(self.vectors.index), faiss.IndexHNSW)

    def _grow_graph(self) -> None:
        """Build the HNSW graph of a flat index that has reached ``exact_below`` entries, in one bulk add of
        the vectors it holds (ids and order kept, so positions and ``_graph_storage`` stay the same)."""
        if self.is_graph or int(self.vectors.ntotal) < max(self.exact_below, 1):
            return
        ids, stored = self._graph_storage()
        hnsw = faiss.IndexHNSWFlat(self.spec.dims, self.spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = self.spec.hnsw_ef_construction
        graph = faiss.IndexIDMap2(hnsw)
        graph.add_with_ids(np.ascontiguousarray(stored), ids)
        self.vectors = graph

    def _add_vectors(self, keys: Sequence[int], vectors: np.ndarray) -> None:
        fresh = [i for i, k in enumerate(keys) if k > self.vectors_upto]
        if not fresh:
            return
        ids, rows = self._graph_entries([keys[i] for i in fresh], vectors[fresh])
        self.vectors.add_with_ids(np.ascontiguousarray(rows, dtype=np.float32), ids)
        self.vectors_upto = max(keys[i] for i in fresh)
        self._grow_graph()

    def _write_graph(self, target: Path) -> None:
        """Write the graph under a unique temporary name, record its checksum, then rename it into place:
        a file that exists under its final name always has its checksum recorded. A flat index writes no
        file (its vectors are SQLite's rows, read back at open) and removes a graph file left from before."""
        if not self.is_graph:
            for p in self.path.iterdir():
                if VECTOR_FILE.match(p.name):
                    p.unlink(missing_ok=True)
            self.db.execute("DELETE FROM meta WHERE name LIKE 'crc:%'")
            return
        tmp = self.path / f"vectors.{os.getpid()}.tmp"
        faiss.write_index(self.vectors, str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        self._set_meta(f"crc:{target.name}", _file_crc(tmp))
        os.replace(tmp, target)
        for p in self.path.iterdir():
            if VECTOR_FILE.match(p.name) and p != target:
                p.unlink(missing_ok=True)
        self.db.execute("DELETE FROM meta WHERE name LIKE 'crc:%' AND name != ?", (f"crc:{target.name}",))

    def _rebuild_graph(self) -> None:
        fresh = self._new_vector_index()
        cursor = self.db.execute("SELECT key, vector FROM docs ORDER BY key")
        while batch := cursor.fetchmany(50_000):
            ids, rows = self._graph_entries([r[0] for r in batch], np.stack([self._vec(r[1]) for r in batch]))
            fresh.add_with_ids(np.ascontiguousarray(rows, dtype=np.float32), ids)
        self.vectors = fresh
        self._storage_ids = None
        self._grow_graph()

    def knn(
        self, vector: np.ndarray, k: int, num_candidates: int, filters: Filter | None, *, light: bool = False
    ) -> Sequence[Hit]:
        """Nearest rows of ``vector``; ``light``: ids and scores only (``RowStore.fill`` adds the rest)."""
        self._follow()
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if query.shape[1] != self.spec.dims:
            raise QueryError(f"query vector has {query.shape[1]} dims, the index has {self.spec.dims}")
        if self.spec.similarity == "cosine":
            query = query / max(float(np.linalg.norm(query)), 1e-12)
        if filters:
            allowed, selector = self._filter_selector(filters)
            if allowed is not None:
                return self._exact_knn(query[0], allowed, k, light)
        else:
            selector = self._not_dead_selector()
        return self._knn_hits(self._graph_knn(query, k, num_candidates, selector), light)

    def _graph_knn(self, query: np.ndarray, k: int, num_candidates: int, selector: Any) -> list[tuple[int, float]]:
        """(row key, score) of the ``k`` nearest documents: in an index of passages, passages are searched
        until ``k`` distinct documents are found (or the graph is exhausted), each at its best passage."""
        if not self.bits or not self._has_long_documents():  # one graph entry per document: k entries suffice
            scores, ids = self._graph_search(query, k, num_candidates, selector)
            return collapse(ids[0], scores[0], self.bits, k)
        total = max(int(self.vectors.ntotal), 1)
        wanted = min(total, 4 * k)
        while True:
            scores, ids = self._graph_search(query, wanted, max(num_candidates, wanted), selector)
            found = collapse(ids[0], scores[0], self.bits, k)
            if len(found) >= k or wanted >= total:
                return found
            wanted = min(total, 4 * wanted)

    def _graph_search(self, queries: np.ndarray, k: int, num_candidates: int, selector: Any) -> tuple[Any, Any]:
        """One search of one or many queries, of the HNSW graph or exact over a flat index; ``selector``
        limits the candidates (None: all)."""
        params: dict[str, Any] = {} if selector is None else {"sel": selector}
        with self._mutex:  # a write or a catch-up of this process may be adding to the graph
            if self.is_graph:
                params["efSearch"] = max(num_candidates, k, self.ef_search)
                hnsw_params = faiss.SearchParametersHNSW  # type: ignore[attr-defined]  # missing from faiss's stubs
                return self.vectors.search(queries, k, params=hnsw_params(**params))
            return self.vectors.search(queries, k, params=faiss.SearchParameters(**params) if params else None)

    def _exact_knn(self, query: np.ndarray, keys: Sequence[int], k: int, light: bool = False) -> Sequence[Hit]:
        """Exact inner products over the allowed rows, read from the graph's own flat storage (no copy, no
        table read); only the top ``k`` rows are then fetched."""
        if not len(keys):
            return []
        with self._mutex:  # the view into the graph's storage moves when a write grows it
            ids, stored = self._graph_storage()
            pos = self._graph_positions(ids, np.asarray(keys, dtype=np.int64))
            if not len(pos):
                return []
            sims = stored[pos] @ query
            order = np.argsort(-sims, kind="stable")
            found = collapse(ids[pos[order]], sims[order], self.bits, k)
        return self._knn_hits(found, light)

    def _graph_positions(self, ids: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Positions in the graph's storage (``ids`` ascending) of every entry of the rows ``keys``: each
        row's entries are the ids in [key << bits, (key + 1) << bits)."""
        wanted = np.unique(keys)
        lo = np.searchsorted(ids, wanted << self.bits)
        hi = np.searchsorted(ids, (wanted + 1) << self.bits)
        lens = hi - lo
        return np.arange(int(lens.sum())) + np.repeat(lo - (np.cumsum(lens) - lens), lens)

    def _graph_storage(self) -> tuple[np.ndarray, np.ndarray]:
        """(row key of each graph position, in ascending order; the vectors, a zero-copy view): rows enter
        the graph in key order, and a rebuilt graph keeps that order."""
        n = int(self.vectors.ntotal)
        if self._storage_ids is None or len(self._storage_ids) != n:
            self._storage_ids = faiss.vector_to_array(self.vectors.id_map)
        inner: Any = faiss.downcast_index(self.vectors.index)  # faiss's stubs lack storage / get_xb
        flat: Any = faiss.downcast_index(inner.storage) if isinstance(inner, faiss.IndexHNSW) else inner
        stored = faiss.rev_swig_ptr(flat.get_xb(), n * self.spec.dims).reshape(n, self.spec.dims)
        return self._storage_ids, stored

    def _knn_hits(self, found: Sequence[tuple[int, float]], light: bool = False) -> Sequence[Hit]:
        if light:
            return self._scored_hits(found, "knn")
        rows = self._rows_by("key", [key for key, _ in found])
        hits: list[Hit] = []
        for key, score in found:
            if key in rows:
                hits.append(self._hit(rows[key], len(hits) + 1, score, knn=score))
        return hits

    def _filter_selector(self, filters: Filter) -> tuple[list[int] | None, Any]:
        """The rows a filter allows: their keys when few enough for an exact search, else a faiss bitmap
        selector (one bit per row). Cached per filter until the next write, so a repeated filter costs no
        table scan and no per-query id list."""
        cache_key = json.dumps(filters, sort_keys=True, default=str)
        cached = self._filter_cache.get(cache_key)
        if cached is not None and cached[0] == self._generation:
            self._filter_cache.move_to_end(cache_key)
            return cached[1], cached[2]
        keys = self._filter_keys(filters)
        if len(keys) <= _EXACT_FILTER_LIMIT:
            entry: tuple[int, list[int] | None, Any, Any] = (self._generation, keys.tolist(), None, None)
        elif self.bits:  # passage ids are sparse: a set of the allowed rows' graph ids
            with self._mutex:
                ids = self._graph_storage()[0]
                allowed = np.ascontiguousarray(ids[self._graph_positions(ids, keys)])
            entry = (self._generation, None, faiss.IDSelectorBatch(allowed), allowed)
        else:
            bits = np.zeros(int(keys.max()) + 1, dtype=bool)
            bits[keys] = True
            bitmap = np.packbits(bits, bitorder="little")  # faiss reads bit (i & 7) of byte i >> 3
            # the selector points into ``bitmap``: the cache entry keeps both alive together
            entry = (self._generation, None, faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bitmap)), bitmap)
        self._filter_cache[cache_key] = entry
        while len(self._filter_cache) > _FILTER_CACHE_SIZE:
            self._filter_cache.popitem(last=False)
        return entry[1], entry[2]

    def _not_dead_selector(self) -> Any:
        if self._dead_selector is None or self._dead_selector[0] != self._dead_epoch:
            dead = np.asarray([r[0] for r in self.db.execute("SELECT key FROM dead")], dtype=np.int64)
            if self.bits and len(dead):  # every passage of a dead row
                with self._mutex:
                    ids = self._graph_storage()[0]
                    dead = np.ascontiguousarray(ids[self._graph_positions(ids, dead)])
            batch = faiss.IDSelectorBatch(dead) if len(dead) else None
            # the wrapped batch selector is kept alive beside the Not selector that points at it
            self._dead_selector = (self._dead_epoch, faiss.IDSelectorNot(batch) if batch else None, batch)
        return self._dead_selector[1]

    def knn_batch(self, vectors: np.ndarray, k: int, num_candidates: int) -> list[list[tuple[str, float]]]:
        """Nearest neighbours of many vectors in one faiss call (threads over queries), as (doc id, score)."""
        self._follow()
        query = np.ascontiguousarray(vectors, dtype=np.float32)
        wanted = min(4 * k, max(int(self.vectors.ntotal), 1)) if self.bits and self._has_long_documents() else k
        scores, gids = self._graph_search(query, wanted, max(num_candidates, wanted), self._not_dead_selector())
        runs = [collapse(grow, srow, self.bits, k) for grow, srow in zip(gids, scores, strict=True)]
        ids = self._ids_by_key(sorted({key for run in runs for key, _ in run}))
        return [[(ids[key], score) for key, score in run if key in ids] for run in runs]

    def iter_vectors(self, batch: int = 10_000) -> Iterable[tuple[list[str], np.ndarray]]:
        """Every stored (ids, vectors) in key order, a batch at a time."""
        cursor = self.db.execute("SELECT doc_id, vector FROM docs ORDER BY key")
        while rows := cursor.fetchmany(batch):
            yield [r[0] for r in rows], np.stack([self._vec(r[1]) for r in rows])
