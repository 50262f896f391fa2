"""``hybrid-search tune-defaults``: choose the shipped defaults across several judged corpora, and say by
leave-one-set-out how the choice carries to a corpus it never saw. Scored from ``tune``'s run caches."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from hybrid_search.app.tune import (
    FIRST_DEPTHS,
    INTERPOLATIONS,
    RERANK_DEPTHS,
    Pipeline,
    RunCache,
    grid,
    mean_over,
    per_query_metric,
)
from hybrid_search.config.errors import ConfigError
from hybrid_search.config.settings import SearchSettings

if TYPE_CHECKING:
    from hybrid_search.app.client import HybridSearch

__all__ = ["tune_defaults"]


def tune_defaults(
    sets: Mapping[str, tuple[HybridSearch, Sequence[tuple[str, str]], Mapping[str, Mapping[str, int]]]],
    *,
    metric: str = "ndcg@10",
    ignore_identical_ids: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Choose shipped defaults across corpora: the first stage (mode, fusion, depths) with the best mean
    ``metric`` over the sets (each set weighs the same, however many queries it has), then the rerank depth
    and interpolation for that first stage the same way. Leave-one-set-out tells how the choice carries to a
    corpus it never saw: each set is scored by the settings chosen on the others.

    ``sets`` maps a name to (client over the set's index, judged queries, qrels)."""
    names = list(sets)
    if len(names) < 2:
        raise ConfigError("choosing defaults across corpora needs at least two sets")
    current = Pipeline.from_settings(SearchSettings())
    current_rerank = replace(current, rerank=True)
    firsts = list(dict.fromkeys([current, *(p for p in grid() if not p.rerank)]))
    caches: dict[str, RunCache] = {}
    means: dict[str, dict[Pipeline, float]] = {name: {} for name in names}
    t0 = time.perf_counter()
    for name, (hs, queries, _) in sets.items():
        caches[name] = RunCache(hs, queries, depth=max(FIRST_DEPTHS) + 1, progress=progress)

    def score(p: Pipeline, name: str) -> float:
        # each (setting, set) scored once, on first use: only the rerank settings tried pay the cross-encoder
        if p not in means[name]:
            _, queries, qrels = sets[name]
            qids = [q for q, _ in queries]
            means[name][p] = mean_over(
                per_query_metric(caches[name], p, qids, qrels, metric, ignore_identical_ids), qids
            )
        return means[name][p]

    def choose(on: Sequence[str]) -> tuple[Pipeline, Pipeline]:
        # ties go to the earlier candidate: today's default comes first
        first = max(reversed(firsts), key=lambda p: float(np.mean([score(p, n) for n in on])))
        reranks = [
            replace(first, rerank=True, rerank_depth=d, interpolation=a)
            for d, a in itertools.product(RERANK_DEPTHS, INTERPOLATIONS)
        ]
        rerank = max(reversed(reranks), key=lambda p: float(np.mean([score(p, n) for n in on])))
        return first, rerank

    chosen_first, chosen_rerank = choose(names)
    rows = {}
    for name in names:
        loo_first, loo_rerank = choose([n for n in names if n != name])
        rows[name] = {
            "queries": len(sets[name][1]),
            "current_default": score(current, name),
            "current_default_rerank": score(current_rerank, name),
            "chosen": score(chosen_first, name),
            "chosen_rerank": score(chosen_rerank, name),
            "leave_one_out": score(loo_first, name),
            "leave_one_out_rerank": score(loo_rerank, name),
            "leave_one_out_choice": [loo_first.label, loo_rerank.label],
            "bm25": score(Pipeline("bm25"), name),
            "knn": score(Pipeline("knn"), name),
        }
    return {
        "metric": metric,
        "current": [current.label, current_rerank.label],
        "chosen": {"first_stage": asdict(chosen_first), "rerank": asdict(chosen_rerank)},
        "chosen_labels": [chosen_first.label, chosen_rerank.label],
        "mean": {
            key: float(np.mean([row[key] for row in rows.values()]))
            for key in ("current_default", "chosen", "leave_one_out", "current_default_rerank", "chosen_rerank")
        },
        "sets": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }
