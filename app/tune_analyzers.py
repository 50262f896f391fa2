"""Text analyzers measured, never applied (changing one needs a reindex): each analyzer's BM25 runs come
from an in-memory index of the stored documents (``LexicalIndex``, the embedded backend's scoring, so every
analyzer and backend is scored alike) and replace the cached BM25 runs; the other legs' runs and the
cross-encoder's scores are shared. ``tune`` compares them on one corpus; ``tune-defaults`` chooses the
shipped default across corpora on hybrid and hybrid+rerank, leave-one-set-out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hybrid_search.config.text import has_cjk, passage_text

if TYPE_CHECKING:
    from hybrid_search.app.client import HybridSearch
    from hybrid_search.app.tune import RunCache
    from hybrid_search.app.tune_space import Pipeline

__all__ = ["ANALYZERS", "analyzer_defaults", "lexical_runs"]

ANALYZERS = ("standard", "english", "folding")  # measured by default; cjk too where the corpus has CJK text

Runs = dict[str, list[tuple[str, float]]]


def lexical_runs(
    hs: HybridSearch, queries: Sequence[tuple[str, str]], names: Sequence[str], depth: int
) -> tuple[dict[str, Runs], int]:
    """Each analyzer's BM25 runs over the index's stored documents (streamed once for all of them), and
    how many documents there were. ``cjk`` joins ``names`` when the first batch holds CJK text."""
    from hybrid_search.backends.embedded import LexicalIndex

    lexical = {name: LexicalIndex(name) for name in dict.fromkeys(names)}
    for i, batch in enumerate(hs.backend.iter_documents(hs.index)):
        if i == 0 and "cjk" not in lexical and any(has_cjk(passage_text(d.title, d.text)) for d in batch):
            lexical["cjk"] = LexicalIndex("cjk")
        for index in lexical.values():
            index.add(batch)
    runs = {name: {qid: index.search(text, depth) for qid, text in queries} for name, index in lexical.items()}
    return runs, next(iter(lexical.values())).count


def analyzer_defaults(
    caches: Mapping[str, RunCache],
    sets: Mapping[str, tuple[HybridSearch, Sequence[tuple[str, str]], Mapping[str, Mapping[str, int]]]],
    pipelines: Mapping[str, Pipeline],
    score: Callable[[RunCache, Pipeline, str], float],
    analyzers: Sequence[str] = ANALYZERS,
) -> dict[str, Any]:
    """For each analyzer and each named pipeline (e.g. ``hybrid``, ``hybrid+rerank`` at today's defaults),
    the mean over the sets (each set weighs the same); the analyzer chosen for each pipeline; and
    leave-one-set-out: each set scored with the analyzer chosen on the others."""
    names = list(sets)
    table: dict[str, dict[str, dict[str, float]]] = {}  # analyzer -> pipeline -> set -> score
    for name in names:
        hs, queries, _ = sets[name]
        runs, _count = lexical_runs(hs, queries, analyzers, caches[name].depth)
        for analyzer in analyzers:  # cjk, added for one set only, is not a default every set could use
            cache = caches[name].with_bm25(runs[analyzer])
            for label, p in pipelines.items():
                table.setdefault(analyzer, {}).setdefault(label, {})[name] = score(cache, p, name)

    def mean(analyzer: str, label: str, on: Sequence[str]) -> float:
        return float(np.mean([table[analyzer][label][n] for n in on]))

    def pick(label: str, on: Sequence[str]) -> str:
        return max(analyzers, key=lambda a: (mean(a, label, on), -analyzers.index(a)))  # ties: the earlier

    out: dict[str, Any] = {"analyzers": list(analyzers), "pipelines": {k: p.label for k, p in pipelines.items()}}
    out["mean"] = {a: {label: mean(a, label, names) for label in pipelines} for a in analyzers}
    out["chosen"] = {label: pick(label, names) for label in pipelines}
    loo: dict[str, dict[str, Any]] = {}
    for label in pipelines:
        picks = {n: pick(label, [m for m in names if m != n]) for n in names}
        loo[label] = {
            "picks": picks,
            "mean": float(np.mean([table[picks[n]][label][n] for n in names])),
        }
    out["leave_one_out"] = loo
    out["sets"] = table
    return out
