"""Duplicate mining over an index: every document's nearest neighbours by its stored vector, as pairs.

The corpus is walked a chunk of stored vectors at a time; each chunk's neighbours come from one batched
kNN call (the faiss HNSW graph directly on the embedded backend, one ``_msearch`` on a cluster), so no
all-pairs matrix is ever held. Kept pairs go to a temporary on-disk table, each once as (smaller id, larger
id), and come back best first a chunk at a time with their texts: memory stays flat whatever the number of
pairs. An optional cross-encoder confirms each kept pair.

Also here: average precision and the best-F1 threshold of pair scores against labelled pairs, for
``duplicates-eval``.
"""

from __future__ import annotations

import csv
import math
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hybrid_search.config.errors import ConfigError

__all__ = [
    "DuplicatePair",
    "MinedPairs",
    "PairScoring",
    "average_precision",
    "best_f1",
    "mine_duplicates",
    "write_pairs",
]


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


class MinedPairs:
    """The pairs a mining run kept, in a private temporary SQLite table (spilled to disk past an 8 MiB page
    cache) rather than in memory. Iterating yields ``DuplicatePair`` best first (by the cross-encoder's
    probability when confirmed, then by similarity), fetching texts from the backend a chunk at a time,
    so the backend must still be open; ``scores()`` yields (a, b, similarity) without texts."""

    def __init__(self, backend: MinableBackend, index: str, *, chunk: int = 1_000) -> None:
        self.backend, self.index, self.chunk = backend, index, chunk
        self.confirmed = False
        self._db = sqlite3.connect("", isolation_level=None)  # "": temporary, on disk, deleted on close
        self._db.executescript(
            "PRAGMA cache_size=-8192; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            "CREATE TABLE pairs (a TEXT, b TEXT, score REAL, rerank REAL, PRIMARY KEY (a, b)) WITHOUT ROWID;"
        )

    def offer(self, rows: Sequence[tuple[str, str, float]]) -> None:
        """Keep each (a, b, score) with a < b, at the best score it was ever offered."""
        self._db.executemany(
            "INSERT INTO pairs (a, b, score) VALUES (?, ?, ?) "
            "ON CONFLICT (a, b) DO UPDATE SET score = max(score, excluded.score)",
            rows,
        )

    def _order(self) -> str:
        return "ORDER BY rerank DESC, score DESC, a, b" if self.confirmed else "ORDER BY score DESC, a, b"

    def _rows(self) -> Iterator[list[tuple[str, str, float, float | None]]]:
        cursor = self._db.execute(f"SELECT a, b, score, rerank FROM pairs {self._order()}")
        while rows := cursor.fetchmany(self.chunk):
            yield rows

    def confirm(self, scorer: Callable[[Sequence[tuple[str, str]]], np.ndarray]) -> None:
        """Score every kept pair's texts with a cross-encoder (logits), a chunk at a time; keep the sigmoid."""
        updates: list[tuple[float, str, str]] = []
        for rows in self._rows():
            texts = self.backend.get_texts(self.index, sorted({i for a, b, _, _ in rows for i in (a, b)}))
            logits = scorer([(texts.get(a, ""), texts.get(b, "")) for a, b, _, _ in rows])
            probs = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
            updates += [(float(pr), a, b) for (a, b, _, _), pr in zip(rows, probs, strict=True)]
            if len(updates) >= 10 * self.chunk:
                self._db.executemany("UPDATE pairs SET rerank = ? WHERE a = ? AND b = ?", updates)
                updates = []
        self._db.executemany("UPDATE pairs SET rerank = ? WHERE a = ? AND b = ?", updates)
        self.confirmed = True

    def scores(self) -> Iterator[tuple[str, str, float]]:
        for rows in self._rows():
            yield from ((a, b, s) for a, b, s, _ in rows)

    def __iter__(self) -> Iterator[DuplicatePair]:
        for rows in self._rows():
            texts = self.backend.get_texts(self.index, sorted({i for a, b, _, _ in rows for i in (a, b)}))
            for a, b, score, rerank in rows:
                yield DuplicatePair(a, b, score, texts.get(a, ""), texts.get(b, ""), rerank)

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM pairs").fetchone()[0])

    def __getitem__(self, position: int) -> DuplicatePair:
        row = self._db.execute(
            f"SELECT a, b, score, rerank FROM pairs {self._order()} LIMIT 1 OFFSET ?", (position,)
        ).fetchone()
        if row is None:
            raise IndexError(position)
        texts = self.backend.get_texts(self.index, [row[0], row[1]])
        return DuplicatePair(row[0], row[1], row[2], texts.get(row[0], ""), texts.get(row[1], ""), row[3])

    def close(self) -> None:
        self._db.close()


MAX_DUPLICATE_TOP_K = 1_000


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
) -> MinedPairs:
    """Pairs whose vector similarity is at least ``threshold``, each once, best first when iterated.

    Memory is one chunk of vectors and neighbours: the kept pairs go to a temporary on-disk table.
    ``confirm`` scores (text, text) pairs with a cross-encoder (logits); kept pairs then carry its sigmoid.
    """
    if top_k < 1 or chunk < 1:
        raise ConfigError("--top-k and the chunk size must be at least 1")
    if top_k > MAX_DUPLICATE_TOP_K:
        # neighbours are held per chunk of documents: top_k x chunk results at once
        raise ConfigError(
            f"--top-k {top_k:,} is over {MAX_DUPLICATE_TOP_K:,} neighbours per document: near-duplicates are "
            "among the first few; lower it"
        )
    pairs = MinedPairs(backend, index)
    for ids, vectors in backend.iter_vectors(index, chunk):
        neighbours = backend.knn_batch(index, vectors, top_k + 1, max(num_candidates, top_k + 1))
        kept = [
            (doc_id, other, score) if doc_id < other else (other, doc_id, score)
            for doc_id, found in zip(ids, neighbours, strict=True)
            for other, score in found
            if other != doc_id and score >= threshold
        ]
        pairs.offer(kept)
        if progress is not None:
            progress(len(ids))
    if confirm is not None:
        pairs.confirm(confirm)
    return pairs


def write_pairs(pairs: Iterable[DuplicatePair], path: str | Path) -> int:
    """Write pairs to CSV as they come (best first from ``MinedPairs``); return how many."""
    written = 0
    with open(path, "w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["a_id", "b_id", "score", "rerank_score", "a_text", "b_text"])
        for p in pairs:
            written += 1
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
    return written


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
