"""``RetrievalPipeline``: a ``SearchRequest`` -> encode -> each retrieval leg -> fuse -> optional rerank -> result.

The request (``search.request``) says which legs run, how deep, how they fuse and whether to rerank; this
module runs it. Fusion happens on the server when the settings allow it and the backend says, by its
``fusion_refusal`` capability, that it can; otherwise the pipeline fuses the legs' runs in the client and
logs why once per backend and method. Every stage is timed, and with a ``QueryLog`` each result is handed
to a background writer that can never slow down or fail the search.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any, Unpack

import numpy as np

from hybrid_search.config.errors import ConfigError, FusionUnsupported
from hybrid_search.config.settings import SearchSettings
from hybrid_search.config.text import passage_text
from hybrid_search.search.fusion import normalize_minmax
from hybrid_search.search.hits import Hit, ScoredHits, SearchResult
from hybrid_search.search.interfaces import (
    QueryEncoder,
    Reranker,
    ResultRecorder,
    Retriever,
    SearchableIndex,
    SparseQueryEncoder,
)
from hybrid_search.search.request import (
    MODES,
    FusionSpec,
    Leg,
    Preset,
    SearchRequest,
    build_request,
    check_limits,
    check_query,
    parse_mode,
)

__all__ = [
    "BASE_MODES",
    "HybridSearcher",
    "RetrievalPipeline",
    "blend_rerank_scores",
    "check_limits",
    "check_query",
    "fuse_legs",
    "parse_mode",
    "rerank_hits",
]

log = logging.getLogger(__name__)

BASE_MODES = MODES


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class RetrievalPipeline:
    """Runs search requests over one index of a backend. Construction loads nothing; the encoder and
    reranker it is given are closed with it unless ``owns_parts=False`` (their owner closes them)."""

    def __init__(
        self,
        backend: Retriever,
        *,
        index: str,
        encoder: QueryEncoder | None = None,
        reranker: Reranker | None = None,
        settings: SearchSettings | None = None,
        query_log: ResultRecorder | None = None,
        owns_parts: bool = True,
        sparse_encoder: SparseQueryEncoder | None = None,
    ) -> None:
        self.backend = backend
        self.owns_parts = owns_parts
        self.index = index
        self.target = backend.open_index(index)  # the name is checked here, once
        self.encoder = encoder
        self.sparse_encoder = sparse_encoder
        self.reranker = reranker
        self.settings = settings or SearchSettings()
        self.query_log = query_log
        self._fallback_logged: set[str] = set()

    def request(self, query: str, **preset: Unpack[Preset]) -> SearchRequest:
        """The request a mode preset makes from this pipeline's settings (see ``Preset``)."""
        return build_request(self.settings, query, **preset)

    def search(self, query: str, **preset: Unpack[Preset]) -> SearchResult:
        """Search ``query`` with a mode preset (see ``Preset``): ``request`` then ``run``."""
        return self.run(self.request(query, **preset))

    def run(self, request: SearchRequest, *, index: SearchableIndex | None = None) -> SearchResult:
        """Run one request (checked against the settings' limits) over ``index`` (this pipeline's by default)."""
        check_limits(self.settings, request)
        if request.rerank is not None and self.reranker is None:
            raise ConfigError("+rerank needs a reranker: construct RetrievalPipeline with reranker=...")
        target = index or self.target
        timings: dict[str, float] = {}
        start = time.perf_counter()
        if request.needs_vector and request.vector is None:
            request = dataclasses.replace(request, vector=self._encode(request.query, timings))
        if request.needs_sparse and request.sparse_vector is None:
            request = dataclasses.replace(request, sparse_vector=self._encode_sparse(request.query, timings))
        hits, location = self._first_stage(target, request, timings)
        candidates = len(hits)
        t = time.perf_counter()
        hits = target.with_passages(hits, request)
        if hits and hits[0].passage is not None:
            timings["passages"] = _ms(t)
        if request.rerank is not None:
            t = time.perf_counter()
            hits = rerank_hits(
                self.reranker,  # type: ignore[arg-type]  # checked above
                request.query,
                hits,
                request.rerank.depth,
                interpolation=request.rerank.interpolation,
                passages=request.rerank.passages,
            )
            timings["rerank"] = _ms(t)
            if request.rerank.passages > request.passages:
                hits = [dataclasses.replace(h, passages=h.passages[: request.passages]) for h in hits]
        timings["total"] = _ms(start)
        result = SearchResult(
            query=request.query,
            mode=request.mode,
            hits=tuple(hits[request.offset : request.offset + request.top_k]),
            timings_ms=timings,
            fusion_location=location,
            total_hits=candidates,
            offset=request.offset,
            top_k=request.top_k,
        )
        if self.query_log is not None:  # never blocks, never raises
            self.query_log.record(result, top_k=request.top_k, filtered=bool(request.filters))
        return result

    # --- stages -----------------------------------------------------------------------------------
    def _encode(self, query: str, timings: dict[str, float]) -> np.ndarray:
        if self.encoder is None:
            raise ConfigError("kNN and hybrid modes need an encoder: construct RetrievalPipeline with encoder=...")
        t = time.perf_counter()
        vector = self.encoder.encode_queries([query])[0]
        timings["encode"] = _ms(t)
        return vector

    def _encode_sparse(self, query: str, timings: dict[str, float]) -> dict[str, float]:
        if self.sparse_encoder is None:
            raise ConfigError(
                "the sparse leg needs a sparse encoder: ingest with a sparse model (--sparse-model), or construct "
                "RetrievalPipeline with sparse_encoder=..."
            )
        t = time.perf_counter()
        vector = self.sparse_encoder.encode_queries([query])[0]
        timings["encode_sparse"] = _ms(t)
        return vector

    def _first_stage(
        self, index: SearchableIndex, request: SearchRequest, timings: dict[str, float]
    ) -> tuple[list[Hit], str | None]:
        depth = request.candidates
        if request.fusion is None:
            (leg,) = request.legs
            return list(self._retrieve(index, leg, timings, request)), None
        if self.settings.server_fusion and self._server_fuses(index, request):
            t = time.perf_counter()
            try:
                hits = index.search_fused(request)
            except FusionUnsupported as exc:  # refused at run time; the backend answers no from now on
                self._log_fallback(request.fusion, str(exc))
            else:
                timings["fusion"] = _ms(t)
                return hits, "server"
        # each leg's candidates as ids and scores; the fields are read for the hits the request keeps only
        scoring = index.scoring()
        runs = [(leg, self._retrieve(scoring, leg, timings, request)) for leg in request.legs]
        t = time.perf_counter()
        hits = fuse_legs(request.fusion, runs, limit=depth)
        if scoring is not index:
            hits = index.fill(hits)
        timings["fusion"] = _ms(t)
        return hits, "client"

    def _retrieve(
        self, index: SearchableIndex, leg: Leg, timings: dict[str, float], request: SearchRequest
    ) -> Sequence[Hit]:
        t = time.perf_counter()
        hits = leg.retrieve(index, request)
        timings[leg.name] = _ms(t)
        return hits

    def _server_fuses(self, index: SearchableIndex, request: SearchRequest) -> bool:
        reason = index.fusion_refusal(request)
        if reason is not None and request.fusion is not None:
            self._log_fallback(request.fusion, reason)
        return reason is None

    def _log_fallback(self, fusion: FusionSpec, reason: str) -> None:
        key = f"{self.backend.name}:{fusion.method}"
        if key not in self._fallback_logged:
            self._fallback_logged.add(key)
            log.info(
                "%s cannot fuse %s on the server (%s); fusing in the client", self.backend.name, fusion.method, reason
            )

    def warm_up(self) -> None:
        """Load the encoder and reranker now (each loads lazily on first use otherwise), so the first
        search's ``timings_ms`` measure searching, not model loading."""
        if self.encoder is not None:
            self.encoder.encode_queries(["warm up"])
        if self.reranker is not None:
            self.reranker.score("warm up", ["warm up"])

    def close(self) -> None:
        """Drain the query log and close the encoder and reranker when it owns them (never the backend)."""
        if self.query_log is not None:
            self.query_log.close()
        for part in (self.encoder, self.sparse_encoder, self.reranker) if self.owns_parts else ():
            if part is not None:
                part.close()


class HybridSearcher(RetrievalPipeline):
    """Deprecated name of ``RetrievalPipeline`` (two letters from the ``HybridSearch`` client); kept working."""


def fuse_legs(fusion: FusionSpec, runs: Sequence[tuple[Leg, Sequence[Hit]]], *, limit: int | None = None) -> list[Hit]:
    """Client-side fusion of each leg's hits into one ranked list; every hit keeps the score each leg gave
    it in ``leg_scores`` (by leg name) and in that leg's own ``Hit`` field where it has one (``bm25_score``,
    ``knn_score``; ``None`` where the leg missed it). Only the first ``limit`` fused hits are built (the
    rest would be cut: the page and the rerank depth are all a request keeps); a leg's ``ScoredHits`` are
    read as ids and scores, a hit of theirs built only for those kept."""
    pairs = [(leg, hits, _pairs(hits)) for leg, hits in runs]
    fused = fusion.fuse({leg.name: run for leg, _, run in pairs}, limit=limit)
    # each leg's position of an id (the last, as a dict keeps it), built in C from the ids
    by_leg = [(leg, hits, dict(zip(_ids(hits, run), range(len(run)), strict=True))) for leg, hits, run in pairs]
    score_fields = [leg.score_field for leg, _, _ in by_leg if leg.score_field]
    out = []
    for rank, (doc_id, score) in enumerate(fused, start=1):
        fields: dict[str, Any] = dict.fromkeys(score_fields)
        scores: dict[str, float] = {}
        base: Hit | dict[str, Any] | None = None  # the first leg's hit, or its fields where it holds ids only
        scored: Hit | None = None  # the best passage a vector chose (kNN over passages) over one by terms or none
        for leg, hits, where in by_leg:
            i = where.get(doc_id)
            if i is None:
                continue
            if isinstance(hits, ScoredHits):  # ids and scores only: no Hit is built for what it holds
                value = scores[leg.name] = hits.scores[i]
                if base is None:
                    base = {hits.score_field: value} if hits.score_field else {}
                if leg.score_field:
                    fields[leg.score_field] = value if hits.score_field == leg.score_field else None
                continue
            hit = hits[i]
            base = hit if base is None else base
            scores[leg.name] = hit.score
            if leg.score_field:
                fields[leg.score_field] = getattr(hit, leg.score_field)
            if scored is None and hit.passage is not None and hit.passage.score is not None:
                scored = hit
        if scored is not None:
            fields.update(passage=scored.passage, passages=scored.passages)
        common: dict[str, Any] = {"rank": rank, "score": score, "fusion_score": score, "leg_scores": scores} | fields
        if isinstance(base, Hit):
            out.append(dataclasses.replace(base, **common))
        else:
            out.append(Hit(doc_id=doc_id, **((base or {}) | common)))
    return out


def _ids(hits: Sequence[Hit], run: Sequence[tuple[str, float]]) -> Sequence[str]:
    return hits.ids if isinstance(hits, ScoredHits) else [doc_id for doc_id, _ in run]


def _pairs(hits: Sequence[Hit]) -> list[tuple[str, float]]:
    return hits.pairs() if isinstance(hits, ScoredHits) else [(h.doc_id, h.score) for h in hits]


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
    reranker: Reranker,
    query: str,
    hits: Sequence[Hit],
    depth: int,
    *,
    interpolation: float = 1.0,
    passages: int = 1,
) -> list[Hit]:
    """Reorder the first ``depth`` hits by cross-encoder score, interpolated with the first-stage score
    (``blend_rerank_scores``); the rest keep their order after them.

    Reranked hits take the blended score as their final ``score`` (the raw cross-encoder score at
    ``interpolation = 1``) and the raw one as ``rerank_score``; the tail keeps its previous score, so
    ``rank`` (not ``score``) is the order across the boundary. Every hit keeps the rank it had before in
    ``rank_before_rerank``, so the change the reranker made can be reported.

    A hit of an index of passages is read as its best passages (up to ``passages`` of them, each with the
    title), and scores the best of them; other hits are read whole.
    """
    head, tail = list(hits[:depth]), list(hits[depth:])
    if not head:
        return list(hits)
    owner: list[int] = []
    texts: list[str] = []
    for i, h in enumerate(head):
        read = [p.text for p in h.passages[:passages]] or [h.reads]
        texts += [passage_text(h.title, t) for t in read]
        owner += [i] * len(read)
    pair_scores = np.asarray(reranker.score(query, texts), dtype=np.float64)
    scores = np.full(len(head), -np.inf)
    np.maximum.at(scores, np.asarray(owner), pair_scores)
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
