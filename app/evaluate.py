"""Retrieval evaluation: nDCG@10, Recall@100 and MRR@10 per mode, with latency percentiles.

Metrics come from ``ir-measures`` (pytrec_eval underneath), not from code of our own. Runs are scored by
rank (1/rank), so the reranker's head and the fused tail compare correctly. BEIR's ``ignore_identical_ids``
is on by default: a document whose id equals the query id is removed before scoring (Quora's queries are
also corpus documents, and would otherwise find themselves).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hybrid_search.app.eval_runs import QueryRunCache, Run, run_key, safe_name, write_per_query, write_trec_run
from hybrid_search.config.errors import ConfigError
from hybrid_search.search.request import SearchRequest, parse_mode
from hybrid_search.search.searcher import RetrievalPipeline

if TYPE_CHECKING:
    from hybrid_search.app.client import HybridSearch
    from hybrid_search.backends.base import IndexStats

__all__ = [
    "METRICS",
    "EvalOutputs",
    "EvalReport",
    "ModeReport",
    "check_judged_documents",
    "evaluate",
    "per_query_scores",
    "score_run",
    "select_queries",
    "table_header",
    "table_row",
]

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
    cached: int = 0  # of ``queries``, how many an earlier run had finished (their latency is that run's)

    def to_dict(self) -> dict[str, Any]:
        return {
            **{k: round(v, 4) for k, v in self.metrics.items()},
            "latency_ms": {"p50": round(self.latency_p50_ms, 2), "p95": round(self.latency_p95_ms, 2)},
            "queries": self.queries,
            "cached": self.cached,
        }


@dataclass(frozen=True, slots=True)
class EvalReport:
    modes: Mapping[str, ModeReport]
    settings: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"modes": {m: r.to_dict() for m, r in self.modes.items()}, "settings": dict(self.settings)}

    def table(self) -> str:
        return "\n".join([table_header(), *(table_row(mode, r) for mode, r in self.modes.items())])


def table_header() -> str:
    head = f"{'mode':<16}{'nDCG@10':>9}{'R@100':>9}{'MRR@10':>9}{'p50 ms':>9}{'p95 ms':>9}{'queries':>9}"
    return f"{head}\n{'-' * len(head)}"


def table_row(mode: str, r: ModeReport) -> str:
    m = r.metrics
    return (
        f"{mode:<16}{m['ndcg@10']:>9.4f}{m['recall@100']:>9.4f}{m['mrr@10']:>9.4f}"
        f"{r.latency_p50_ms:>9.1f}{r.latency_p95_ms:>9.1f}{r.queries:>9d}"
    )


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


@dataclass(frozen=True, slots=True)
class EvalOutputs:
    """What an evaluation reports and keeps as it goes (``app.eval_runs``): per-query runs cached so a rerun
    skips finished queries, TREC run files and per-query metrics under ``runs_dir``, and two callbacks: the
    estimated seconds per mode before the long part starts, and each mode's report as soon as it is done."""

    cache: bool = True
    runs_dir: Path | None = None
    on_estimate: Callable[[Mapping[str, float]], None] | None = None
    on_mode: Callable[[str, ModeReport], None] | None = None


PROBES = 2  # timed queries per mode behind the estimate (their results are kept, not thrown away)


@dataclass
class _ModeRun:
    mode: str
    searcher: RetrievalPipeline
    template: SearchRequest
    cache: QueryRunCache | None
    run: Run = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    cached: int = 0

    def take_cached(self, queries: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """Fill in what the cache holds; return the queries still to run."""
        pending = []
        for qid, text in queries:
            done = self.cache.get(qid) if self.cache is not None else None
            if done is None:
                pending.append((qid, text))
            else:
                self.run[qid], ms = done
                self.latencies.append(ms)
                self.cached += 1
        return pending

    def search(self, qid: str, text: str) -> float:
        result = self.searcher.run(dataclasses.replace(self.template, query=text))
        docs = [(h.doc_id, float(h.score)) for h in result.hits]
        ms = float(result.timings_ms["total"])
        self.run[qid] = docs
        self.latencies.append(ms)
        if self.cache is not None:
            self.cache.add(qid, docs, ms)
        return ms


def evaluate(
    searcher: RetrievalPipeline,
    queries: Sequence[tuple[str, str]],
    qrels: Mapping[str, Mapping[str, int]],
    modes: Iterable[str],
    *,
    ignore_identical_ids: bool = True,
    progress: bool = False,
    outputs: EvalOutputs | None = None,
    cache_dir: Path | None = None,
    tuned: RetrievalPipeline | None = None,
) -> EvalReport:
    """Run every query through every mode and score it. Latency is the full search, encode included.

    ``tuned`` answers the ``tuned`` mode (a profile's own pipeline) where ``searcher`` runs the fixed ones.
    With ``cache_dir``, each query's run is kept on disk as it completes and reused by a rerun of the same
    mode and pipeline; ``outputs`` gets the estimate up front and each mode's report as it completes."""
    from tqdm.auto import tqdm

    out = outputs or EvalOutputs(cache=False)
    depth = RUN_DEPTH + (1 if ignore_identical_ids else 0)
    plans = [_plan(m, tuned if m == TUNED and tuned else searcher, queries, depth, out, cache_dir) for m in modes]
    pending: dict[str, list[tuple[str, str]]] = {}
    estimate: dict[str, float] = {}
    for plan in plans:  # load each mode's models, then time a few real queries: the estimate comes first
        todo = plan.take_cached(queries)
        if todo:
            plan.searcher.run(plan.template)  # untimed: model loading is not a query's latency
            probe_ms = [plan.search(qid, text) for qid, text in todo[:PROBES]]
            todo = todo[PROBES:]
            estimate[plan.mode] = float(np.mean(probe_ms)) * len(todo) / 1000.0
        else:
            estimate[plan.mode] = 0.0
        pending[plan.mode] = todo
    if out.on_estimate is not None:
        out.on_estimate(estimate)
    reports: dict[str, ModeReport] = {}
    for plan in plans:
        for qid, text in tqdm(pending[plan.mode], desc=plan.mode, unit="q", disable=not progress):
            plan.search(qid, text)
        if plan.cache is not None:
            plan.cache.close()
        reports[plan.mode] = _report(plan, qrels, ignore_identical_ids, out)
        log.info("%s: %s", plan.mode, reports[plan.mode].to_dict())
    return EvalReport(modes=reports)


def _plan(
    mode: str,
    searcher: RetrievalPipeline,
    queries: Sequence[tuple[str, str]],
    depth: int,
    out: EvalOutputs,
    cache_dir: Path | None,
) -> _ModeRun:
    if mode != TUNED:
        parse_mode(mode)
    # "tuned": the settings' own pipeline (a tune profile); a fixed mode never takes the settings' rerank
    run_mode, run_rerank = (None, None) if mode == TUNED else (mode, parse_mode(mode)[1])
    template = searcher.request(queries[0][1] if queries else "", mode=run_mode, rerank=run_rerank, top_k=depth)
    cache = None
    if out.cache and cache_dir is not None and queries:
        key = run_key(
            {
                "index": searcher.index,
                "request": {
                    f.name: repr(getattr(template, f.name)) for f in dataclasses.fields(template) if f.name != "query"
                },
                "models": [getattr(p, "model_name", None) for p in (searcher.encoder, searcher.reranker)],
                "sparse": getattr(searcher.sparse_encoder, "model_name", None),
            }
        )
        cache = QueryRunCache(cache_dir / f"{safe_name(mode)}-{key}.jsonl")
    return _ModeRun(mode, searcher, template, cache)


def _report(plan: _ModeRun, qrels: Mapping[str, Mapping[str, int]], ignore_ids: bool, out: EvalOutputs) -> ModeReport:
    ids = {q: [d for d, _ in docs] for q, docs in plan.run.items()}
    metrics = score_run(qrels, ids, ignore_identical_ids=ignore_ids)
    report = ModeReport(
        metrics=metrics,
        latency_p50_ms=float(np.percentile(plan.latencies, 50)) if plan.latencies else 0.0,
        latency_p95_ms=float(np.percentile(plan.latencies, 95)) if plan.latencies else 0.0,
        queries=len(plan.latencies),
        cached=plan.cached,
    )
    if out.runs_dir is not None:
        kept = {q: [(d, s) for d, s in docs if not (ignore_ids and d == q)][:RUN_DEPTH] for q, docs in plan.run.items()}
        write_trec_run(out.runs_dir / f"{safe_name(plan.mode)}.trec", plan.mode, kept)
        per_query = {m: per_query_scores(qrels, ids, m, ignore_identical_ids=ignore_ids) for m in METRICS}
        write_per_query(out.runs_dir / "per-query.tsv", plan.mode, per_query)
    if out.on_mode is not None:
        out.on_mode(plan.mode, report)
    return report


def check_judged_documents(
    hs: HybridSearch, source: object, qrels: Mapping[str, Mapping[str, int]], qids: Sequence[str], sample: int = 200
) -> None:
    """Stop when most judged documents are not in the index: it was built from another corpus, and every
    metric would read zero."""
    judged = sorted({doc for qid in qids for doc, grade in qrels.get(qid, {}).items() if grade > 0})
    if not judged:
        return
    picked = judged[:: max(1, len(judged) // sample)][:sample]
    found = len(hs.backend.get_texts(hs.index, picked))
    if found < 0.5 * len(picked):
        raise ConfigError(
            f"index {hs.index!r} holds {found} of the {len(picked)} judged documents sampled from {source}: "
            f"it was built from another corpus. Ingest {source} into its own index (--index NAME) first"
        )


def _cache_dir(hs: HybridSearch) -> Path:
    return cache_dir_for(hs.settings.data_dir, hs.index, hs.stats())


def cache_dir_for(data_dir: str | Path, index: str, stats: IndexStats) -> Path:
    """Where evaluation runs of ``index`` are cached: one folder per build, size and write generation, so a
    new ingest (a new physical build) or an incremental write never reads runs cached before it."""
    generation = f"-g{stats.write_generation}" if stats.write_generation else ""
    return Path(data_dir) / "eval-cache" / index / f"{stats.physical or index}-{stats.count}{generation}"


def evaluate_source(
    hs: HybridSearch,
    source: str | Path,
    *,
    modes: Iterable[str],
    split: str = "test",
    max_queries: int | None = None,
    ignore_identical_ids: bool = True,
    progress: bool = False,
    outputs: EvalOutputs | None = None,
) -> EvalReport:
    """``HybridSearch.evaluate``: the judged queries of ``source`` through each mode of ``hs``. ``tuned`` is
    the client's own pipeline (a ``tune`` profile); the fixed modes run at the shipped defaults beside it.
    Per-query runs are cached under ``DATA_DIR/eval-cache/INDEX`` unless ``outputs.cache`` is off."""
    from hybrid_search.ingest.sources import open_query_set

    modes = list(modes)
    for mode in modes:
        if mode != TUNED:
            parse_mode(mode)
    hs.check_index()  # a never-ingested index is IndexNotFound saying how to create it, as in the CLI
    query_set = open_query_set(source, split)
    queries = select_queries(query_set.queries, query_set.qrels, max_queries)
    check_judged_documents(hs, source, query_set.qrels, [qid for qid, _ in queries])
    out = outputs or EvalOutputs()
    return evaluate(
        hs.fixed_pipeline() if TUNED in modes else hs.pipeline,
        queries,
        query_set.qrels,
        modes,
        ignore_identical_ids=ignore_identical_ids,
        progress=progress,
        outputs=out,
        cache_dir=_cache_dir(hs) if out.cache else None,
        tuned=hs.pipeline if TUNED in modes else None,
    )
