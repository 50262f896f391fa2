"""Retrieval evaluation: nDCG@10, Recall@100 and MRR@10 per mode, with latency percentiles.

Metrics come from ``ir-measures`` (pytrec_eval underneath), not from code of our own. Runs are scored by
rank (1/rank), so the reranker's head and the fused tail compare correctly. BEIR's ``ignore_identical_ids``
is on by default: a document whose id equals the query id is removed before scoring (Quora's queries are
also corpus documents, and would otherwise find themselves).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hybrid_search.config.errors import ConfigError
from hybrid_search.search.request import parse_mode
from hybrid_search.search.searcher import RetrievalPipeline

if TYPE_CHECKING:
    from hybrid_search.app.client import HybridSearch

__all__ = ["METRICS", "EvalReport", "ModeReport", "evaluate", "per_query_scores", "score_run", "select_queries"]

log = logging.getLogger(__name__)

METRICS = ("ndcg@10", "recall@100", "mrr@10")
TUNED = "tuned"  # the row of a tuned profile: the settings' mode, rerank and fusion as they stand
RUN_DEPTH = 100


@dataclass(frozen=True, slots=True)
class ModeReport:
    metrics: Mapping[str, float]
    latency_p50_ms: float
    latency_p95_ms: float
    queries: int

    def to_dict(self) -> dict[str, Any]:
        return {
            **{k: round(v, 4) for k, v in self.metrics.items()},
            "latency_ms": {"p50": round(self.latency_p50_ms, 2), "p95": round(self.latency_p95_ms, 2)},
            "queries": self.queries,
        }


@dataclass(frozen=True, slots=True)
class EvalReport:
    modes: Mapping[str, ModeReport]
    settings: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"modes": {m: r.to_dict() for m, r in self.modes.items()}, "settings": dict(self.settings)}

    def table(self) -> str:
        head = f"{'mode':<16}{'nDCG@10':>9}{'R@100':>9}{'MRR@10':>9}{'p50 ms':>9}{'p95 ms':>9}{'queries':>9}"
        lines = [head, "-" * len(head)]
        for mode, r in self.modes.items():
            m = r.metrics
            lines.append(
                f"{mode:<16}{m['ndcg@10']:>9.4f}{m['recall@100']:>9.4f}{m['mrr@10']:>9.4f}"
                f"{r.latency_p50_ms:>9.1f}{r.latency_p95_ms:>9.1f}{r.queries:>9d}"
            )
        return "\n".join(lines)


def score_run(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Sequence[str]], *, ignore_identical_ids: bool = True
) -> dict[str, float]:
    """Mean nDCG@10, Recall@100 and MRR@10 of ``run`` (query id -> doc ids, best first) over its queries.

    Queries with no relevant document in ``qrels`` are not counted; a query with an empty run scores 0.
    """
    import ir_measures
    from ir_measures import RR, R, nDCG

    judged = {q: dict(d) for q, d in qrels.items() if q in run and any(g > 0 for g in d.values())}
    scored: dict[str, dict[str, float]] = {}
    for qid in judged:
        scored[qid] = _ranked_scores(run[qid], qid, ignore_identical_ids)
    if not judged:
        return {m: 0.0 for m in METRICS}
    measures = [nDCG @ 10, R @ 100, RR @ 10]
    totals = {m: 0.0 for m in measures}
    for metric in ir_measures.iter_calc(measures, judged, scored):
        totals[metric.measure] += metric.value
    names = dict(zip(measures, METRICS, strict=True))
    return {names[m]: totals[m] / len(judged) for m in measures}  # empty runs count as zeros


def per_query_scores(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Sequence[str]],
    metric: str = "ndcg@10",
    *,
    ignore_identical_ids: bool = True,
) -> dict[str, float]:
    """``metric`` (one of ``METRICS``) of each judged query in ``run``, scored exactly as ``score_run``."""
    import ir_measures
    from ir_measures import RR, R, nDCG

    measure = {"ndcg@10": nDCG @ 10, "recall@100": R @ 100, "mrr@10": RR @ 10}.get(metric)
    if measure is None:
        raise ConfigError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    judged = {q: dict(d) for q, d in qrels.items() if q in run and any(g > 0 for g in d.values())}
    scored = {q: _ranked_scores(run[q], q, ignore_identical_ids) for q in judged}
    out = dict.fromkeys(judged, 0.0)  # an empty run scores 0
    out.update({m.query_id: float(m.value) for m in ir_measures.iter_calc([measure], judged, scored)})
    return out


def _ranked_scores(docs: Sequence[str], qid: str, ignore_identical_ids: bool) -> dict[str, float]:
    kept = [d for d in docs if not (ignore_identical_ids and d == qid)]
    return {d: 1.0 / rank for rank, d in enumerate(kept[:RUN_DEPTH], start=1)}


def select_queries(
    queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], max_queries: int | None
) -> list[tuple[str, str]]:
    """Judged queries in source order, the first ``max_queries`` of them."""
    chosen = [(qid, text) for qid, text in queries.items() if qid in qrels and any(g > 0 for g in qrels[qid].values())]
    return chosen[:max_queries] if max_queries else chosen


def evaluate(
    searcher: RetrievalPipeline,
    queries: Sequence[tuple[str, str]],
    qrels: Mapping[str, Mapping[str, int]],
    modes: Iterable[str],
    *,
    ignore_identical_ids: bool = True,
    progress: bool = False,
) -> EvalReport:
    """Run every query through every mode and score it. Latency is the full search, encode included."""
    from tqdm.auto import tqdm

    reports: dict[str, ModeReport] = {}
    depth = RUN_DEPTH + (1 if ignore_identical_ids else 0)
    for mode in modes:
        if mode != TUNED:
            parse_mode(mode)
        # "tuned": the settings' own pipeline (a tune profile); a fixed mode never takes the settings' rerank
        run_mode, run_rerank = (None, None) if mode == TUNED else (mode, parse_mode(mode)[1])
        run: dict[str, list[str]] = {}
        latencies: list[float] = []
        if queries:  # load models outside the timed loop, so latency is per query, not per process
            template = searcher.request(queries[0][1], mode=run_mode, rerank=run_rerank, top_k=depth)
            searcher.run(template)
        for qid, text in tqdm(queries, desc=mode, unit="q", disable=not progress):
            result = searcher.run(dataclasses.replace(template, query=text))
            run[qid] = result.doc_ids
            latencies.append(result.timings_ms["total"])
        metrics = score_run(qrels, run, ignore_identical_ids=ignore_identical_ids)
        reports[mode] = ModeReport(
            metrics=metrics,
            latency_p50_ms=float(np.percentile(latencies, 50)) if latencies else 0.0,
            latency_p95_ms=float(np.percentile(latencies, 95)) if latencies else 0.0,
            queries=len(latencies),
        )
        log.info("%s: %s", mode, reports[mode].to_dict())
    return EvalReport(modes=reports)


def evaluate_source(
    hs: HybridSearch,
    source: str | Path,
    *,
    modes: Iterable[str],
    split: str = "test",
    max_queries: int | None = None,
    ignore_identical_ids: bool = True,
    progress: bool = False,
) -> EvalReport:
    """``HybridSearch.evaluate``: the judged queries of ``source`` through each mode of ``hs``. ``tuned`` is
    the client's own pipeline (a ``tune`` profile); the fixed modes run at the shipped defaults beside it."""
    from hybrid_search.ingest.sources import open_query_set

    modes = list(modes)
    for mode in modes:
        if mode != TUNED:
            parse_mode(mode)
    hs.check_index()  # a never-ingested index is IndexNotFound saying how to create it, as in the CLI
    query_set = open_query_set(source, split)
    queries = select_queries(query_set.queries, query_set.qrels, max_queries)
    hs.check_judged_documents(source, query_set.qrels, [qid for qid, _ in queries])
    options = {"ignore_identical_ids": ignore_identical_ids, "progress": progress}
    if TUNED not in modes:
        return evaluate(hs.pipeline, queries, query_set.qrels, modes, **options)
    tuned, fixed = hs.pipeline, hs.fixed_pipeline()
    reports = {}
    for mode in modes:
        one = evaluate(tuned if mode == TUNED else fixed, queries, query_set.qrels, [mode], **options)
        reports[mode] = one.modes[mode]
    return EvalReport(modes=reports)
