"""``hybrid-search tune-defaults``: choose the shipped defaults across several judged corpora, and say by
leave-one-set-out how the choice carries to a corpus it never saw. Scored from ``tune``'s run caches."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from hybrid_search.app.tune import RunCache, mean_over, per_query_metric, tuning_legs
from hybrid_search.app.tune_space import FIRST_DEPTHS, INTERPOLATIONS, RERANK_DEPTHS, Pipeline, grid
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
    legs: Sequence[str] | None = None,
    rerank: bool = True,
    analyzers: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Choose shipped defaults across corpora: the first stage (mode, fusion, depths) with the best mean
    ``metric`` over the sets (each set weighs the same, however many queries it has), then the rerank depth
    and interpolation for that first stage the same way. Leave-one-set-out tells how the choice carries to a
    corpus it never saw: each set is scored by the settings chosen on the others.

    The legs searched are those every set's index answers (or ``legs``); ``by_mode`` gives, for each mode
    (``hybrid``, ``bm25+sparse``, ``hybrid3``...), the first stage chosen within it and its mean, with
    leave-one-set-out, and ``by_leg_count`` the same over all first stages of one, two or three legs, so a
    two-leg and a three-leg pipeline compare each at its best. ``rerank=False`` chooses the first stage only.

    ``analyzers`` adds ``analyzers``: each text analyzer's mean on bm25, hybrid and hybrid+rerank at today's
    defaults, the one chosen for each, and leave-one-set-out (``app.tune_analyzers``).

    ``sets`` maps a name to (client over the set's index, judged queries, qrels)."""
    names = list(sets)
    if len(names) < 2:
        raise ConfigError("choosing defaults across corpora needs at least two sets")
    current = Pipeline.from_settings(SearchSettings())
    current_rerank = replace(current, rerank=True) if rerank else current
    caches: dict[str, RunCache] = {}
    means: dict[str, dict[Pipeline, float]] = {name: {} for name in names}
    t0 = time.perf_counter()
    for name, (hs, queries, _) in sets.items():
        caches[name] = RunCache(hs, queries, depth=max(FIRST_DEPTHS) + 1, progress=progress)
    # the legs every set answers: a default must work on each of them
    common = [leg for leg in caches[names[0]].legs if all(leg in c.legs for c in caches.values())]
    searched = tuning_legs(common, legs)
    firsts = list(dict.fromkeys([current, *grid(searched, first_stage_only=True)]))

    def measure(cache: RunCache, p: Pipeline, name: str) -> float:
        _, queries, qrels = sets[name]
        qids = [q for q, _ in queries]
        return mean_over(per_query_metric(cache, p, qids, qrels, metric, ignore_identical_ids), qids)

    def score(p: Pipeline, name: str) -> float:
        # each (setting, set) scored once, on first use: only the rerank settings tried pay the cross-encoder
        if p not in means[name]:
            means[name][p] = measure(caches[name], p, name)
        return means[name][p]

    def best(candidates: Sequence[Pipeline], on: Sequence[str]) -> Pipeline:
        # ties go to the earlier candidate: today's default comes first
        return max(reversed(candidates), key=lambda p: float(np.mean([score(p, n) for n in on])))

    def choose(on: Sequence[str]) -> tuple[Pipeline, Pipeline]:
        first = best(firsts, on)
        if not rerank:
            return first, first
        reranks = [
            replace(first, rerank=True, rerank_depth=d, interpolation=a)
            for d, a in itertools.product(RERANK_DEPTHS, INTERPOLATIONS)
        ]
        return first, best(reranks, on)

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
            **{leg: score(Pipeline(leg), name) for leg in searched},
        }

    def best_within(within: Sequence[Pipeline]) -> dict[str, Any]:
        chosen = best(within, names)
        loo = {name: score(best(within, [n for n in names if n != name]), name) for name in names}
        return {
            "chosen": chosen.label,
            "mean": float(np.mean([score(chosen, n) for n in names])),
            "leave_one_out": float(np.mean(list(loo.values()))),
            "sets": {n: score(chosen, n) for n in names},
        }

    modes = dict.fromkeys(p.base for p in firsts)
    by_mode = {mode: best_within([p for p in firsts if p.base == mode]) for mode in modes}
    counts = sorted({len(p.legs) for p in firsts})
    by_leg_count = {str(n): best_within([p for p in firsts if len(p.legs) == n]) for n in counts}
    analysis = None
    if analyzers:
        from hybrid_search.app.tune_analyzers import analyzer_defaults

        measured = {
            "bm25": Pipeline("bm25"),
            "hybrid": current,
            **({"hybrid+rerank": current_rerank} if rerank else {}),
        }
        analysis = analyzer_defaults(caches, sets, measured, measure, analyzers)
    return {
        "metric": metric,
        "analyzers": analysis,
        "legs": list(searched),
        "by_mode": by_mode,
        "by_leg_count": by_leg_count,
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
