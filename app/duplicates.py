"""Duplicate mining over an index: every document's nearest neighbours by its stored vector, as pairs.

The corpus is walked a chunk of stored vectors at a time; each chunk's neighbours come from one batched
kNN call (the faiss HNSW graph directly on the embedded backend, one ``_msearch`` on a cluster), so no
all-pairs matrix is ever held: memory is one chunk plus the pairs kept above the threshold. A pair is
stored once as (smaller id, larger id). An optional cross-encoder confirms each kept pair.

Also here: average precision and the best-F1 threshold of pair scores against labelled pairs, for
``duplicates-eval``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hybrid_search.config.errors import ConfigError

__all__ = ["DuplicatePair", "PairScoring", "average_precision", "best_f1", "mine_duplicates", "write_pairs"]


class MinableBackend(Protocol):
    def iter_vectors(self, index: str, batch: int = ...) -> Iterable[tuple[list[str], np.ndarray]]: ...

    def knn_batch(
        self, index: str, vectors: np.ndarray, k: int, num_candidates: int
    ) -> list[list[tuple[str, float]]]: ...

    def get_texts(self, index: str, doc_ids: Sequence[str]) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class DuplicatePair:
    """Two documents and how alike they are: cosine of their vectors, and the cross-encoder's probability."""

    a_id: str
    b_id: str
    score: float
    a_text: str = ""
    b_text: str = ""
    rerank_score: float | None = None


def mine_duplicates(
    backend: MinableBackend,
    index: str,
    *,
    threshold: float = 0.8,
    top_k: int = 10,
    chunk: int = 2_048,
    num_candidates: int = 64,
    confirm: Callable[[Sequence[tuple[str, str]]], np.ndarray] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[DuplicatePair]:
    """Pairs whose vector similarity is at least ``threshold``, best first, each once.

    ``confirm`` scores (text, text) pairs with a cross-encoder (logits); kept pairs then carry its sigmoid.
    """
    if top_k < 1 or chunk < 1:
        raise ConfigError("--top-k and the chunk size must be at least 1")
    best: dict[tuple[str, str], float] = {}
    for ids, vectors in backend.iter_vectors(index, chunk):
        neighbours = backend.knn_batch(index, vectors, top_k + 1, max(num_candidates, top_k + 1))
        for doc_id, found in zip(ids, neighbours, strict=True):
            for other, score in found:
                if other == doc_id or score < threshold:
                    continue
                key = (doc_id, other) if doc_id < other else (other, doc_id)
                if score > best.get(key, -math.inf):
                    best[key] = score
        if progress is not None:
            progress(len(ids))
    ordered = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
    texts = backend.get_texts(index, sorted({i for (a, b), _ in ordered for i in (a, b)})) if ordered else {}
    pairs = [DuplicatePair(a, b, s, texts.get(a, ""), texts.get(b, "")) for (a, b), s in ordered]
    if confirm is not None and pairs:
        logits = confirm([(p.a_text, p.b_text) for p in pairs])
        probs = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
        pairs = sorted(
            (
                DuplicatePair(p.a_id, p.b_id, p.score, p.a_text, p.b_text, float(pr))
                for p, pr in zip(pairs, probs, strict=True)
            ),
            key=lambda p: (-(p.rerank_score or 0.0), -p.score),
        )
    return pairs


def write_pairs(pairs: Sequence[DuplicatePair], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["a_id", "b_id", "score", "rerank_score", "a_text", "b_text"])
        for p in pairs:
            out.writerow(
                [
                    p.a_id,
                    p.b_id,
                    f"{p.score:.6f}",
                    "" if p.rerank_score is None else f"{p.rerank_score:.6f}",
                    p.a_text,
                    p.b_text,
                ]
            )


def average_precision(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Mean of the precision at each positive, ranking by score descending (ties: positives last)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], labels[i]))
    hits = 0
    total = 0.0
    for rank, i in enumerate(order, start=1):
        if labels[i]:
            hits += 1
            total += hits / rank
    return total / hits if hits else 0.0


def best_f1(scores: Sequence[float], labels: Sequence[int]) -> tuple[float, float]:
    """(best F1, the score threshold that gives it): predict duplicate when score >= threshold."""
    positives = sum(1 for x in labels if x)
    if not positives:
        return 0.0, math.inf
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    best, threshold, tp = 0.0, math.inf, 0
    for n, i in enumerate(order, start=1):
        tp += 1 if labels[i] else 0
        if n < len(order) and scores[order[n]] == scores[i]:
            continue  # a threshold cannot split equal scores
        f1 = 2 * tp / (n + positives)
        if f1 > best:
            best, threshold = f1, scores[i]
    return best, threshold


@dataclass(frozen=True, slots=True)
class PairScoring:
    """How one method scored the labelled pairs."""

    name: str
    average_precision: float
    best_f1: float
    threshold: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "average_precision": round(self.average_precision, 4),
            "best_f1": round(self.best_f1, 4),
            "threshold": round(self.threshold, 4),
            "seconds": round(self.seconds, 2),
        }
