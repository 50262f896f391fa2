"""The SQLite side of a physical index (the source of truth): metadata values, rows by id or key, hits
built from rows, stored documents and counts. Never writes rows (``physical`` does)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_search.backends.base import (
    IndexSpec,
    StoredDocument,
)
from hybrid_search.search.filters import Filter, to_sql
from hybrid_search.search.hits import Hit, ScoredHits

__all__ = ["SQL_CHUNK", "RowStore"]

SQL_CHUNK = 500  # ids per IN (...) clause, under SQLite's parameter limit
ID_MEMO_LIMIT = 1 << 18  # row keys whose doc id a process remembers (some 30 MB at most)


class RowStore:
    """Reads of a physical index's ``docs.sqlite``."""

    # set by ``PhysicalIndex.__init__``; declared here for the parts that read them
    path: Path
    spec: IndexSpec
    ef_search: int
    exact_below: int
    read_only: bool
    db: sqlite3.Connection
    vectors: Any
    vectors_upto: int
    _dead_selector: tuple[int, Any, Any] | None
    _dead_epoch: int
    _generation: int
    _storage_ids: np.ndarray | None
    _filter_cache: OrderedDict[str, tuple[int, list[int] | None, Any, Any]]
    _mutex: threading.RLock
    _id_memo: tuple[int, dict[int, str]] | None = None  # (tombstone epoch, row key -> doc id)

    def _follow(self) -> None:
        """Catch up with other processes' writes (``physical``)."""

    def _meta(self, name: str, default: int = 0) -> int:
        value = self._meta_text(name)
        return int(value) if value is not None else default

    def _meta_text(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return str(row[0]) if row else None

    def _set_meta(self, name: str, value: int | str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)", (name, str(value)))

    def _existing(self, doc_ids: Sequence[str]) -> dict[str, int]:
        """doc id -> key of the ids already stored."""
        return self._pairs("doc_id, key", "doc_id", doc_ids)

    def _keys_for(self, doc_ids: Sequence[str]) -> list[int]:
        keys: list[int] = []
        for i in range(0, len(doc_ids), SQL_CHUNK):
            part = doc_ids[i : i + SQL_CHUNK]
            marks = ",".join("?" * len(part))
            keys += [r[0] for r in self.db.execute(f"SELECT key FROM docs WHERE doc_id IN ({marks})", part)]
        return keys

    def _pairs(self, select: str, column: str, values: Sequence[Any]) -> dict[Any, Any]:
        """``SELECT <select> FROM docs WHERE <column> IN (values)`` as a dict of its two columns, in chunks of
        ``SQL_CHUNK`` parameters."""
        out: dict[Any, Any] = {}
        for i in range(0, len(values), SQL_CHUNK):
            part = list(values[i : i + SQL_CHUNK])
            out.update(
                self.db.execute(f"SELECT {select} FROM docs WHERE {column} IN ({','.join('?' * len(part))})", part)
            )
        return out

    def _ids_by_key(self, keys: Sequence[int]) -> dict[int, str]:
        """Row key -> doc id of the keys still stored, reading nothing else (fusion and mining need ids, not
        texts). Remembered: a row's key names one document for good (AUTOINCREMENT never reuses one), so only
        keys not met since the tombstones last changed are read; ``ID_MEMO_LIMIT`` at most are kept."""
        if self._id_memo is None or self._id_memo[0] != self._dead_epoch:
            self._id_memo = (self._dead_epoch, {})
        memo = self._id_memo[1]
        missing = [key for key in keys if key not in memo]
        if missing:
            found: dict[int, str] = self._pairs("key, doc_id", "key", missing)
            if len(memo) + len(found) > ID_MEMO_LIMIT:
                memo.clear()
            memo.update(found)
        return {key: memo[key] for key in keys if key in memo}

    def content_hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """doc id -> the content hash it was stored with ("" when stored before hashes were kept)."""
        return self._pairs("doc_id, hash", "doc_id", doc_ids)

    def _rows_by(self, column: str, values: Sequence[Any], with_vector: bool = False) -> dict[Any, tuple]:
        cols = "key, doc_id, title, text, metadata" + (", vector" if with_vector else "")
        out: dict[Any, tuple] = {}
        pos = 0 if column == "key" else 1
        for i in range(0, len(values), SQL_CHUNK):
            part = list(values[i : i + SQL_CHUNK])
            sql = f"SELECT {cols} FROM docs WHERE {column} IN ({','.join('?' * len(part))})"
            for row in self.db.execute(sql, part):
                out[row[pos]] = row
        return out

    @staticmethod
    def _hit(
        row: tuple,
        rank: int,
        score: float,
        *,
        bm25: float | None = None,
        knn: float | None = None,
        sparse: float | None = None,
    ) -> Hit:
        return Hit(
            doc_id=row[1],
            rank=rank,
            score=score,
            title=row[2],
            text=row[3],
            metadata=json.loads(row[4]),
            bm25_score=bm25,
            knn_score=knn,
            sparse_score=sparse,
        )

    def _scored_hits(self, found: Sequence[tuple[int, float]], leg: str) -> ScoredHits:
        """Row keys with their scores as ids and scores only (a row deleted meanwhile is left out): what a
        fused search ranks before ``fill`` fetches the fields of the few it keeps."""
        ids = self._ids_by_key([key for key, _ in found])
        kept = [(ids[key], score) for key, score in found if key in ids]
        return ScoredHits([i for i, _ in kept], [s for _, s in kept], f"{leg}_score")

    def fill(self, hits: Sequence[Hit]) -> list[Hit]:
        """Hits with their stored title, text and metadata, ranked again from 1; ids no longer stored are
        left out (deleted since they were scored)."""
        rows = self._rows_by("doc_id", [h.doc_id for h in hits])
        out: list[Hit] = []
        for hit in hits:
            row = rows.get(hit.doc_id)
            if row is not None:
                out.append(replace(hit, rank=len(out) + 1, title=row[2], text=row[3], metadata=json.loads(row[4])))
        return out

    def _filter_keys(self, filters: Filter) -> np.ndarray:
        """The row keys of the documents ``filters`` allows (one table scan)."""
        where, params = to_sql(filters)
        return np.fromiter((r[0] for r in self.db.execute(f"SELECT key FROM docs WHERE {where}", params)), np.int64)

    def _filter_doc_ids(self, filters: Filter) -> list[str]:
        """The doc ids of the documents ``filters`` allows (one table scan)."""
        where, params = to_sql(filters)
        return [r[0] for r in self.db.execute(f"SELECT doc_id FROM docs WHERE {where}", params)]

    @staticmethod
    def _vec(blob: bytes) -> np.ndarray:
        return np.frombuffer(blob, dtype=np.float32)

    def metadata_types(self, sample: int = 1_000) -> dict[str, str]:
        """Metadata field -> type (keyword, long, double, boolean) as a sample of stored rows holds them."""
        names = {str: "keyword", bool: "boolean", int: "long", float: "double"}
        found: dict[str, str] = {}
        for (raw,) in self.db.execute("SELECT metadata FROM docs LIMIT ?", (sample,)):
            for name, value in json.loads(raw).items():
                if isinstance(value, list):  # a list holds values of its elements' type
                    if not value:
                        continue
                    value = value[0]
                found.setdefault(name, names.get(type(value), "keyword"))
        return dict(sorted(found.items()))

    def iter_documents(self, batch: int = 1_000) -> Iterable[list[StoredDocument]]:
        """Every stored document in key order, a batch at a time, without vectors."""
        cursor = self.db.execute("SELECT doc_id, title, text, metadata FROM docs ORDER BY key")
        while rows := cursor.fetchmany(batch):
            yield [StoredDocument(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def store_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    # --- reading ----------------------------------------------------------------------------------
    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM docs").fetchone()[0])

    def _dead_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM dead").fetchone()[0])
