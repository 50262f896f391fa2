"""Passages of long documents in an embedded index: the ``passages`` table (each passage's span and vector,
for documents of more than one), the graph ids that key a passage by its document, and the best passages
attached to hits.

In an index of passages (``IndexSpec.passages``) the graph holds one entry per passage, with id
``(row key << PASSAGE_BITS) | passage number``; a document of one passage is its row's vector at passage 0.
kNN scores a document by its best passage (max-sim). An index without passages keys the graph by row key,
as before passages existed. Never writes rows (``physical`` does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from hybrid_search.backends.embedded.rows import SQL_CHUNK, RowStore
from hybrid_search.search.hits import Hit, Passage
from hybrid_search.search.passages import lexical_passages, top_passages

__all__ = ["PASSAGE_BITS", "PassageRows", "collapse"]

PASSAGE_BITS = 10  # up to 1,024 passages per document (``ingest.chunking.MAX_PASSAGES``)


def collapse(ids: np.ndarray, scores: np.ndarray, bits: int, k: int) -> list[tuple[int, float]]:
    """(row key, best score) of the first ``k`` documents among graph hits in score order: each document
    once, at its best passage's score. ``ids`` below 0 (faiss's padding) are skipped."""
    if not bits:  # one entry per document: the ids are distinct already
        keep = ids >= 0
        return list(zip(ids[keep][:k].tolist(), scores[keep][:k].tolist(), strict=True))
    seen: set[int] = set()
    out: list[tuple[int, float]] = []
    for gid, score in zip(ids.tolist(), scores.tolist(), strict=True):
        if gid < 0:
            continue
        key = gid >> bits
        if key not in seen:
            seen.add(key)
            out.append((key, float(score)))
            if len(out) >= k:
                break
    return out


class PassageRows(RowStore):
    """Reads of the passages table and the passage ids of the graph."""

    _long_known: tuple[int, bool] | None = None  # (row generation, whether any document has passages rows)

    @property
    def bits(self) -> int:
        """Low bits of a graph id that number a document's passage (0: the graph is keyed by row key)."""
        return PASSAGE_BITS if self.spec.passages else 0

    def _passage_rows(self, keys: Sequence[int], *, with_vector: bool) -> dict[int, list[tuple]]:
        """row key -> its passages as (number, start, end[, vector]) in order, for the keys that have rows
        (documents of more than one passage)."""
        cols = 'key, ord, start, "end"' + (", vector" if with_vector else "")
        out: dict[int, list[tuple]] = {}
        for i in range(0, len(keys), SQL_CHUNK):
            part = list(keys[i : i + SQL_CHUNK])
            marks = ",".join("?" * len(part))
            for row in self.db.execute(f"SELECT {cols} FROM passages WHERE key IN ({marks}) ORDER BY key, ord", part):
                out.setdefault(row[0], []).append(row[1:])
        return out

    def _graph_entries(self, keys: Sequence[int], vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The graph ids and vectors of rows ``keys`` (in key order) whose row vectors are ``vectors``: one
        entry per row, or per passage in an index of passages."""
        if not self.bits:
            return np.asarray(keys, np.int64), vectors
        extra = self._passage_rows(keys, with_vector=True)
        ids: list[int] = []
        rows: list[np.ndarray] = []
        for i, key in enumerate(keys):
            found = extra.get(int(key))
            if found:
                ids += [(int(key) << self.bits) | p[0] for p in found]
                rows += [self._vec(p[3]) for p in found]
            else:
                ids.append(int(key) << self.bits)
                rows.append(vectors[i])
        return np.asarray(ids, np.int64), np.stack(rows)

    def passages_for(self, hits: Sequence[Hit], query: str, vector: np.ndarray | None, n: int = 1) -> list[Hit]:
        """Hits with their best ``n`` passages (``Hit.passage``, ``Hit.passages``): by the query vector's
        similarity to each passage when there is a vector, else by the query's terms. Hits need their text
        (filled). An index without passages returns the hits as they are."""
        if not self.bits or not hits:
            return list(hits)
        if not self._has_long_documents():  # every document is one passage: its whole text, at its kNN score
            whole = [Passage(0, 0, len(h.text), h.text, h.knn_score if vector is not None else None) for h in hits]
            return [replace(h, passage=p, passages=(p,)) for h, p in zip(hits, whole, strict=True)]
        keys = self._pairs("doc_id, key", "doc_id", [h.doc_id for h in hits])
        rows = self._passage_rows(list(keys.values()), with_vector=vector is not None)
        single = [keys[h.doc_id] for h in hits if h.doc_id in keys and keys[h.doc_id] not in rows]
        single_vectors = self._pairs("key, vector", "key", single) if vector is not None and single else {}
        query_vec = None if vector is None else np.asarray(vector, dtype=np.float32).reshape(-1)
        if query_vec is not None and self.spec.similarity == "cosine":
            query_vec = query_vec / max(float(np.linalg.norm(query_vec)), 1e-12)
        out: list[Hit] = []
        for hit in hits:
            key = keys.get(hit.doc_id)
            found = rows.get(key, []) if key is not None else []
            spans = [(p[1], p[2]) for p in found] or [(0, len(hit.text))]
            if query_vec is None:
                chosen = lexical_passages(query, hit.text, spans, n)
            else:
                if key is None:  # deleted since it was scored
                    out.append(hit)
                    continue
                stored = [self._vec(p[3]) for p in found] if found else [self._vec(single_vectors[key])]
                chosen = top_passages((np.stack(stored) @ query_vec).tolist(), hit.text, spans, n)
            out.append(replace(hit, passage=chosen[0], passages=tuple(chosen)))
        return out

    def _has_long_documents(self) -> bool:
        """Whether any document has more than one passage (asked again after each write)."""
        known = self._long_known
        if known is None or known[0] != self._generation:
            known = (self._generation, self.db.execute("SELECT 1 FROM passages LIMIT 1").fetchone() is not None)
            self._long_known = known
        return known[1]

    def passage_count(self) -> int:
        """Passages stored: one per document, plus the extra passages of long documents."""
        extra = self.db.execute("SELECT count(*) - count(DISTINCT key) FROM passages").fetchone()[0]
        return self.count() + int(extra or 0)
