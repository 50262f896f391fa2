"""What the workbench does, without HTTP: searches given as JSON values (the same request the Python client
builds), each hit with its rank in every leg and its fused contribution ("why here"), judgements, and the
comparison of two settings profiles on the judged queries. ``api`` serves it; tests call it directly too.

Clients are opened once per (index, profile) and shared by every request (``HybridSearch`` is thread-safe).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybrid_search.app.workbench.judgements import JudgementStore
from hybrid_search.config.errors import ConfigError, QueryError

if TYPE_CHECKING:
    from hybrid_search.app.client import HybridSearch
    from hybrid_search.config.settings import Settings
    from hybrid_search.search.hits import Hit, SearchResult
    from hybrid_search.search.request import SearchRequest

__all__ = ["Workbench", "rbo"]

log = logging.getLogger(__name__)

_SEARCH_KEYS = {"query", "index", "mode", "top_k", "offset", "rerank", "filters", "fusion", "profile", "explain"}
_FUSION_KEYS = {"method", "k", "weights", "normalizer"}


def rbo(a: Sequence[str], b: Sequence[str], p: float = 0.9) -> float:
    """Rank-biased overlap (Webber, Moffat & Zobel 2010) of two rankings, truncated at their shorter depth
    (the lower bound ``RBO_min`` without the residual): 1 for identical lists, 0 for disjoint ones."""
    depth = min(len(a), len(b))
    if depth == 0:
        return 1.0 if not a and not b else 0.0
    seen_a: set[str] = set()
    seen_b: set[str] = set()
    overlap, total = 0, 0.0
    for d in range(1, depth + 1):
        x, y = a[d - 1], b[d - 1]
        if x == y:
            overlap += 1
        else:
            overlap += (x in seen_b) + (y in seen_a)
        seen_a.add(x)
        seen_b.add(y)
        total += p ** (d - 1) * overlap / d
    return (1 - p) * total / (1 - p**depth)


class Workbench:
    """The shared state of one served workbench: settings, profiles, open clients, judgement stores."""

    def __init__(self, settings: Settings, *, profiles: Mapping[str, str | Path] | None = None) -> None:
        self.settings = settings
        self.profiles = {name: Path(path) for name, path in (profiles or {}).items()}
        for name, path in self.profiles.items():
            if not path.is_file():
                raise ConfigError(f"profile {name!r}: {path} is not a file (give NAME=PATH of a tune profile)")
        self._clients: dict[tuple[str, str], HybridSearch] = {}
        self._lock = threading.Lock()

    # --- clients ----------------------------------------------------------------------------------
    def client(self, index: str | None = None, profile: str | None = None) -> HybridSearch:
        from hybrid_search.app.client import HybridSearch
        from hybrid_search.config.settings import load_settings

        name = index or self.settings.index.name
        key = (name, profile or "")
        with self._lock:
            if key not in self._clients:
                if profile:
                    if profile not in self.profiles:
                        raise ConfigError(f"unknown profile {profile!r}: serve with --profile {profile}=PATH")
                    base = self.settings.model_dump(exclude={"search", "index"}, exclude_unset=True)
                    settings = load_settings(self.profiles[profile], base)
                else:
                    settings = self.settings
                self._clients[key] = HybridSearch.from_settings(settings, index=name)
            return self._clients[key]

    def warm_up(self) -> None:
        """Load the served index's models now (a missing index or model is reported by the searches)."""
        try:
            hs = self.client()
            if hs.exists():
                hs.warm_up(rerank=True, dense=True)
        except Exception as exc:  # a background nicety: the searches report what is wrong
            log.info("workbench warm-up skipped: %s", exc)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for hs in clients:
            hs.close()

    def judgements(self, index: str | None = None) -> JudgementStore:
        from hybrid_search.config.names import check_user_index_name

        name = index or self.settings.index.name
        check_user_index_name(name)
        return JudgementStore(self.settings.data_dir, name)

    # --- search -----------------------------------------------------------------------------------
    def search(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """One search from its JSON value; hits as JSON, with "why here" when ``explain`` is set."""
        unknown = sorted(set(body) - _SEARCH_KEYS)
        if unknown:
            raise QueryError(f"unknown search field {unknown[0]!r}: use {', '.join(sorted(_SEARCH_KEYS))}")
        hs = self.client(body.get("index"), body.get("profile"))
        request = self._request(hs, body)
        result = hs.search(request)
        legs = self._leg_ranks(hs, request, result) if body.get("explain", True) and len(request.legs) > 1 else {}
        grades = self.judgements(hs.index).load().grades_for(request.query)
        return {
            "index": hs.index,
            "mode": request.mode,
            "profile": body.get("profile") or "",
            "query": request.query,
            "took_ms": round(result.timings_ms.get("total", sum(result.timings_ms.values())), 2),
            "next_offset": result.next_offset,
            "hits": [_hit_json(h, legs.get(h.doc_id), grades.get(h.doc_id)) for h in result.hits],
        }

    def _request(self, hs: HybridSearch, body: Mapping[str, Any]) -> SearchRequest:
        from hybrid_search.search.request import FusionSpec

        query = body.get("query")
        if not isinstance(query, str):
            raise QueryError('the search needs a query: {"query": "your words"}')
        preset = {k: body[k] for k in ("mode", "top_k", "offset", "rerank", "filters") if body.get(k) is not None}
        request = hs.request(query, **preset)
        fusion = body.get("fusion")
        if fusion is not None and request.fusion is not None:
            if not isinstance(fusion, Mapping) or set(fusion) - _FUSION_KEYS:
                raise QueryError(f"fusion takes {', '.join(sorted(_FUSION_KEYS))}")
            spec = FusionSpec.of(
                fusion.get("method", request.fusion.method),
                weights=fusion.get("weights") or dict(request.fusion.weights),
                normalizer=fusion.get("normalizer", request.fusion.normalizer),
                k=int(fusion.get("k", request.fusion.k)),
            )
            request = replace(request, fusion=spec)
        if request.filters:
            hs.check_filters(request.filters)
        return request

    def _leg_ranks(self, hs: HybridSearch, request: SearchRequest, result: SearchResult) -> dict[str, dict[str, Any]]:
        """doc id -> leg name -> (its rank in that leg alone, what that leg added to its fused score): each
        leg searched alone with the same filters to its own depth, as the fusion saw it."""
        from hybrid_search.search.fusion import NORMALIZERS

        fusion = request.fusion
        out: dict[str, dict[str, Any]] = {}
        wanted = {h.doc_id for h in result.hits}
        for leg in request.legs:
            single = replace(request, legs=(leg,), fusion=None, rerank=None, top_k=leg.depth, offset=0)
            hits = hs.search(single).hits
            if fusion is not None and fusion.method == "linear":
                normalized = NORMALIZERS[fusion.normalizer]([h.score for h in hits])
            for i, hit in enumerate(hits):
                if hit.doc_id not in wanted:
                    continue
                added = None
                if fusion is not None:
                    weight = fusion.weight(leg.name)
                    added = weight / (fusion.k + hit.rank) if fusion.method == "rrf" else weight * normalized[i]
                out.setdefault(hit.doc_id, {})[leg.name] = (hit.rank, added)
        return out

    # --- comparing profiles -------------------------------------------------------------------------
    def compare(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """nDCG@10 and Recall@100 of two profiles (``""``: the served settings) on the judged queries, and
        the paired randomisation test of their per-query nDCG@10."""
        from hybrid_search.app.evaluate import per_query_scores
        from hybrid_search.app.tune import randomization_test

        index = body.get("index")
        names = body.get("profiles")
        if not isinstance(names, list) or len(names) != 2:
            raise QueryError('compare takes {"profiles": [A, B]} (a profile name, or "" for the served settings)')
        judged = self.judgements(index).load()
        queries = {q: t for q, t in judged.queries.items() if judged.qrels.get(q)}
        if not queries:
            raise ConfigError("no judged queries yet: judge some hits first")
        rows, per_query = [], []
        for name in names:
            hs = self.client(index, name or None)
            mode = body.get("mode") or hs.settings.search.mode + ("+rerank" if hs.settings.search.rerank else "")
            run = {q: [h.doc_id for h in hs.search(text, mode=mode, top_k=100).hits] for q, text in queries.items()}
            ndcg = per_query_scores(judged.qrels, run, "ndcg@10")
            recall = per_query_scores(judged.qrels, run, "recall@100")
            per_query.append([ndcg.get(q, 0.0) for q in queries])
            rows.append(
                {
                    "profile": name or "(served settings)",
                    "mode": mode,
                    "ndcg@10": round(sum(ndcg.values()) / len(queries), 4),
                    "recall@100": round(sum(recall.values()) / len(queries), 4),
                }
            )
        p = randomization_test(per_query[0], per_query[1])
        return {"queries": len(queries), "profiles": rows, "p_value": round(p, 4), "significant": p < 0.05}


def _hit_json(hit: Hit, ranks: Mapping[str, tuple[int, float | None]] | None, grade: int | None) -> dict[str, Any]:
    ranks = ranks or {}
    return {
        "rank": hit.rank,
        "doc_id": hit.doc_id,
        "score": hit.score,
        "title": hit.title,
        "text": hit.text,
        # an index of passages: the best passage (offsets into text) that kNN or the query's terms chose
        "passage": None
        if hit.passage is None
        else {
            "index": hit.passage.index,
            "start": hit.passage.start,
            "end": hit.passage.end,
            "score": hit.passage.score,
        },
        "metadata": dict(hit.metadata),
        "leg_scores": dict(hit.leg_scores),
        "leg_ranks": {leg: rank for leg, (rank, _added) in ranks.items()},
        "contribution": {leg: round(added, 6) for leg, (_rank, added) in ranks.items() if added is not None},
        "rerank_score": hit.rerank_score,
        "rank_before_rerank": hit.rank_before_rerank,
        "grade": grade,
    }
