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

import numpy as np

from hybrid_search.config.errors import ConfigError, FusionUnsupported, QueryError
from hybrid_search.config.settings import SearchSettings
from hybrid_search.search.filters import Filter
from hybrid_search.search.fusion import fuse, normalize_minmax
from hybrid_search.search.hits import Hit, SearchResult
from hybrid_search.search.interfaces import QueryEncoder, Reranker, ResultRecorder, Retriever, ServerFusion

__all__ = [
    "BASE_MODES",
    "HybridSearcher",
    "blend_rerank_scores",
    "check_limits",
    "check_query",
    "parse_mode",
    "rerank_hits",
]

log = logging.getLogger(__name__)

BASE_MODES = ("bm25", "knn", "hybrid")


def parse_mode(mode: str) -> tuple[str, bool]:
    """``"hybrid+rerank"`` -> ``("hybrid", True)``; raises ``ConfigError`` for anything unknown."""
    base, plus, suffix = mode.strip().lower().partition("+")
    if base not in BASE_MODES or (plus and suffix != "rerank"):
        raise ConfigError(f"unknown mode {mode!r}: use bm25, knn or hybrid, each optionally with +rerank")
    return base, suffix == "rerank"


def check_query(query: str, max_chars: int | None = None) -> None:
    """An empty, blank, oversized or non-UTF-8 query is an error: kNN would otherwise return arbitrary
    nearest neighbours, a huge one would hold a core for seconds, and lone surrogates cannot be encoded."""
    if not isinstance(query, str):
        raise QueryError(f"the query must be text, not {type(query).__name__}")
    if not query.strip():
        raise QueryError("the query is empty: give some words to search for")
    if max_chars is not None and len(query) > max_chars:
        raise QueryError(
            f"the query has {len(query):,} characters, over search.max_query_chars = {max_chars:,}: shorten it"
        )
    try:
        query.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryError("the query is not valid UTF-8 text (undecodable bytes): give it as UTF-8") from None


def check_limits(settings: SearchSettings, *, top_k: int, rerank_depth: int | None) -> None:
    """``QueryError`` when one request asks for more than the settings' hard bounds allow."""
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise QueryError(f"top_k must be a positive whole number, got {top_k!r}")
    if top_k > settings.max_top_k:
        raise QueryError(
            f"top_k {top_k:,} is over search.max_top_k = {settings.max_top_k:,}: page through results instead, "
            "or raise the limit in the settings"
        )
    if rerank_depth is not None and rerank_depth > settings.max_rerank_depth:
        raise QueryError(
            f"rerank depth {rerank_depth:,} is over search.max_rerank_depth = {settings.max_rerank_depth:,} "
            "(each reranked hit is a cross-encoder pass): lower it or raise the limit"
        )


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class HybridSearcher:
    """Runs the retrieval pipeline over one index of a backend. Construction loads nothing."""

    def __init__(
        self,
        backend: Retriever,
        *,
        index: str,
        encoder: QueryEncoder | None = None,
        reranker: Reranker | None = None,
        settings: SearchSettings | None = None,
        query_log: ResultRecorder | None = None,
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
        filters: Filter | None = None,
        vector: np.ndarray | None = None,
    ) -> SearchResult:
        """Search ``query``. ``mode`` may carry ``+rerank``; ``rerank`` overrides the settings' default.

        ``vector`` is the query's embedding when the caller already has it (it skips the encode stage).
        """
        if vector is None or query:
            check_query(query, self.settings.max_query_chars)
        base, rerank_in_mode = parse_mode(mode or self.settings.mode)
        do_rerank = rerank_in_mode or (self.settings.rerank if rerank is None else rerank)
        top_k = self.settings.top_k if top_k is None else top_k
        depth = max(top_k, self.settings.rerank_depth) if do_rerank else top_k
        check_limits(self.settings, top_k=top_k, rerank_depth=depth if do_rerank else None)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        location = None
        if base == "bm25":
            hits = self._bm25(query, depth, filters, timings)
        else:
            dense = vector if vector is not None else self._encode(query, timings)
            if base == "knn":
                hits = self._knn(dense, depth, filters, timings)
            else:
                hits, location = self._hybrid(query, dense, depth, filters, timings)
        candidates = len(hits)
        if do_rerank:
            hits = self._rerank(query, hits, timings)
        timings["total"] = _ms(start)
        label = base + ("+rerank" if do_rerank else "")
        result = SearchResult(
            query=query,
            mode=label,
            hits=tuple(hits[:top_k]),
            timings_ms=timings,
            fusion_location=location,
            total_hits=candidates,
        )
        if self.query_log is not None:
            self.query_log.record(result, top_k=top_k, filtered=bool(filters))  # never blocks, never raises
        return result

    # --- stages -----------------------------------------------------------------------------------
    def _encode(self, query: str, timings: dict[str, float]) -> np.ndarray:
        if self.encoder is None:
            raise ConfigError("kNN and hybrid modes need an encoder: construct HybridSearcher with encoder=...")
        t = time.perf_counter()
        vector = self.encoder.encode_queries([query])[0]
        timings["encode"] = _ms(t)
        return vector

    def _bm25(self, query: str, k: int, filters: Filter | None, timings: dict[str, float]) -> list[Hit]:
        t = time.perf_counter()
        hits = self.backend.search_bm25(self.index, query, k, filters)
        timings["bm25"] = _ms(t)
        return hits

    def _knn(self, vector: np.ndarray, k: int, filters: Filter | None, timings: dict[str, float]) -> list[Hit]:
        t = time.perf_counter()
        hits = self.backend.search_knn(self.index, vector, k, max(self.settings.num_candidates, k), filters)
        timings["knn"] = _ms(t)
        return hits

    def _hybrid(
        self, query: str, vector: np.ndarray, k: int, filters: Filter | None, timings: dict[str, float]
    ) -> tuple[list[Hit], str]:
        s = self.settings
        bm25_depth, knn_depth = max(s.bm25_depth, k), max(s.knn_depth, k)
        if s.server_fusion:
            fusion = ServerFusion(
                method=s.fusion,
                rrf_k=s.rrf_k,
                normalizer=s.normalizer,
                bm25_weight=s.bm25_weight,
                knn_weight=s.knn_weight,
            )
            t = time.perf_counter()
            try:
                hits = self.backend.search_hybrid(
                    self.index,
                    query,
                    vector,
                    k,
                    bm25_depth=bm25_depth,
                    knn_depth=knn_depth,
                    num_candidates=max(s.num_candidates, knn_depth),
                    fusion=fusion,
                    filters=filters,
                )
                timings["fusion"] = _ms(t)
                return hits, "server"
            except FusionUnsupported as exc:
                self._log_fallback(s.fusion, exc)
        lexical = self._bm25(query, bm25_depth, filters, timings)
        dense = self._knn(vector, knn_depth, filters, timings)
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
            out.append(
                dataclasses.replace(
                    b or by_id_knn[doc_id],
                    rank=rank,
                    score=score,
                    fusion_score=score,
                    bm25_score=b.bm25_score if b else None,
                    knn_score=v.knn_score if v else None,
                )
            )
        return out

    def _rerank(self, query: str, hits: list[Hit], timings: dict[str, float]) -> list[Hit]:
        if self.reranker is None:
            raise ConfigError("+rerank needs a reranker: construct HybridSearcher with reranker=...")
        t = time.perf_counter()
        out = rerank_hits(
            self.reranker, query, hits, self.settings.rerank_depth, interpolation=self.settings.rerank_interpolation
        )
        timings["rerank"] = _ms(t)
        return out

    def _log_fallback(self, method: str, exc: Exception) -> None:
        key = f"{self.backend.name}:{method}"
        if key not in self._fallback_logged:
            self._fallback_logged.add(key)
            log.info("%s cannot fuse %s on the server (%s); fusing in the client", self.backend.name, method, exc)

    def warm_up(self) -> None:
        """Load the encoder and reranker now (each loads lazily on first use otherwise), so the first
        search's ``timings_ms`` measure searching, not model loading."""
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


def _passage(hit: Hit) -> str:
    return f"{hit.title} {hit.text}".strip()


def blend_rerank_scores(first: Sequence[float], rerank: np.ndarray, interpolation: float) -> np.ndarray:
    """The score the reranked head is ordered by: ``a * minmax(rerank) + (1 - a) * minmax(first)``.

    At ``a = 1`` it is the cross-encoder's raw score (the reranker alone decides, as without interpolation);
    at ``a = 0`` the first-stage order stands. Min-max with the zero-range guard of ``search.fusion``, so a
    reranker can be mixed in without ever having to be trusted alone (``tune`` chooses ``a``).
    """
    ce = np.asarray(rerank, dtype=np.float64)
    if interpolation >= 1.0:
        return ce
    norm_ce = np.asarray(normalize_minmax([float(x) for x in ce]))
    norm_first = np.asarray(normalize_minmax([float(x) for x in first]))
    return interpolation * norm_ce + (1.0 - interpolation) * norm_first


def rerank_hits(
    reranker: Reranker, query: str, hits: Sequence[Hit], depth: int, *, interpolation: float = 1.0
) -> list[Hit]:
    """Reorder the first ``depth`` hits by cross-encoder score, interpolated with the first-stage score
    (``blend_rerank_scores``); the rest keep their order after them.

    Reranked hits take the blended score as their final ``score`` (the raw cross-encoder score at
    ``interpolation = 1``) and the raw one as ``rerank_score``; the tail keeps its previous score, so
    ``rank`` (not ``score``) is the order across the boundary. Every hit keeps the rank it had before in
    ``rank_before_rerank``, so the change the reranker made can be reported.
    """
    head, tail = list(hits[:depth]), list(hits[depth:])
    if not head:
        return list(hits)
    scores = reranker.score(query, [_passage(h) for h in head])
    final = blend_rerank_scores([h.score for h in head], scores, interpolation)
    order = sorted(range(len(head)), key=lambda i: (-float(final[i]), head[i].rank))
    reranked = [
        dataclasses.replace(
            head[i], rank=r, score=float(final[i]), rerank_score=float(scores[i]), rank_before_rerank=head[i].rank
        )
        for r, i in enumerate(order, start=1)
    ]
    return reranked + [
        dataclasses.replace(h, rank=len(head) + r, rank_before_rerank=h.rank) for r, h in enumerate(tail, start=1)
    ]
