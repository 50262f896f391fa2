"""The embedded backend: a real BM25 inverted index (tantivy) and a real HNSW index (faiss) on local disk.

It is the default when no cluster is configured, and runs the same pipeline as the engine backends.

Layout under ``data_dir``::

    aliases.json                      alias -> physical index, replaced atomically
    indexes/<physical>/docs.sqlite    source of truth: id, title, text, metadata, vector (float32)
    indexes/<physical>/text/          tantivy index over title and text (keyed by doc id)
    indexes/<physical>/vectors-<N>.faiss   HNSW graph holding every row key up to N

SQLite commits each upsert batch first; tantivy and faiss are derived from it and each records how far it
got, so reopening after a crash replays what they missed and never duplicates a vector. Replaced and
deleted rows become tombstones that searches skip until the HNSW graph is compacted.
This module must never encode text or fuse rankings; it is one process's store, not a server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sqlite3
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import tantivy

from hybrid_search.backends.base import (
    BulkResult,
    IndexedDocument,
    IndexSpec,
    IndexStats,
    StoredDocument,
    check_index_name,
    checks_names,
    previous_alias,
)
from hybrid_search.backends.logsinks import JsonlLogSink
from hybrid_search.config.errors import (
    ConfigError,
    CorruptIndex,
    FailedItem,
    FusionUnsupported,
    IndexNotFound,
    QueryError,
)
from hybrid_search.config.files import FileLock, atomic_write_text, describe_holder, read_json_file
from hybrid_search.config.names import build_pattern
from hybrid_search.config.text import passage_text
from hybrid_search.search.filters import METADATA_FIELD, Filter, clauses, to_sql
from hybrid_search.search.hits import Hit
from hybrid_search.search.request import SearchRequest

__all__ = ["EmbeddedBackend", "LexicalIndex"]

log = logging.getLogger(__name__)

_SQL_CHUNK = 500  # ids per IN (...) clause, under SQLite's parameter limit
_EXACT_FILTER_LIMIT = 20_000  # below this many allowed docs, a filtered kNN is answered exactly
_FILTER_CACHE_SIZE = 32  # distinct filters whose allowed rows are kept (a bitmap of N/8 bytes each)
_COMPACT_MIN_DEAD = 1_000
_COMPACT_FRACTION = 0.2
_VECTOR_FILE = re.compile(r"^vectors-(\d+)\.faiss$")

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


def _analyzer(kind: str) -> tantivy.TextAnalyzer:
    """Close to Elasticsearch's ``standard`` analyzer, or its ``english`` one (stop words, Porter2 stems)."""
    builder = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple()).filter(tantivy.Filter.remove_long(255))
    builder = builder.filter(tantivy.Filter.lowercase())
    if kind == "english":
        builder = builder.filter(tantivy.Filter.stopword("english")).filter(tantivy.Filter.stemmer("english"))
    return builder.build()


def _tantivy_filter(schema: tantivy.Schema, filters: Filter | None) -> list[tantivy.Query]:
    field = METADATA_FIELD
    ops = {
        "eq": lambda name, v: tantivy.Query.term_query(schema, f"{field}.{name}", v),
        "in": lambda name, vs: tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(schema, f"{field}.{name}", v)) for v in vs]
        ),
    }
    return [ops[op](name, value) for op, name, value in clauses(filters)]


def _bm25_query(schema: tantivy.Schema, analyzer: tantivy.TextAnalyzer, query: str) -> tantivy.Query | None:
    """Every analysed term in title or text; ``None`` when the analyzer leaves no term."""
    terms = list(analyzer.analyze(query))
    if not terms:
        return None
    per_field = [
        tantivy.Query.boolean_query([(tantivy.Occur.Should, tantivy.Query.term_query(schema, f, t)) for t in terms])
        for f in ("title", "text")
    ]
    # best_fields, as Elasticsearch's multi_match: the better field's score counts
    return tantivy.Query.disjunction_max_query(per_field, tie_breaker=0.0)


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


class LexicalIndex:
    """A BM25-only index in memory with a chosen analyzer, scored as the embedded backend scores: for
    measuring what another analyzer would do to a corpus before anyone reindexes it."""

    def __init__(self, analyzer: str) -> None:
        builder = tantivy.SchemaBuilder()
        builder.add_text_field("doc_id", stored=True, tokenizer_name="raw")
        builder.add_text_field("title", tokenizer_name="hs_text", index_option="freq")
        builder.add_text_field("text", tokenizer_name="hs_text", index_option="freq")
        self.analyzer = _analyzer(analyzer)
        self.index = tantivy.Index(builder.build())
        self.index.register_tokenizer("hs_text", self.analyzer)
        self._writer: tantivy.IndexWriter | None = self.index.writer(heap_size=64_000_000, num_threads=1)
        self.count = 0

    def add(self, docs: Iterable[StoredDocument]) -> None:
        if self._writer is None:
            raise RuntimeError("LexicalIndex.add after the first search")
        for doc in docs:
            self._writer.add_document(tantivy.Document(doc_id=doc.doc_id, title=doc.title, text=doc.text))
            self.count += 1

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        if self._writer is not None:
            self._writer.commit()
            self._writer = None
            self.index.reload()
        scored = _bm25_query(self.index.schema, self.analyzer, query)
        if scored is None:
            return []
        searcher = self.index.searcher()
        return [
            (searcher.doc(addr)["doc_id"][0], float(score))
            for score, addr in searcher.search(scored, limit=k, count=False).hits
        ]


class _PhysicalIndex:
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
        self.analyzer = _analyzer(spec.analyzer)
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
    def create(path: Path, spec: IndexSpec, **kwargs: Any) -> _PhysicalIndex:
        path.mkdir(parents=True, exist_ok=False)
        (path / "text").mkdir()
        atomic_write_text(path / "spec.json", json.dumps(spec.to_dict()))
        return _PhysicalIndex(path, spec, **kwargs)

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
            ((int(m.group(1)), p) for p in self.path.iterdir() if (m := _VECTOR_FILE.match(p.name))),
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
            if _VECTOR_FILE.match(p.name) and p != target:
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
        restrict = _tantivy_filter(schema, filters)
        scored = _bm25_query(schema, self.analyzer, query)
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


class EmbeddedBackend:
    """The ``Backend`` protocol on tantivy + faiss + SQLite under ``data_dir``. Nothing is opened until used."""

    name = "embedded"
    build_check_seconds = 0.0  # a stat of aliases.json: cheap enough before every search

    def __init__(self, *, data_dir: str | Path, ef_search: int = 100, flush_seconds: float = 30.0) -> None:
        if ef_search < 1:
            raise ConfigError(f"ef_search must be at least 1, got {ef_search}")
        self.data_dir = Path(data_dir)
        self.ef_search = ef_search
        self.flush_seconds = flush_seconds
        self._open: dict[str, _PhysicalIndex] = {}
        self._aliases_cache: tuple[tuple[int, int, int], dict[str, str]] | None = None
        self.alias_reads = 0  # times aliases.json was parsed (it is re-read only when it changed)

    # --- names and aliases ------------------------------------------------------------------------
    @property
    def _aliases_path(self) -> Path:
        return self.data_dir / "aliases.json"

    def _aliases(self) -> dict[str, str]:
        """alias -> physical, as aliases.json holds it now; parsed again only when the file was replaced
        (every write renames a new file into place, so its inode changes)."""
        try:
            st = os.stat(self._aliases_path)
        except FileNotFoundError:
            return {}
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._aliases_cache is not None and self._aliases_cache[0] == stamp:
            return dict(self._aliases_cache[1])
        fix = "restore it from a backup, or remove it (every alias is then forgotten; the builds stay on disk)"
        data = read_json_file(self._aliases_path, expect=dict, fix=fix)
        bad = [k for k, v in data.items() if not isinstance(v, str)]
        if bad:
            raise ConfigError(f"{self._aliases_path} is damaged (alias {bad[0]!r} names no build): {fix}")
        self.alias_reads += 1
        self._aliases_cache = (stamp, data)
        return dict(data)

    @contextlib.contextmanager
    def _editing_aliases(self) -> Iterator[dict[str, str]]:
        """aliases.json read, changed by the caller and written back under the data dir's alias lock, so
        two processes changing aliases (even of different indexes) never lose each other's update."""
        lock = FileLock(
            self.data_dir / "locks" / ".aliases.lock",  # no index name starts with a dot
            lambda holder: f"aliases.json under {self.data_dir} is being changed by {describe_holder(holder)}",
            wait=30.0,
        )
        with lock.held():
            aliases = self._aliases()
            yield aliases
            atomic_write_text(self._aliases_path, json.dumps(aliases, indent=1, sort_keys=True))

    def writer_lock(self, alias: str, *, force: bool = False) -> contextlib.AbstractContextManager[None]:
        """An OS lock on ``locks/<alias>.lock``: the kernel drops it when its process dies, so it is never
        stale and ``force`` has nothing to break."""
        check_index_name(alias)

        def refusal(holder: dict[str, Any] | None) -> str:
            return (
                f"index {alias!r} is being written by {describe_holder(holder)}: wait for it to finish "
                "(the lock is released when that process exits, however it exits)"
            )

        return FileLock(self.data_dir / "locks" / f"{alias}.lock", refusal).held()

    @checks_names
    def serving_build(self, alias: str) -> str | None:
        physical = self._aliases().get(alias)
        if physical is not None:
            return physical
        return alias if self.index_exists(alias) else None

    @checks_names
    def orphan_builds(self, alias: str) -> list[str]:
        pattern = build_pattern(alias)
        served = set(self._aliases().values())
        return sorted(p for p in self._all_physical() if pattern.match(p) and p not in served)

    @checks_names
    def repair(self, index: str) -> int:
        """Rebuild ``index``'s HNSW graph from its stored vectors (after ``CorruptIndex``)."""
        physical = self._physical(index)
        path = self._path(physical)
        if not (path / "spec.json").exists():
            raise IndexNotFound(f"index {index!r} does not exist under {self.data_dir}")
        stale = self._open.pop(physical, None)
        if stale is not None:
            stale.db.close()
        for p in path.iterdir():
            if _VECTOR_FILE.match(p.name):
                p.unlink()  # the damaged graph: SQLite's vectors are the source of truth
        idx = _PhysicalIndex(path, _PhysicalIndex.read_spec(path), **self._index_kwargs)
        self._open[physical] = idx
        return idx.repair()

    def _physical(self, index: str) -> str:
        return self._aliases().get(index, index)

    def _path(self, physical: str) -> Path:
        check_index_name(physical)  # also what aliases.json says, in case someone edited it
        return self.data_dir / "indexes" / physical

    def _get(self, index: str) -> _PhysicalIndex:
        physical = self._physical(index)
        if physical not in self._open:
            path = self._path(physical)
            if not (path / "spec.json").exists():
                raise IndexNotFound(
                    f"index {index!r} does not exist under {self.data_dir}: run "
                    f"`hybrid-search ingest SOURCE --index {index}` first"
                )
            try:
                self._open[physical] = _PhysicalIndex(path, _PhysicalIndex.read_spec(path), **self._index_kwargs)
            except CorruptIndex as exc:
                raise CorruptIndex(
                    f"index {index!r}: {exc}. Run `hybrid-search repair --index {index}` to rebuild it from the "
                    "stored vectors"
                ) from None
        return self._open[physical]

    @cached_property
    def _index_kwargs(self) -> dict[str, Any]:
        return {"ef_search": self.ef_search, "flush_seconds": self.flush_seconds}

    # --- protocol ---------------------------------------------------------------------------------
    @checks_names
    def ensure_index(self, index: str, spec: IndexSpec) -> None:
        existing = self.index_spec(index)
        if existing is None:
            physical = self._physical(index)
            self._open[physical] = _PhysicalIndex.create(self._path(physical), spec, **self._index_kwargs)
        elif existing.dims != spec.dims:
            raise ConfigError(
                f"index {index!r} holds {existing.dims}-dim vectors but the model gives "
                f"{spec.dims}: use another --index or the model it was built with"
            )

    @checks_names
    def index_exists(self, index: str) -> bool:
        return (self._path(self._physical(index)) / "spec.json").exists()

    @checks_names
    def index_spec(self, index: str) -> IndexSpec | None:
        if not self.index_exists(index):
            return None
        return _PhysicalIndex.read_spec(self._path(self._physical(index)))

    @checks_names
    def begin_build(self, alias: str, spec: IndexSpec, *, resume_from: str | None = None) -> str:
        if resume_from is not None:
            if not self.index_exists(resume_from):
                raise IndexNotFound(f"cannot resume: physical index {resume_from!r} is gone; ingest without --resume")
            self.ensure_index(resume_from, spec)
            return resume_from
        physical = f"{alias}-{datetime.now(UTC).strftime('%Y%m%d%H%M%S%f')}"
        self.ensure_index(physical, spec)
        return physical

    @checks_names
    def finish_build(self, alias: str, physical: str) -> None:
        self._get(physical).flush()
        keep = previous_alias(alias)
        with self._editing_aliases() as aliases:
            current, retired = aliases.get(alias), aliases.get(keep)
            if alias in self._all_physical() and alias != physical and alias not in aliases.values():
                self._drop_physical(alias)  # an older plain index of that name gives way to the alias
            aliases[alias] = physical
            if current and current != physical:
                aliases[keep] = current
        # one atomic file replace was the swap; what is left of older builds goes now (a kill before this
        # leaves orphans, which the next build of this alias removes here)
        if retired and retired not in aliases.values():
            self._drop_physical(retired)
        for orphan in self.orphan_builds(alias):
            log.info("removing orphan build %s of %s", orphan, alias)
            self._drop_physical(orphan)

    @checks_names
    def rollback(self, alias: str) -> tuple[str, str]:
        keep = previous_alias(alias)
        with self._editing_aliases() as aliases:
            if alias not in aliases or keep not in aliases:
                raise IndexNotFound(
                    f"no previous build of {alias!r} to roll back to under {self.data_dir}: one is "
                    "kept from the second successful ingest on"
                )
            aliases[alias], aliases[keep] = aliases[keep], aliases[alias]
        return aliases[alias], aliases[keep]

    @checks_names
    def upsert(self, index: str, docs: Sequence[IndexedDocument]) -> BulkResult:
        return self._get(index).upsert(docs)

    @checks_names
    def delete(self, index: str, doc_ids: Sequence[str]) -> int:
        return self._get(index).delete(doc_ids)

    @checks_names
    def search_bm25(self, index: str, query: str, k: int, filters: Filter | None = None) -> list[Hit]:
        return self._get(index).bm25(query, k, filters)

    @checks_names
    def search_knn(
        self, index: str, vector: np.ndarray, k: int, num_candidates: int, filters: Filter | None = None
    ) -> list[Hit]:
        return self._get(index).knn(vector, k, num_candidates, filters)

    def fusion_refusal(self, request: SearchRequest) -> str | None:
        return "the embedded backend fuses in the client"

    def search_fused(self, index: str, request: SearchRequest) -> list[Hit]:
        raise FusionUnsupported("the embedded backend fuses in the client")

    @checks_names
    def count(self, index: str) -> int:
        return self._get(index).count()

    @checks_names
    def refresh(self, index: str) -> None:
        self._get(index).flush()

    @checks_names
    def drop_index(self, index: str) -> None:
        dropped: list[str] = []
        with self._editing_aliases() as aliases:
            if index in aliases:
                names = [name for name in (index, previous_alias(index)) if name in aliases]
                dropped = [aliases[name] for name in names]
                for physical in dropped:
                    check_index_name(physical)  # before anything changes, even if aliases.json was edited by hand
                for name in names:
                    del aliases[name]
            elif self.index_exists(index):
                for name in [a for a, p in aliases.items() if p == index]:
                    del aliases[name]
                dropped = [index]
        for physical in dropped:
            self._drop_physical(physical)

    @checks_names
    def stats(self, index: str) -> IndexStats:
        idx = self._get(index)
        spec = idx.spec
        vector = {
            "type": "faiss IndexHNSWFlat",
            "dims": spec.dims,
            "metric": "inner_product",
            "similarity": spec.similarity,
            "m": spec.hnsw_m,
            "ef_construction": spec.hnsw_ef_construction,
            "ef_search": self.ef_search,
            "vectors_in_graph": idx.vectors.ntotal,
            "tombstones": idx._dead_count(),
        }
        fields = {
            "title": f"text (tantivy, {spec.analyzer})",
            "text": f"text (tantivy, {spec.analyzer})",
            "vector": f"float32[{spec.dims}] (SQLite + faiss HNSW)",
            METADATA_FIELD: "json (tantivy raw terms)",
        }
        return IndexStats(
            alias=index if index in self._aliases() else "",
            physical=idx.path.name,
            count=idx.count(),
            spec=spec,
            store_bytes=idx.store_bytes(),
            vector=vector,
            fields=fields,
            metadata_fields=idx.metadata_types(),
        )

    def log_sink(self) -> JsonlLogSink:
        """Query and ingest logs as JSONL files under ``data_dir/logs`` (each with its mapping beside it)."""
        return JsonlLogSink(self.data_dir / "logs")

    @checks_names
    def iter_vectors(self, index: str, batch: int = 10_000) -> Iterable[tuple[list[str], np.ndarray]]:
        """Stored vectors straight from disk, for corpus-wide jobs such as duplicate mining."""
        return self._get(index).iter_vectors(batch)

    @checks_names
    def iter_documents(self, index: str, batch: int = 1_000) -> Iterable[list[StoredDocument]]:
        """Stored documents straight from disk, a batch at a time (re-encoding, training, corpus statistics)."""
        return self._get(index).iter_documents(batch)

    @checks_names
    def knn_batch(self, index: str, vectors: np.ndarray, k: int, num_candidates: int) -> list[list[tuple[str, float]]]:
        """Neighbours of many vectors at once over the HNSW graph (no per-query round trips)."""
        return self._get(index).knn_batch(vectors, k, num_candidates)

    @checks_names
    def get_texts(self, index: str, doc_ids: Sequence[str]) -> dict[str, str]:
        """``title text`` of each id found."""
        rows = self._get(index)._rows_by("doc_id", list(doc_ids))
        return {doc_id: passage_text(row[2], row[3]) for doc_id, row in rows.items()}

    def _all_physical(self) -> set[str]:
        root = self.data_dir / "indexes"
        return {p.name for p in root.iterdir()} if root.exists() else set()

    def _drop_physical(self, physical: str) -> None:
        idx = self._open.pop(physical, None)
        if idx is not None:
            idx.db.close()
            idx._writer = None
        shutil.rmtree(self._path(physical), ignore_errors=True)

    def close(self) -> None:
        while self._open:
            _, idx = self._open.popitem()
            idx.close()

    def __enter__(self) -> EmbeddedBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
