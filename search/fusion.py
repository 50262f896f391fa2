"""Rank fusion as pure functions in a registry.

A *run* is a ranked list of ``(doc_id, score)`` pairs, best first. Every fuser takes runs and returns one
fused run, best first, ties broken by doc id so results are deterministic. Nothing here does I/O.

- Reciprocal rank fusion: Cormack, Clarke & Buettcher, "Reciprocal Rank Fusion outperforms Condorcet and
  individual Rank Learning Methods", SIGIR 2009. ``score(d) = sum_i w_i / (k + rank_i(d))``, ranks from 1.
- Linear combination of normalised scores (CombSUM with weights): Fox & Shaw, "Combination of Multiple
  Searches", TREC-2 1994; min-max and z-score normalisation as compared by Lee, SIGIR 1997; L2 (divide by
  the run's norm) as OpenSearch's normalization processor does. A document
  absent from a run contributes 0 for that run. A run whose scores are all equal (zero range, or a single
  hit) normalises to 1.0 for min-max and 0.0 for z-score rather than dividing by zero.
"""

from __future__ import annotations

import heapq
import math
import operator
from collections.abc import Callable, Sequence
from typing import TypeAlias

from hybrid_search.config.errors import ConfigError

__all__ = [
    "FUSERS",
    "NORMALIZERS",
    "Run",
    "fuse",
    "fuse_linear",
    "fuse_rrf",
    "normalize_l2",
    "normalize_minmax",
    "normalize_zscore",
]

Run: TypeAlias = Sequence[tuple[str, float]]


def _order(item: tuple[str, float]) -> tuple[float, str]:
    return -item[1], item[0]


def _ranked(scores: dict[str, float], limit: int | None) -> list[tuple[str, float]]:
    """Best first, ties by id; only the first ``limit`` when given (a partial sort: the same prefix)."""
    if limit is not None and limit < len(scores):
        if limit <= 0:
            return []
        # the limit-th best score, found on bare floats; every item at or above it is sorted, ties by id
        cut = heapq.nlargest(limit, scores.values())[-1]
        head = [item for item in scores.items() if item[1] >= cut]
        return sorted(head, key=_order)[:limit]
    return sorted(scores.items(), key=_order)


def _weights(runs: Sequence[Run], weights: Sequence[float] | None) -> Sequence[float]:
    if weights is None:
        return [1.0] * len(runs)
    if len(weights) != len(runs):
        raise ConfigError(f"{len(weights)} fusion weights given for {len(runs)} runs: give one per run")
    if any(w < 0 or not math.isfinite(w) for w in weights):
        raise ConfigError(f"fusion weights must be finite and non-negative, got {list(weights)}")
    return weights


def fuse_rrf(
    runs: Sequence[Run], *, k: int = 60, weights: Sequence[float] | None = None, limit: int | None = None
) -> list[tuple[str, float]]:
    """Reciprocal rank fusion with constant ``k`` (60 in the paper); optional per-run weights; the first
    ``limit`` fused only when given."""
    if k < 1:
        raise ConfigError(f"RRF constant k must be at least 1, got {k}")
    fused: dict[str, float] = {}
    for run, weight in zip(runs, _weights(runs, weights), strict=True):
        for rank, (doc_id, _score) in enumerate(run, start=1):
            fused[doc_id] = fused.get(doc_id, 0.0) + weight / (k + rank)
    return _ranked(fused, limit)


def normalize_minmax(scores: Sequence[float]) -> list[float]:
    """Scale to [0, 1]; a zero-range list maps to all 1.0, an empty one to []."""
    if not scores:
        return []
    low, high = min(scores), max(scores)
    if high - low <= 0.0:
        return [1.0] * len(scores)
    return [(s - low) / (high - low) for s in scores]


def normalize_zscore(scores: Sequence[float]) -> list[float]:
    """Subtract the mean, divide by the (population) standard deviation; zero spread maps to all 0.0."""
    if not scores:
        return []
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    if std <= 0.0:
        return [0.0] * len(scores)
    return [(s - mean) / std for s in scores]


def normalize_l2(scores: Sequence[float]) -> list[float]:
    """Divide by the run's Euclidean norm (OpenSearch's ``l2``); an all-zero run stays zero."""
    norm = math.sqrt(sum(map(operator.mul, scores, scores)))
    if norm <= 0.0:
        return [0.0] * len(scores)
    return [s / norm for s in scores]


NORMALIZERS: dict[str, Callable[[Sequence[float]], list[float]]] = {
    "minmax": normalize_minmax,
    "zscore": normalize_zscore,
    "l2": normalize_l2,
}


def fuse_linear(
    runs: Sequence[Run],
    *,
    weights: Sequence[float] | None = None,
    normalizer: str = "minmax",
    limit: int | None = None,
) -> list[tuple[str, float]]:
    """Weighted sum of per-run normalised scores; a document missing from a run gets 0 from it; the first
    ``limit`` fused only when given."""
    if normalizer not in NORMALIZERS:
        raise ConfigError(f"unknown normalizer {normalizer!r}: choose one of {sorted(NORMALIZERS)}")
    norm = NORMALIZERS[normalizer]
    fused: dict[str, float] = {}
    for run, weight in zip(runs, _weights(runs, weights), strict=True):
        for (doc_id, _), value in zip(run, norm([s for _, s in run]), strict=True):
            fused[doc_id] = fused.get(doc_id, 0.0) + weight * value
    return _ranked(fused, limit)


FUSERS: dict[str, Callable[..., list[tuple[str, float]]]] = {"rrf": fuse_rrf, "linear": fuse_linear}


def fuse(method: str, runs: Sequence[Run], **params: object) -> list[tuple[str, float]]:
    """Fuse ``runs`` with the registered ``method`` (``rrf`` or ``linear``)."""
    try:
        fuser = FUSERS[method]
    except KeyError:
        raise ConfigError(f"unknown fusion {method!r}: choose one of {sorted(FUSERS)}") from None
    return fuser(runs, **params)
