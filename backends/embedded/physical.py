"""One physical index of the embedded backend on disk: SQLite rows (the source of truth), the tantivy text
index and the faiss HNSW graph derived from them, crash recovery, tombstones and compaction.

Layout of ``indexes/<physical>/``: ``docs.sqlite`` (id, title, text, metadata, float32 vector),
``text/`` (tantivy over title and text) and ``vectors-<N>.faiss`` (the graph holding every row key up to N).
It never encodes text or fuses rankings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import tantivy

from hybrid_search.backends.base import (
    BulkResult,
    IndexedDocument,
    IndexSpec,
    StoredDocument,
)
from hybrid_search.backends.embedded.text import analyzer, bm25_query, tantivy_filter
from hybrid_search.config.errors import (
    ConfigError,
    CorruptIndex,
    FailedItem,
    QueryError,
)
from hybrid_search.config.files import atomic_write_text, read_json_file
from hybrid_search.search.filters import METADATA_FIELD, Filter, to_sql
from hybrid_search.search.hits import Hit

__all__ = ["PhysicalIndex", "VECTOR_FILE"]

log = logging.getLogger(__name__)

_SQL_CHUNK = 500  # ids per IN (...) clause, under SQLite's parameter limit
_EXACT_FILTER_LIMIT = 20_000  # below this many allowed docs, a filtered kNN is answered exactly
_FILTER_CACHE_SIZE = 32  # distinct filters whose allowed rows are kept (a bitmap of N/8 bytes each)
_COMPACT_MIN_DEAD = 1_000
_COMPACT_FRACTION = 0.2
VECTOR_FILE = re.compile(r"^vectors-(\d+)\.faiss$")

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS docs(
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS dead(key INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _read_only_connection(db: Path) -> sqlite3.Connection:
    """SQLite opened for reading only: ``mode=ro`` (sees a WAL left by a crash), else ``immutable=1`` (no
    shared-memory file either, for a disk with no room even for that)."""
    for flags in ("mode=ro", "immutable=1"):
        try:
            conn = sqlite3.connect(f"file:{db}?{flags}", uri=True, isolation_level=None, check_same_thread=False)
            conn.execute("SELECT count(*) FROM docs").fetchone()
            return conn
        except sqlite3.OperationalError:
            continue
    raise sqlite3.OperationalError(f"{db} cannot be opened even read-only")


def _file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            crc = zlib.crc32(block, crc)
    return crc


class PhysicalIndex:
    """One physical index directory: SQLite rows plus the tantivy and faiss indexes derived from them."""

    def __init__(self, path: Path, spec: IndexSpec, *, ef_search: int, flush_seconds: float) -> None:
        self.path = path
        self.spec = spec
        self.ef_search = ef_search
        self.flush_seconds = flush_seconds
        self.read_only = False
        try:
            self.db = sqlite3.connect(path / "docs.sqlite", isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA_SQL)
        except sqlite3.OperationalError as exc:
            if not (path / "docs.sqlite").exists() or not any(w in str(exc) for w in ("disk", "read-only", "readonly")):
                raise
            # a full or read-only disk: a complete build stays searchable, opened without any write
            log.warning("embedded index %s opened read-only (%s): searches work, writes do not", path.name, exc)
            self.db = _read_only_connection(path / "docs.sqlite")
            self.read_only = True
        self.analyzer = analyzer(spec.analyzer)
        self.text_index = self._open_text_index()
        self._writer: tantivy.IndexWriter | None = None
        self.vectors, self.vectors_upto = self._load_vectors()
        self._dead_selector: tuple[int, Any, Any] | None = None
        self._dead_epoch = 0  # bumped whenever the tombstone set changes
        self._generation = 0  # bumped whenever any row changes: cached filter selectors go stale
        self._storage_ids: np.ndarray | None = None  # graph position -> row key (see _graph_storage)
        self._filter_cache: OrderedDict[str, tuple[int, list[int] | None, Any, Any]] = OrderedDict()
        self._last_flush = time.monotonic()
        if not self.read_only:
            self._recover()

    # --- creation and recovery -------------------------------------------------------------------
    @staticmethod
    def create(path: Path, spec: IndexSpec, **kwargs: Any) -> PhysicalIndex:
        path.mkdir(parents=True, exist_ok=False)
        (path / "text").mkdir()
        atomic_write_text(path / "spec.json", json.dumps(spec.to_dict()))
        return PhysicalIndex(path, spec, **kwargs)

    @staticmethod
    def read_spec(path: Path) -> IndexSpec:
        fix = f"restore it from a backup, or drop the build ({path}) and ingest again"
        data = read_json_file(path / "spec.json", expect=dict, fix=fix)
        try:
            return IndexSpec.from_dict(data)
        except (TypeError, ValueError, ConfigError) as exc:
            raise ConfigError(f"{path / 'spec.json'} is damaged ({exc}): {fix}") from None

    def _open_text_index(self) -> tantivy.Index:
        builder = tantivy.SchemaBuilder()
        builder.add_text_field("doc_id", stored=True, tokenizer_name="raw")
        builder.add_text_field("title", tokenizer_name="hs_text", index_option="freq")
        builder.add_text_field("text", tokenizer_name="hs_text", index_option="freq")
        builder.add_json_field(METADATA_FIELD, tokenizer_name="raw")
        index = tantivy.Index(builder.build(), path=str(self.path / "text"))
        index.register_tokenizer("hs_text", self.analyzer)
        return index

    def _load_vectors(self) -> tuple[Any, int]:
        files = sorted(
            ((int(m.group(1)), p) for p in self.path.iterdir() if (m := VECTOR_FILE.match(p.name))),
            reverse=True,
        )
        for _upto, stale in files[1:]:
            with contextlib.suppress(OSError):  # tidying only: a read-only or full disk must not stop a search
                stale.unlink(missing_ok=True)
        if not files:
            return self._new_vector_index(), 0
        upto, path = files[0]
        expected = self._meta_text(f"crc:{path.name}")
        if expected is not None and str(_file_crc(path)) != expected:
            raise CorruptIndex(f"{path} does not match the checksum recorded when it was written (damaged on disk)")
        try:
            return faiss.read_index(str(path)), upto
        except RuntimeError as exc:
            raise CorruptIndex(f"{path} cannot be read by faiss ({str(exc).splitlines()[0][:200]})") from None

    def _new_vector_index(self) -> Any:
        hnsw = faiss.IndexHNSWFlat(self.spec.dims, self.spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = self.spec.hnsw_ef_construction
        return faiss.IndexIDMap2(hnsw)

    def _meta(self, name: str, default: int = 0) -> int:
        value = self._meta_text(name)
        return int(value) if value is not None else default

    def _meta_text(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return str(row[0]) if row else None

    def _set_meta(self, name: str, value: int | str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)", (name, str(value)))

    def _recover(self) -> None:
        """Replay rows that tantivy or faiss had not taken in when the process last stopped."""
        text_upto = self._meta("text_upto")
        rows = self.db.execute(
            "SELECT key, doc_id, title, text, metadata FROM docs WHERE key > ? ORDER BY key", (text_upto,)
        ).fetchall()
        if rows:
            log.info("embedded index %s: replaying %d rows into the text index", self.path.name, len(rows))
            self._index_text(rows)
        missing = self.db.execute(
            "SELECT key, vector FROM docs WHERE key > ? ORDER BY key", (self.vectors_upto,)
        ).fetchall()
        if missing:
            self._add_vectors([r[0] for r in missing], np.stack([self._vec(r[1]) for r in missing]))

    # --- writing ----------------------------------------------------------------------------------
    @property
    def writer(self) -> tantivy.IndexWriter:
        if self._writer is None:
            self._writer = self.text_index.writer(heap_size=64_000_000, num_threads=1)
        return self._writer

    def upsert(self, docs: Sequence[IndexedDocument]) -> BulkResult:
        latest: dict[str, IndexedDocument] = {d.doc_id: d for d in docs}  # last write of an id wins
        failed: list[FailedItem] = []
        rows: list[tuple[str, str, str, str, bytes]] = []
        for doc in latest.values():
            reason = self._check(doc)
            if reason:
                failed.append(FailedItem(doc.doc_id, reason))
                continue
            vec = np.asarray(doc.vector, dtype=np.float32)
            if self.spec.similarity == "cosine":
                vec = vec / max(float(np.linalg.norm(vec)), 1e-12)
            rows.append((doc.doc_id, doc.title, doc.text, json.dumps(dict(doc.metadata)), vec.tobytes()))
        if rows:
            self._write_rows(rows)
            self._generation += 1
        return BulkResult(stored=tuple(r[0] for r in rows), failed=tuple(failed))

    def _check(self, doc: IndexedDocument) -> str | None:
        vec = np.asarray(doc.vector)
        if vec.shape != (self.spec.dims,):
            return f"vector has shape {vec.shape}, the index expects ({self.spec.dims},)"
        if not np.all(np.isfinite(vec)):
            return "vector contains NaN or infinity"
        if not doc.doc_id:
            return "empty document id"
        return None

    def _write_rows(self, rows: list[tuple[str, str, str, str, bytes]]) -> None:
        ids = [r[0] for r in rows]
        text_upto = self._meta("text_upto")
        self.db.execute("BEGIN")
        try:
            existing = self._existing(ids)
            old = list(existing.values())
            self.db.executemany("INSERT OR IGNORE INTO dead(key) VALUES (?)", [(k,) for k in old])
            self._delete_keys(old)
            self._dead_epoch += bool(old)
            self.db.executemany("INSERT INTO docs(doc_id, title, text, metadata, vector) VALUES (?, ?, ?, ?, ?)", rows)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        if self.db.execute("SELECT count(*) FROM docs WHERE key > ?", (text_upto,)).fetchone()[0] != len(rows):
            # rows an earlier crash left unindexed are among them: replay from the table, as recovery does
            new = self.db.execute(
                "SELECT key, doc_id, title, text, metadata, vector FROM docs WHERE key > ? ORDER BY key", (text_upto,)
            ).fetchall()
            self._index_text([r[:5] for r in new])
            self._add_vectors([r[0] for r in new], np.stack([self._vec(r[5]) for r in new]))
        else:
            # the common case: index what was just written from memory, without reading the blobs back
            keys = {d: k for k, d in self.db.execute("SELECT key, doc_id FROM docs WHERE key > ?", (text_upto,))}
            ordered = sorted(rows, key=lambda r: keys[r[0]])
            self._index_text([(keys[r[0]], r[0], r[1], r[2], r[3]) for r in ordered], replaced=set(existing))
            vectors = np.frombuffer(b"".join(r[4] for r in ordered), dtype=np.float32).reshape(len(ordered), -1)
            self._add_vectors([keys[r[0]] for r in ordered], vectors)
        self._maybe_flush()

    def _existing(self, doc_ids: Sequence[str]) -> dict[str, int]:
        """doc id -> key of the ids already stored."""
        found: dict[str, int] = {}
        for i in range(0, len(doc_ids), _SQL_CHUNK):
            part = doc_ids[i : i + _SQL_CHUNK]
            marks = ",".join("?" * len(part))
            found.update(
                (d, k) for k, d in self.db.execute(f"SELECT key, doc_id FROM docs WHERE doc_id IN ({marks})", part)
            )
        return found

    def _keys_for(self, doc_ids: Sequence[str]) -> list[int]:
        keys: list[int] = []
        for i in range(0, len(doc_ids), _SQL_CHUNK):
            part = doc_ids[i : i + _SQL_CHUNK]
            marks = ",".join("?" * len(part))
            keys += [r[0] for r in self.db.execute(f"SELECT key FROM docs WHERE doc_id IN ({marks})", part)]
        return keys

    def _delete_keys(self, keys: Sequence[int]) -> None:
        for i in range(0, len(keys), _SQL_CHUNK):
            part = keys[i : i + _SQL_CHUNK]
            self.db.execute(f"DELETE FROM docs WHERE key IN ({','.join('?' * len(part))})", part)

    def _index_text(self, rows: Sequence[tuple[int, str, str, str, str]], replaced: set[str] | None = None) -> None:
        """Add rows to the text index. ``replaced``: the ids that may already be in it (None: any may be, as
        when replaying after a crash), whose old entries are deleted first."""
        writer = self.writer
        for _key, doc_id, title, text, metadata in rows:
            if replaced is None or doc_id in replaced:
                writer.delete_documents_by_term("doc_id", doc_id)
            writer.add_document(
                tantivy.Document(doc_id=doc_id, title=title, text=text, **{METADATA_FIELD: json.loads(metadata)})
            )
        writer.commit()
        self.text_index.reload()
        self._set_meta("text_upto", max(r[0] for r in rows))

    def _add_vectors(self, keys: Sequence[int], vectors: np.ndarray) -> None:
        fresh = [i for i, k in enumerate(keys) if k > self.vectors_upto]
        if not fresh:
            return
        self.vectors.add_with_ids(
            np.ascontiguousarray(vectors[fresh], dtype=np.float32), np.asarray([keys[i] for i in fresh], np.int64)
        )
        self.vectors_upto = max(keys[i] for i in fresh)

    def delete(self, doc_ids: Sequence[str]) -> int:
        keys = self._keys_for(list(doc_ids))
        for doc_id in doc_ids:
            self.writer.delete_documents_by_term("doc_id", doc_id)
        self.writer.commit()
        self.text_index.reload()
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR IGNORE INTO dead(key) VALUES (?)", [(k,) for k in keys])
        self._delete_keys(keys)
        self.db.execute("COMMIT")
        self._dead_epoch += bool(keys)
        self._generation += bool(keys)
        return len(keys)

    def flush(self) -> None:
        """Persist the HNSW graph, compacting tombstones away first when there are many."""
        dead = self._dead_count()
        compact = dead >= _COMPACT_MIN_DEAD and dead > _COMPACT_FRACTION * max(self.count(), 1)
        if compact:
            log.info("embedded index %s: compacting %d tombstones", self.path.name, dead)
            self._rebuild_graph()
        target = self.path / f"vectors-{self.vectors_upto}.faiss"
        if compact or not target.exists():
            self._write_graph(target)
        if compact:  # only once the compacted graph is on disk
            self.db.execute("DELETE FROM dead")
            self._dead_epoch += 1
        self._last_flush = time.monotonic()

    def _write_graph(self, target: Path) -> None:
        """Write the graph under a unique temporary name, record its checksum, then rename it into place:
        a file that exists under its final name always has its checksum recorded."""
        tmp = self.path / f"vectors.{os.getpid()}.tmp"
        faiss.write_index(self.vectors, str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        self._set_meta(f"crc:{target.name}", _file_crc(tmp))
        os.replace(tmp, target)
        for p in self.path.iterdir():
            if VECTOR_FILE.match(p.name) and p != target:
                p.unlink(missing_ok=True)
        self.db.execute("DELETE FROM meta WHERE name LIKE 'crc:%' AND name != ?", (f"crc:{target.name}",))

    def repair(self) -> int:
        """Rebuild the HNSW graph from the vectors SQLite holds (the source of truth) and write it with a
        fresh checksum; return how many vectors it holds."""
        self._rebuild_graph()
        self.vectors_upto = int(self.db.execute("SELECT coalesce(max(key), 0) FROM docs").fetchone()[0])
        self._write_graph(self.path / f"vectors-{self.vectors_upto}.faiss")
        self.db.execute("DELETE FROM dead")
        self._dead_epoch += 1
        self._generation += 1
        return int(self.vectors.ntotal)

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def _rebuild_graph(self) -> None:
        fresh = self._new_vector_index()
        cursor = self.db.execute("SELECT key, vector FROM docs ORDER BY key")
        while batch := cursor.fetchmany(50_000):
            keys = np.asarray([r[0] for r in batch], np.int64)
            fresh.add_with_ids(np.stack([self._vec(r[1]) for r in batch]), keys)
        self.vectors = fresh
        self._storage_ids = None

    # --- reading ----------------------------------------------------------------------------------
    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM docs").fetchone()[0])

    def _dead_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM dead").fetchone()[0])

    @staticmethod
    def _vec(blob: bytes) -> np.ndarray:
        return np.frombuffer(blob, dtype=np.float32)

    def bm25(self, query: str, k: int, filters: Filter | None) -> list[Hit]:
        schema = self.text_index.schema
        restrict = tantivy_filter(schema, filters)
        scored = bm25_query(schema, self.analyzer, query)
        if scored is None:
            return []
        if restrict:
            scored = tantivy.Query.boolean_query(
                [(tantivy.Occur.Must, scored)]
                + [(tantivy.Occur.Must, tantivy.Query.const_score_query(f, 0.0)) for f in restrict]
            )
        searcher = self.text_index.searcher()
        found = searcher.search(scored, limit=k, count=False).hits
        ids = [searcher.doc(addr)["doc_id"][0] for _score, addr in found]
        rows = self._rows_by("doc_id", ids)
        hits: list[Hit] = []
        for (score, _addr), doc_id in zip(found, ids, strict=True):
            if doc_id in rows:
                hits.append(self._hit(rows[doc_id], len(hits) + 1, float(score), bm25=float(score)))
        return hits

    def knn(self, vector: np.ndarray, k: int, num_candidates: int, filters: Filter | None) -> list[Hit]:
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if query.shape[1] != self.spec.dims:
            raise QueryError(f"query vector has {query.shape[1]} dims, the index has {self.spec.dims}")
        if self.spec.similarity == "cosine":
            query = query / max(float(np.linalg.norm(query)), 1e-12)
        if filters:
            allowed, selector = self._filter_selector(filters)
            if allowed is not None:
                return self._exact_knn(query[0], allowed, k)
        else:
            selector = self._not_dead_selector()
        scores, keys = self._graph_search(query, k, num_candidates, selector)
        found = [(int(key), float(s)) for key, s in zip(keys[0], scores[0], strict=True) if key >= 0]
        return self._knn_hits(found)

    def _graph_search(self, queries: np.ndarray, k: int, num_candidates: int, selector: Any) -> tuple[Any, Any]:
        """One HNSW search of one or many queries; ``selector`` limits the candidates (None: all)."""
        params: dict[str, Any] = {"efSearch": max(num_candidates, k, self.ef_search)}
        if selector is not None:
            params["sel"] = selector
        hnsw_params = faiss.SearchParametersHNSW  # type: ignore[attr-defined]  # missing from faiss's stubs
        return self.vectors.search(queries, k, params=hnsw_params(**params))

    def _exact_knn(self, query: np.ndarray, keys: Sequence[int], k: int) -> list[Hit]:
        """Exact inner products over the allowed rows, read from the graph's own flat storage (no copy, no
        table read); only the top ``k`` rows are then fetched."""
        if not len(keys):
            return []
        ids, stored = self._graph_storage()
        wanted = np.asarray(keys, dtype=np.int64)
        pos = np.searchsorted(ids, wanted)
        pos = pos[(pos < len(ids)) & (ids[np.minimum(pos, len(ids) - 1)] == wanted)]
        if not len(pos):
            return []
        sims = stored[pos] @ query
        top = np.argsort(-sims, kind="stable")[:k]
        return self._knn_hits([(int(ids[pos[i]]), float(sims[i])) for i in top])

    def _graph_storage(self) -> tuple[np.ndarray, np.ndarray]:
        """(row key of each graph position, in ascending order; the vectors, a zero-copy view): rows enter
        the graph in key order, and a rebuilt graph keeps that order."""
        n = int(self.vectors.ntotal)
        if self._storage_ids is None or len(self._storage_ids) != n:
            self._storage_ids = faiss.vector_to_array(self.vectors.id_map)
        hnsw: Any = faiss.downcast_index(self.vectors.index)  # IndexHNSWFlat: its stubs lack storage / get_xb
        flat: Any = faiss.downcast_index(hnsw.storage)
        stored = faiss.rev_swig_ptr(flat.get_xb(), n * self.spec.dims).reshape(n, self.spec.dims)
        return self._storage_ids, stored

    def _knn_hits(self, found: Sequence[tuple[int, float]]) -> list[Hit]:
        rows = self._rows_by("key", [key for key, _ in found])
        hits: list[Hit] = []
        for key, score in found:
            if key in rows:
                hits.append(self._hit(rows[key], len(hits) + 1, score, knn=score))
        return hits

    def _filter_selector(self, filters: Filter) -> tuple[list[int] | None, Any]:
        """The rows a filter allows: their keys when few enough for an exact search, else a faiss bitmap
        selector (one bit per row). Cached per filter until the next write, so a repeated filter costs no
        table scan and no per-query id list."""
        cache_key = json.dumps(filters, sort_keys=True, default=str)
        cached = self._filter_cache.get(cache_key)
        if cached is not None and cached[0] == self._generation:
            self._filter_cache.move_to_end(cache_key)
            return cached[1], cached[2]
        where, params = to_sql(filters)
        keys = np.fromiter((r[0] for r in self.db.execute(f"SELECT key FROM docs WHERE {where}", params)), np.int64)
        if len(keys) <= _EXACT_FILTER_LIMIT:
            entry: tuple[int, list[int] | None, Any, Any] = (self._generation, keys.tolist(), None, None)
        else:
            bits = np.zeros(int(keys.max()) + 1, dtype=bool)
            bits[keys] = True
            bitmap = np.packbits(bits, bitorder="little")  # faiss reads bit (i & 7) of byte i >> 3
            # the selector points into ``bitmap``: the cache entry keeps both alive together
            entry = (self._generation, None, faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bitmap)), bitmap)
        self._filter_cache[cache_key] = entry
        while len(self._filter_cache) > _FILTER_CACHE_SIZE:
            self._filter_cache.popitem(last=False)
        return entry[1], entry[2]

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

    def _not_dead_selector(self) -> Any:
        if self._dead_selector is None or self._dead_selector[0] != self._dead_epoch:
            dead = np.asarray([r[0] for r in self.db.execute("SELECT key FROM dead")], dtype=np.int64)
            batch = faiss.IDSelectorBatch(dead) if len(dead) else None
            # the wrapped batch selector is kept alive beside the Not selector that points at it
            self._dead_selector = (self._dead_epoch, faiss.IDSelectorNot(batch) if batch else None, batch)
        return self._dead_selector[1]

    def _ids_by_key(self, keys: Sequence[int]) -> dict[int, str]:
        """Row key -> doc id, reading nothing else (mining needs ids, not texts)."""
        out: dict[int, str] = {}
        for i in range(0, len(keys), _SQL_CHUNK):
            part = list(keys[i : i + _SQL_CHUNK])
            sql = f"SELECT key, doc_id FROM docs WHERE key IN ({','.join('?' * len(part))})"
            out.update(self.db.execute(sql, part).fetchall())
        return out

    def _rows_by(self, column: str, values: Sequence[Any], with_vector: bool = False) -> dict[Any, tuple]:
        cols = "key, doc_id, title, text, metadata" + (", vector" if with_vector else "")
        out: dict[Any, tuple] = {}
        pos = 0 if column == "key" else 1
        for i in range(0, len(values), _SQL_CHUNK):
            part = list(values[i : i + _SQL_CHUNK])
            sql = f"SELECT {cols} FROM docs WHERE {column} IN ({','.join('?' * len(part))})"
            for row in self.db.execute(sql, part):
                out[row[pos]] = row
        return out

    @staticmethod
    def _hit(row: tuple, rank: int, score: float, *, bm25: float | None = None, knn: float | None = None) -> Hit:
        return Hit(
            doc_id=row[1],
            rank=rank,
            score=score,
            title=row[2],
            text=row[3],
            metadata=json.loads(row[4]),
            bm25_score=bm25,
            knn_score=knn,
        )

    def knn_batch(self, vectors: np.ndarray, k: int, num_candidates: int) -> list[list[tuple[str, float]]]:
        """Nearest neighbours of many vectors in one faiss call (threads over queries), as (doc id, score)."""
        query = np.ascontiguousarray(vectors, dtype=np.float32)
        scores, keys = self._graph_search(query, k, num_candidates, self._not_dead_selector())
        ids = self._ids_by_key(sorted({int(x) for x in keys.ravel() if x >= 0}))
        return [
            [(ids[int(key)], float(sc)) for key, sc in zip(krow, srow, strict=True) if key >= 0 and int(key) in ids]
            for krow, srow in zip(keys, scores, strict=True)
        ]

    def iter_vectors(self, batch: int = 10_000) -> Iterable[tuple[list[str], np.ndarray]]:
        """Every stored (ids, vectors) in key order, a batch at a time."""
        cursor = self.db.execute("SELECT doc_id, vector FROM docs ORDER BY key")
        while rows := cursor.fetchmany(batch):
            yield [r[0] for r in rows], np.stack([self._vec(r[1]) for r in rows])

    def iter_documents(self, batch: int = 1_000) -> Iterable[list[StoredDocument]]:
        """Every stored document in key order, a batch at a time, without vectors."""
        cursor = self.db.execute("SELECT doc_id, title, text, metadata FROM docs ORDER BY key")
        while rows := cursor.fetchmany(batch):
            yield [StoredDocument(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def store_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    def close(self) -> None:
        try:
            if self.path.exists() and not self.read_only:
                self.flush()
            if self._writer is not None:
                self._writer.wait_merging_threads()
        except (OSError, sqlite3.Error, RuntimeError, ValueError) as exc:
            # another process may have dropped this build (a retired one) while it was open: nothing to keep
            log.warning("embedded index %s: not flushed on close (%s)", self.path.name, exc)
        finally:
            self._writer = None
            self.db.close()
