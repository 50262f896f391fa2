"""The statistics ``tune`` reports with: a mean over chosen queries, the paired randomisation test, and the
measured-not-applied comparison of an index-time choice (analyzer, chunking) against the index's own."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["mean_over", "measured_alternative", "randomization_test"]

P_SIGNIFICANT = 0.05  # a measured alternative is recommended only below this p


def mean_over(per_query: Mapping[str, float], qids: Sequence[str]) -> float:
    return float(np.mean([per_query.get(q, 0.0) for q in qids])) if qids else 0.0


def randomization_test(a: Sequence[float], b: Sequence[float], *, rounds: int = 10_000, seed: int = 0) -> float:
    """Two-sided paired randomisation (sign-flip) test of mean(a - b) over per-query scores."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if not len(diff) or not np.any(diff):
        return 1.0
    observed = abs(diff.mean())
    signs = np.random.default_rng(seed).choice((-1.0, 1.0), size=(rounds, len(diff)))
    flipped = np.abs((signs * diff).mean(axis=1))
    return float((np.count_nonzero(flipped >= observed - 1e-12) + 1) / (rounds + 1))


def measured_alternative(
    scores: Mapping[str, Mapping[str, float]], current: str, qids: Sequence[str]
) -> tuple[str, float, float, str | None]:
    """Of per-query scores by option (``current`` among them): the best other option, its gain over
    ``current``, the paired test's p, and the option to recommend (a gain with p below 0.05, else None)."""
    alternative = max((o for o in scores if o != current), key=lambda o: mean_over(scores[o], qids))
    gain = mean_over(scores[alternative], qids) - mean_over(scores[current], qids)
    p = randomization_test([scores[alternative].get(q, 0.0) for q in qids], [scores[current].get(q, 0.0) for q in qids])
    return alternative, gain, p, alternative if gain > 0 and p < P_SIGNIFICANT else None
