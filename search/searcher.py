"""``HybridSearcher``: query -> encode -> BM25 and kNN -> fuse -> optional rerank -> typed results.

Modes are ``bm25``, ``knn`` and ``hybrid``, each optionally ``+rerank``. Hybrid fusion runs on the server
when the backend can do it and the settings allow it; when the backend raises ``FusionUnsupported`` the
searcher fuses in the client and logs that once per backend and method. Every stage is timed, and with a
``QueryLog`` each result is handed to a background writer that can never slow down or fail the search.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from config.errors import ConfigError, FusionUnsupported
from config.settings import SearchSettings
from search.backend import Backend, ServerFusion
from search.filters import Filter
from search.fusion import fuse
from search.hits import Hit, SearchResult

if TYPE_CHECKING:
    import numpy as np

    from ingest.encoder import Encoder
    from rerank.cross_encoder import Reranker
    from search.logs import QueryLog

__all__ = ["BASE_MODES", "HybridSearcher", "parse_mode"]

log = logging.getLogger(__name__)

BASE_MODES = ("bm25", "knn", "hybrid")


def parse_mode(mode: str) -> tuple[str, bool]:
    """``"hybrid+rerank"`` -> ``("hybrid", True)``; raises ``ConfigError`` for anything unknown."""
    base, plus, suffix = mode.strip().lower().partition("+")
    if base not in BASE_MODES or (plus and suffix != "rerank"):
        raise ConfigError(f"unknown mode {mode!r}: use bm25, knn or hybrid, each optionally with +rerank")
    return base, suffix == "rerank"


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class HybridSearcher:
    """Runs the retrieval pipeline over one index of a backend. Construction loads nothing."""

    def __init__(
        self,
        backend: Backend,
        *,
        index: str,
        encoder: Encoder | None = None,
        reranker: Reranker | None = None,
        settings: SearchSettings | None = None,
        query_log: QueryLog | None = None,
    ) -> None:
        self.backend = backend
        self.index = index
        self.encoder = encoder
        self.reranker = reranker
        self.settings = settings or SearchSettings()
        self.query_log = query_log
        self._fallback_logged: set[str] = set()

    def search(
        self,
        query: str,
        *,
        mode: str | None = None,
        top_k: int | None = None,
        rerank: bool | None = None,
        flt: Filter | None = None,
        vector: np.ndarray | None = None,
    ) -> SearchResult:
        """Search ``query``. ``mode`` may carry ``+rerank``; ``rerank`` overrides the settings' default.

        ``vector`` is the query's embedding when the caller already has it (it skips the encode stage).
        """
        base, rerank_in_mode = parse_mode(mode or self.settings.mode)
        do_rerank = rerank_in_mode or (self.settings.rerank if rerank is None else rerank)
        top_k = top_k or self.settings.top_k
        depth = max(top_k, self.settings.rerank_depth) if do_rerank else top_k
        timings: dict[str, float] = {}
        start = time.perf_counter()
        if base != "bm25" and vector is None:
            vector = self._encode(query, timings)
        location = None
        if base == "bm25":
            hits = self._bm25(query, depth, flt, timings)
        elif base == "knn":
            hits = self._knn(vector, depth, flt, timings)
        else:
            hits, location = self._hybrid(query, vector, depth, flt, timings)
        candidates = len(hits)
        if do_rerank:
            hits = self._rerank(query, hits, timings)
        timings["total"] = _ms(start)
        label = base + ("+rerank" if do_rerank else "")
        result = SearchResult(query=query, mode=label, hits=tuple(hits[:top_k]), timings_ms=timings,
                              fusion_location=location, total_hits=candidates)
        if self.query_log is not None:
            self.query_log.record(result, top_k=top_k, filtered=bool(flt))  # never blocks, never raises
        return result

    # --- stages -----------------------------------------------------------------------------------
    def _encode(self, query: str, timings: dict[str, float]) -> np.ndarray:
        if self.encoder is None:
            raise ConfigError("kNN and hybrid modes need an encoder: construct HybridSearcher with encoder=...")
        t = time.perf_counter()
        vector = self.encoder.encode_queries([query])[0]
        timings["encode"] = _ms(t)
        return vector

    def _bm25(self, query: str, k: int, flt: Filter | None, timings: dict[str, float]) -> list[Hit]:
        t = time.perf_counter()
        hits = self.backend.search_bm25(self.index, query, k, flt)
        timings["bm25"] = _ms(t)
        return hits

    def _knn(self, vector: np.ndarray, k: int, flt: Filter | None, timings: dict[str, float]) -> list[Hit]:
        t = time.perf_counter()
        hits = self.backend.search_knn(self.index, vector, k, max(self.settings.num_candidates, k), flt)
        timings["knn"] = _ms(t)
        return hits

    def _hybrid(
        self, query: str, vector: np.ndarray, k: int, flt: Filter | None, timings: dict[str, float]
    ) -> tuple[list[Hit], str]:
        s = self.settings
        bm25_depth, knn_depth = max(s.bm25_depth, k), max(s.knn_depth, k)
        if s.server_fusion:
            fusion = ServerFusion(method=s.fusion, rrf_k=s.rrf_k, normalizer=s.normalizer,
                                  bm25_weight=s.bm25_weight, knn_weight=s.knn_weight)
            t = time.perf_counter()
            try:
                hits = self.backend.search_hybrid(
                    self.index, query, vector, k, bm25_depth=bm25_depth, knn_depth=knn_depth,
                    num_candidates=max(s.num_candidates, knn_depth), fusion=fusion, flt=flt,
                )
                timings["fusion"] = _ms(t)
                return hits, "server"
            except FusionUnsupported as exc:
                self._log_fallback(s.fusion, exc)
        lexical = self._bm25(query, bm25_depth, flt, timings)
        dense = self._knn(vector, knn_depth, flt, timings)
        t = time.perf_counter()
        hits = self.fuse_hits(lexical, dense)[:k]
        timings["fusion"] = _ms(t)
        return hits, "client"

    def fuse_hits(self, lexical: Sequence[Hit], dense: Sequence[Hit]) -> list[Hit]:
        """Client-side fusion of a BM25 and a kNN hit list into one ranked list with every stage's score."""
        s = self.settings
        runs = [[(h.doc_id, h.score) for h in lexical], [(h.doc_id, h.score) for h in dense]]
        weights = [s.bm25_weight, s.knn_weight]
        if s.fusion == "rrf":
            fused = fuse("rrf", runs, k=s.rrf_k, weights=None if weights[0] == weights[1] else weights)
        else:
            fused = fuse("linear", runs, weights=weights, normalizer=s.normalizer)
        by_id_bm25 = {h.doc_id: h for h in lexical}
        by_id_knn = {h.doc_id: h for h in dense}
        out = []
        for rank, (doc_id, score) in enumerate(fused, start=1):
            b, v = by_id_bm25.get(doc_id), by_id_knn.get(doc_id)
            out.append(dataclasses.replace(
                b or by_id_knn[doc_id], rank=rank, score=score, fusion_score=score,
                bm25_score=b.bm25_score if b else None, knn_score=v.knn_score if v else None,
            ))
        return out

    def _rerank(self, query: str, hits: list[Hit], timings: dict[str, float]) -> list[Hit]:
        if self.reranker is None:
            raise ConfigError("+rerank needs a reranker: construct HybridSearcher with reranker=...")
        from rerank.cross_encoder import rerank_hits

        t = time.perf_counter()
        out = rerank_hits(self.reranker, query, hits, self.settings.rerank_depth)
        timings["rerank"] = _ms(t)
        return out

    def _log_fallback(self, method: str, exc: Exception) -> None:
        key = f"{self.backend.name}:{method}"
        if key not in self._fallback_logged:
            self._fallback_logged.add(key)
            log.info("%s cannot fuse %s on the server (%s); fusing in the client", self.backend.name, method, exc)

    def warm_up(self) -> None:
        """Load the encoder and reranker now (each loads lazily on first use otherwise)."""
        if self.encoder is not None:
            self.encoder.encode_queries(["warm up"])
        if self.reranker is not None:
            self.reranker.score("warm up", ["warm up"])

    def close(self) -> None:
        """Drain the query log and close the encoder and reranker (not the backend, which the caller owns)."""
        if self.query_log is not None:
            self.query_log.close()
        for part in (self.encoder, self.reranker):
            if part is not None:
                part.close()
