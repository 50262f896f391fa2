"""The embedded backend's learned-sparse index: exact dot-product search over float postings in numpy.

Sparse vectors live in SQLite (table ``sparse``: row key -> JSON token weights, written in the same
transaction as the row, so a crash leaves a document with its sparse vector or without either). The
inverted index is derived: built in memory from the table on the first sparse search after a change, one
posting list (row keys, weights) per token. A query scores only the postings of its own tokens (about 20),
so a search costs what its tokens' posting lists hold, and the answer is the exact dot product.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["SparsePostings"]


class SparsePostings:
    """Token -> (row keys, weights): an exact inverted index of sparse vectors."""

    def __init__(self, rows: Iterable[tuple[int, str]]) -> None:
        keys: dict[str, list[int]] = {}
        weights: dict[str, list[float]] = {}
        self.docs = 0
        for key, terms in rows:
            self.docs += 1
            for token, weight in json.loads(terms).items():
                keys.setdefault(token, []).append(key)
                weights.setdefault(token, []).append(weight)
        self._postings = {
            t: (np.asarray(keys[t], dtype=np.int64), np.asarray(weights[t], dtype=np.float32)) for t in keys
        }
        self.postings = sum(len(k) for k, _ in self._postings.values())

    def search(self, query: Mapping[str, float], k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """The ``k`` rows of highest dot product with ``query`` (ties by row key), restricted to ``allowed``
        row keys when given; rows sharing no token with the query are not returned."""
        parts = [(self._postings[t], w) for t, w in query.items() if t in self._postings]
        if not parts or k < 1:
            return []
        keys = np.concatenate([p[0] for p, _ in parts])
        weights = np.concatenate([p[1].astype(np.float64) * w for p, w in parts])
        if allowed is not None:
            inside = np.isin(keys, allowed)
            keys, weights = keys[inside], weights[inside]
            if not len(keys):
                return []
        unique, inverse = np.unique(keys, return_inverse=True)
        scores = np.bincount(inverse, weights=weights)
        top = np.argsort(-scores, kind="stable")[:k]  # unique is sorted by key: ties go to the lower key
        return [(int(unique[i]), float(scores[i])) for i in top]
