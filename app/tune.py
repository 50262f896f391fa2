"""``hybrid-search tune``: learn the pipeline's settings from the user's judgements.

Each first-stage retriever (BM25, kNN, and learned-sparse where the index has it) runs once per query at the
largest depth in the search space, and the cross-encoder scores each (query, document) pair at most once, on
demand; every candidate setting is then scored from that cache in memory, with the same fusion and rerank
functions a search uses, so thousands of settings cost seconds, not re-queries. The search space is an
exhaustive grid (``tune_space``: 884 settings over two legs, 5,577 over three):
small enough to try in full, which keeps the choice reproducible and leaves nothing to a sampler's luck;
``--budget N`` tries a seeded sample of N instead, always with the fixed modes among them.

Estimates are honest about overfitting: k-fold cross-validation over queries chooses the setting on the
training folds and scores it on the held-out fold only, and a paired randomisation test compares those
held-out per-query scores with today's default and with the best single fixed mode. The chosen setting
(best over all tuning queries) is written as an ordinary settings file (``--config profile.toml``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hybrid_search.app.evaluate import RUN_DEPTH, per_query_scores
from hybrid_search.app.tune_space import FIRST_DEPTHS, FIXED_MODES, Pipeline, fixed_modes, grid
from hybrid_search.app.tune_stats import mean_over, measured_alternative, randomization_test
from hybrid_search.config.errors import ConfigError
from hybrid_search.config.settings import SearchSettings
from hybrid_search.config.text import passage_text
from hybrid_search.search.searcher import blend_rerank_scores

if TYPE_CHECKING:
    from hybrid_search.app.client import HybridSearch

__all__ = [
    "FIXED_MODES",
    "fixed_modes",
    "tuning_legs",
    "Pipeline",
    "RunCache",
    "TuneReport",
    "grid",
    "mean_over",
    "per_query_metric",
    "randomization_test",
    "tune",
]


class RunCache:
    """First-stage runs per leg and query (at the deepest depth tried) and cross-encoder scores, each computed
    once. The legs are those the index answers: BM25 and kNN always, the sparse leg where the index holds
    learned-sparse vectors (its queries encoded once, by the index's own sparse model)."""

    def __init__(
        self, hs: HybridSearch, queries: Sequence[tuple[str, str]], *, depth: int, progress: bool = False
    ) -> None:
        from tqdm.auto import tqdm

        self.hs, self.queries = hs, dict(queries)
        self.depth = depth
        self.texts: dict[str, str] = {}
        self.fields: dict[str, tuple[str, str]] = {}  # doc id -> (title, text): where best passages are cut from
        self._ce: dict[tuple[str, str], float] = {}
        backend, index, s = hs.backend, hs.index, hs.settings.search
        texts = [text for _, text in queries]
        vectors = hs.query_encoder.encode_queries(texts)
        self.vectors = dict(zip([q for q, _ in queries], vectors, strict=True))
        spec = backend.index_spec(index)
        self.passages = bool(spec is not None and spec.passages)  # the reranker reads best passages, as a search
        sparse_encoder = hs.sparse_encoder
        sparse = sparse_encoder.encode_queries(texts) if sparse_encoder is not None else None
        self.legs: tuple[str, ...] = ("bm25", "knn", "sparse") if sparse is not None else ("bm25", "knn")
        self.runs: dict[str, dict[str, list[tuple[str, float]]]] = {leg: {} for leg in self.legs}
        for i, ((qid, text), vector) in enumerate(
            tqdm(list(zip(queries, vectors, strict=True)), desc="first stages", unit="q", disable=not progress)
        ):
            hits = {
                "bm25": backend.search_bm25(index, text, depth),
                "knn": backend.search_knn(index, vector, depth, max(s.num_candidates, depth)),
            }
            if sparse is not None:
                hits["sparse"] = backend.search_sparse(index, sparse[i], depth)
            for leg, leg_hits in hits.items():
                self.runs[leg][qid] = [(h.doc_id, h.score) for h in leg_hits]
                for h in leg_hits:
                    self.texts.setdefault(h.doc_id, passage_text(h.title, h.text))
                    self.fields.setdefault(h.doc_id, (h.title, h.text))

    @property
    def bm25(self) -> dict[str, list[tuple[str, float]]]:
        return self.runs["bm25"]

    @property
    def knn(self) -> dict[str, list[tuple[str, float]]]:
        return self.runs["knn"]

    @property
    def ce_pairs_scored(self) -> int:
        return len(self._ce)

    def with_bm25(self, bm25: Mapping[str, list[tuple[str, float]]]) -> RunCache:
        """This cache with other BM25 runs (another analyzer's): the other legs' runs and cross-encoder scores
        are shared."""
        return self.with_leg("bm25", bm25)

    def with_leg(
        self, leg: str, runs: Mapping[str, list[tuple[str, float]]], *, passages: bool | None = None
    ) -> RunCache:
        """This cache with other runs of one leg (another analyzer's BM25, another chunking's kNN); the other
        legs' runs are shared, and the cross-encoder's scores too unless ``passages`` changes what it reads."""
        other = object.__new__(RunCache)
        other.__dict__.update(self.__dict__)
        other.runs = {**self.runs, leg: dict(runs)}
        if passages is not None and passages != self.passages:
            other.passages, other._ce = passages, {}
        missing = sorted({d for run in runs.values() for d, _ in run} - self.texts.keys())
        if missing:
            self.texts.update(self.hs.backend.get_texts(self.hs.index, missing))
        return other

    def grid(self, *, first_stage_only: bool = False) -> list[Pipeline]:
        """The search space over the legs this cache holds."""
        return grid(self.legs, first_stage_only=first_stage_only)

    def ce(self, qid: str, doc_ids: Sequence[str]) -> np.ndarray:
        """Cross-encoder scores of the query with each document, scoring only pairs not seen before."""
        missing = [d for d in dict.fromkeys(doc_ids) if (qid, d) not in self._ce]
        if missing:
            scores = self.hs.reranker.score(self.queries[qid], self._reads(qid, missing))
            self._ce.update({(qid, d): float(s) for d, s in zip(missing, scores, strict=True)})
        return np.asarray([self._ce[(qid, d)] for d in doc_ids], dtype=np.float64)

    def _reads(self, qid: str, doc_ids: Sequence[str]) -> list[str]:
        """What the cross-encoder reads of each document for this query: in an index of passages its best
        passage for the query (chosen as a search chooses it), else the whole document."""
        if not self.passages or any(d not in self.fields for d in doc_ids):
            return [self.texts[d] for d in doc_ids]
        from hybrid_search.search.hits import Hit
        from hybrid_search.search.request import Dense, SearchRequest

        hits = [
            Hit(doc_id=d, rank=i, score=0.0, title=self.fields[d][0], text=self.fields[d][1])
            for i, d in enumerate(doc_ids, start=1)
        ]
        request = SearchRequest(self.queries[qid], (Dense(),), vector=self.vectors[qid])
        chosen = self.hs.backend.open_index(self.hs.index).with_passages(hits, request)
        return [passage_text(h.title, h.reads) for h in chosen]

    def ranked(self, p: Pipeline, qid: str, k: int = RUN_DEPTH + 1) -> list[str]:
        """What a search with pipeline ``p`` and ``top_k=k`` returns for the query, as ids, best first."""
        legs = p.legs
        missing = [leg for leg in legs if leg not in self.runs]
        if missing:
            raise ConfigError(
                f"setting {p.label!r} needs the {', '.join(missing)} leg, which this index cannot answer "
                "(ingest with --sparse-model for the sparse leg)"
            )
        keep = max(p.rerank_depth if p.rerank else 0, k)
        if len(legs) == 1:
            first = self.runs[legs[0]][qid][:keep]
        else:
            depth = max(p.depth, k)
            first = p.fusion_spec().fuse({leg: self.runs[leg][qid][:depth] for leg in legs}, limit=keep)
        if not p.rerank:
            return [d for d, _ in first[:k]]
        head, tail = first[: p.rerank_depth], first[p.rerank_depth :]
        ce = self.ce(qid, [d for d, _ in head])
        final = blend_rerank_scores([s for _, s in head], ce, p.interpolation)
        order = sorted(range(len(head)), key=lambda i: (-final[i], i))
        return ([head[i][0] for i in order] + [d for d, _ in tail])[:k]


@dataclass(frozen=True, slots=True)
class TuneReport:
    """What ``tune`` found: the chosen pipeline, honest estimates, and the comparisons behind them."""

    chosen: Pipeline
    metric: str
    queries: int
    folds: int
    candidates: int
    in_sample: float
    cross_validated: float
    default: float
    fixed_modes: Mapping[str, float]
    p_vs_default: float
    p_vs_best_fixed: float
    best_fixed: str
    fold_scores: Sequence[float]
    ce_pairs_scored: int
    seconds: Mapping[str, float]
    holdout: Mapping[str, Any] | None = None
    analyzer: Mapping[str, Any] | None = None  # each analyzer's measured effect (a reindex would apply it)
    chunking: Mapping[str, Any] | None = None  # each chunking's measured effect (a re-ingest would apply it)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["chosen"] = {"label": self.chosen.label, **asdict(self.chosen)}
        return out

    def table(self) -> str:
        lines = [
            f"chosen: {self.chosen.label}",
            f"{self.metric} over {self.queries} queries, {self.folds}-fold cross-validation, "
            f"{self.candidates} settings tried",
            f"  cross-validated (held-out folds) {self.cross_validated:.4f}   in-sample {self.in_sample:.4f}",
            f"  default ({Pipeline.from_settings(SearchSettings()).label})\n"
            f"                                   {self.default:.4f}   p = {self.p_vs_default:.4f} (tuned vs default)",
            f"  best fixed mode ({self.best_fixed:<14}) {self.fixed_modes[self.best_fixed]:.4f}   "
            f"p = {self.p_vs_best_fixed:.4f} (tuned vs it)",
        ]
        if self.holdout:
            h = self.holdout
            lines.append(f"held-out half ({h['queries']} queries never used for tuning):")
            lines += [f"  {name:<16} {score:.4f}" for name, score in h["scores"].items()]
            lines.append(
                f"  p (tuned vs default) = {h['p_vs_default']:.4f}, p (tuned vs {h['best_fixed']}) = "
                f"{h['p_vs_best_fixed']:.4f}"
            )
        if self.analyzer:
            a = self.analyzer
            scores = ", ".join(f"{name} {v:.4f}" for name, v in a["cross_validated"].items())
            lines.append(f"analyzer (cross-validated, tuned with each; current {a['current']}): {scores}")
            lines.append(f"  {a['advice']}")
        if self.chunking:
            c = self.chunking
            if "skipped" in c:
                lines.append(f"chunking: {c['skipped']}")
            else:
                scores = ", ".join(f"{name} {v:.4f}" for name, v in c["cross_validated"].items())
                lines.append(f"chunking (cross-validated, tuned with each; current {c['current']}): {scores}")
                lines.append(f"  {c['advice']}")
        return "\n".join(lines)


def _folds(qids: Sequence[str], k: int, seed: int) -> list[list[str]]:
    shuffled = list(qids)
    random.Random(seed).shuffle(shuffled)
    return [shuffled[i::k] for i in range(k)]


def tune(
    hs: HybridSearch,
    queries: Sequence[tuple[str, str]],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    metric: str = "ndcg@10",
    folds: int = 5,
    budget: int | None = None,
    holdout: float = 0.0,
    ignore_identical_ids: bool = True,
    seed: int = 0,
    progress: bool = False,
    analyzer_check: bool = False,
    legs: Sequence[str] | None = None,
    chunking_check: bool = False,
) -> TuneReport:
    """Choose the best pipeline for ``queries`` (see the module docstring). ``legs`` limits the search to
    settings over those legs (default: every leg the index answers); the fixed modes are scored regardless."""
    if folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {folds}")
    if not 0.0 <= holdout < 1.0:
        raise ConfigError(f"--holdout must be a fraction in [0, 1), got {holdout}")
    tuning, held = list(queries), []
    if holdout:
        shuffled = list(queries)
        random.Random(seed).shuffle(shuffled)
        cut = int(round(len(shuffled) * (1 - holdout)))
        tuning, held = shuffled[:cut], shuffled[cut:]
    if len(tuning) < folds:
        raise ConfigError(f"{len(tuning)} queries cannot make {folds} folds: give more judged queries or fewer --folds")

    t0 = time.perf_counter()
    cache = RunCache(hs, [*tuning, *held], depth=max(FIRST_DEPTHS) + 1, progress=progress)
    t_cache = time.perf_counter() - t0
    searched = tuning_legs(cache.legs, legs)
    fixed = {
        m: Pipeline.from_settings(SearchSettings(), base=m.split("+")[0], rerank=m.endswith("+rerank"))
        for m in fixed_modes(cache.legs)
    }
    default = Pipeline.from_settings(SearchSettings())
    candidates = grid(searched)
    if budget is not None and budget < len(candidates):
        candidates = random.Random(seed).sample(candidates, budget)
    candidates = list(dict.fromkeys([*fixed.values(), default, *candidates]))

    def scores(p: Pipeline, qids: Sequence[str]) -> dict[str, float]:
        return per_query_metric(cache, p, qids, qrels, metric, ignore_identical_ids)

    t1 = time.perf_counter()
    tuning_ids = [q for q, _ in tuning]
    selection = _select(
        cache,
        candidates,
        tuning_ids,
        qrels,
        metric,
        folds,
        seed,
        ignore_identical_ids=ignore_identical_ids,
        progress=progress,
    )
    t_grid = time.perf_counter() - t1
    table, chosen = selection.table, selection.chosen

    def mean(p: Pipeline, qids: Sequence[str]) -> float:
        return mean_over(table[p], qids)

    fixed_scores = {m: mean(p, tuning_ids) for m, p in fixed.items()}
    best_fixed = max(fixed_scores, key=lambda m: fixed_scores[m])
    cv = [selection.cross_validated[q] for q in tuning_ids]
    report_holdout = None
    if held:
        held_ids = [q for q, _ in held]
        tuned_h = scores(chosen, held_ids)
        fixed_h = {m: scores(p, held_ids) for m, p in fixed.items()}
        default_h = scores(default, held_ids)
        hs_scores = {"tuned": mean_over(tuned_h, held_ids), **{m: mean_over(v, held_ids) for m, v in fixed_h.items()}}
        best_fixed_h = max(fixed_h, key=lambda m: mean_over(fixed_h[m], held_ids))
        report_holdout = {
            "queries": len(held_ids),
            "scores": hs_scores,
            "best_fixed": best_fixed_h,
            "p_vs_default": randomization_test(
                [tuned_h.get(q, 0.0) for q in held_ids], [default_h.get(q, 0.0) for q in held_ids]
            ),
            "p_vs_best_fixed": randomization_test(
                [tuned_h.get(q, 0.0) for q in held_ids], [fixed_h[best_fixed_h].get(q, 0.0) for q in held_ids]
            ),
        }
    analyzer = None
    if analyzer_check:
        t2 = time.perf_counter()
        analyzer = analyzer_effect(
            cache, candidates, tuning, qrels, metric, folds, seed, ignore_identical_ids=ignore_identical_ids
        )
        analyzer["seconds"] = round(time.perf_counter() - t2, 2)
    chunking = None
    if chunking_check:
        from hybrid_search.app.tune_chunking import chunking_effect

        t3 = time.perf_counter()
        knn = Pipeline.from_settings(SearchSettings(), base="knn", rerank=False)
        chunking = chunking_effect(
            cache,
            tuning_ids,
            metric=metric,
            cross_validate=lambda trial: (
                _select(
                    trial, candidates, tuning_ids, qrels, metric, folds, seed, ignore_identical_ids=ignore_identical_ids
                ).cross_validated
            ),
            knn_alone=lambda trial: per_query_metric(trial, knn, tuning_ids, qrels, metric, ignore_identical_ids),
        )
        chunking["seconds"] = round(time.perf_counter() - t3, 2)
    return TuneReport(
        chosen=chosen,
        metric=metric,
        queries=len(tuning_ids),
        folds=folds,
        candidates=len(candidates),
        in_sample=mean(chosen, tuning_ids),
        cross_validated=float(np.mean(cv)),
        default=mean(default, tuning_ids),
        fixed_modes=fixed_scores,
        p_vs_default=randomization_test(cv, [table[default].get(q, 0.0) for q in tuning_ids]),
        p_vs_best_fixed=randomization_test(cv, [table[fixed[best_fixed]].get(q, 0.0) for q in tuning_ids]),
        best_fixed=best_fixed,
        fold_scores=selection.fold_scores,
        ce_pairs_scored=cache.ce_pairs_scored,
        seconds={"first_stages_and_cache": round(t_cache, 2), "settings": round(t_grid, 2)},
        holdout=report_holdout,
        analyzer=analyzer,
        chunking=chunking,
    )


def tuning_legs(available: Sequence[str], legs: Sequence[str] | None) -> tuple[str, ...]:
    """The legs to search over: ``legs`` (each one of the ``available`` legs the index answers), or all."""
    if legs is None:
        return tuple(available)
    wanted = tuple(dict.fromkeys(leg.strip() for leg in legs if leg.strip()))
    missing = [leg for leg in wanted if leg not in available]
    if missing or not wanted:
        raise ConfigError(
            f"--legs {','.join(wanted) or '(none)'}: the index answers {', '.join(available)}"
            + (" (ingest with --sparse-model for the sparse leg)" if "sparse" in missing else "")
        )
    return wanted


def per_query_metric(
    cache: RunCache,
    p: Pipeline,
    qids: Sequence[str],
    qrels: Mapping[str, Mapping[str, int]],
    metric: str,
    ignore_identical_ids: bool,
) -> dict[str, float]:
    run = {q: cache.ranked(p, q) for q in qids}
    return per_query_scores(qrels, run, metric, ignore_identical_ids=ignore_identical_ids)


@dataclass(frozen=True, slots=True)
class _Selection:
    table: Mapping[Pipeline, Mapping[str, float]]  # per-query scores of every candidate
    chosen: Pipeline  # best over all the queries
    cross_validated: Mapping[str, float]  # each query scored by a setting chosen on the other folds
    fold_scores: Sequence[float]


def _select(
    cache: RunCache,
    candidates: Sequence[Pipeline],
    qids: Sequence[str],
    qrels: Mapping[str, Mapping[str, int]],
    metric: str,
    folds: int,
    seed: int,
    *,
    ignore_identical_ids: bool,
    progress: bool = False,
) -> _Selection:
    """Score every candidate on ``qids`` from the cache; choose by k-fold cross-validation and over all."""
    from tqdm.auto import tqdm

    table = {
        p: per_query_metric(cache, p, qids, qrels, metric, ignore_identical_ids)
        for p in tqdm(candidates, desc="settings", unit="setting", disable=not progress)
    }

    def best_on(subset: Sequence[str]) -> Pipeline:
        # ties go to the earlier candidate: the fixed modes and the default come first
        return max(reversed(candidates), key=lambda p: mean_over(table[p], subset))

    # choose on the other folds, score on this one: every query is scored exactly once, by a setting
    # chosen without it
    held_out_scores: dict[str, float] = {}
    fold_scores = []
    for fold in _folds(qids, folds, seed):
        held_out = set(fold)
        best = best_on([q for q in qids if q not in held_out])
        held_out_scores.update({q: table[best].get(q, 0.0) for q in fold})
        fold_scores.append(mean_over(table[best], fold))
    return _Selection(table, best_on(qids), held_out_scores, fold_scores)


def analyzer_effect(
    cache: RunCache,
    candidates: Sequence[Pipeline],
    queries: Sequence[tuple[str, str]],
    qrels: Mapping[str, Mapping[str, int]],
    metric: str,
    folds: int,
    seed: int,
    *,
    ignore_identical_ids: bool,
) -> dict[str, Any]:
    """What each text analyzer would give, measured, never applied (changing it needs a reindex).

    The stored documents are streamed into an in-memory BM25 index per analyzer (the embedded backend's
    scoring, for every backend, so both sides are scored alike); each analyzer's BM25 runs replace the cached
    ones and the whole grid is cross-validated again, so the comparison is tuned pipeline against tuned
    pipeline. kNN runs and cross-encoder scores are shared."""
    from hybrid_search.app.tune_analyzers import ANALYZERS, lexical_runs

    hs = cache.hs
    spec = hs.backend.index_spec(hs.index)
    current = spec.analyzer if spec is not None else "standard"
    lexical, documents = lexical_runs(hs, queries, [current, *ANALYZERS], cache.depth)
    qids = [q for q, _ in queries]
    cross_validated: dict[str, dict[str, float]] = {}
    chosen: dict[str, str] = {}
    for name, runs in lexical.items():
        selection = _select(
            cache.with_bm25(runs),
            candidates,
            qids,
            qrels,
            metric,
            folds,
            seed,
            ignore_identical_ids=ignore_identical_ids,
        )
        cross_validated[name] = dict(selection.cross_validated)
        chosen[name] = selection.chosen.label
    alternative, gain, p, recommend = measured_alternative(cross_validated, current, qids)
    return {
        "current": current,
        "alternative": alternative,
        "documents": documents,
        "cross_validated": {name: mean_over(v, qids) for name, v in cross_validated.items()},
        "chosen": chosen,
        "gain": gain,
        "p": p,
        "recommend": recommend,
        "advice": (
            f"reindex with --analyzer {alternative}: {metric} {gain:+.4f} cross-validated (p = {p:.3f}); "
            "the profile does not change it"
            if recommend
            else f"keep the {current} analyzer: {alternative} measured {gain:+.4f} (p = {p:.3f})"
        ),
    }


def write_profile(report: TuneReport, base: SearchSettings, path: str | Path, *, source: str) -> None:
    """The chosen pipeline as an ordinary settings file, with how it was chosen under ``[profile]``."""
    chosen = report.chosen.search_settings(base)
    keys = (
        "mode",
        "rerank",
        "fusion",
        "rrf_k",
        "normalizer",
        "bm25_weight",
        "knn_weight",
        "sparse_weight",
        "bm25_depth",
        "knn_depth",
        "sparse_depth",
        "rerank_depth",
        "rerank_interpolation",
    )
    lines = [f"# written by hybrid-search tune: {report.chosen.label}", "", "[search]"]
    lines += [f"{k} = {_toml(getattr(chosen, k))}" for k in keys]
    lines += [
        "",
        "[profile]",
        f"source = {_toml(source)}",
        f"metric = {_toml(report.metric)}",
        f"queries = {report.queries}",
        f"folds = {report.folds}",
        f"candidates = {report.candidates}",
        f"cross_validated = {report.cross_validated:.6f}",
        f"in_sample = {report.in_sample:.6f}",
        f"default = {report.default:.6f}",
        f"p_vs_default = {report.p_vs_default:.6f}",
        f"best_fixed = {_toml(report.best_fixed)}",
        f"p_vs_best_fixed = {report.p_vs_best_fixed:.6f}",
        "fold_scores = [" + ", ".join(f"{s:.6f}" for s in report.fold_scores) + "]",
    ]
    if report.analyzer:
        # measured, not applied: the analyzer is fixed when an index is built
        a = report.analyzer
        lines += [
            f"analyzer_current = {_toml(a['current'])}",
            f"analyzer_alternative = {_toml(a['alternative'])}",
            f"analyzer_gain = {a['gain']:.6f}",
            f"analyzer_p = {a['p']:.6f}",
            f"analyzer_advice = {_toml(a['advice'])}",
        ]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "0.0"
    return str(value)
