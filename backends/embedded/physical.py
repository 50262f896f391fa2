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
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tantivy

from hybrid_search.backends.base import (
    BulkResult,
    IndexedDocument,
    IndexSpec,
)
from hybrid_search.backends.embedded.batch import PreparedBatch, insert_rows, prepare_batch
from hybrid_search.backends.embedded.rows import SQL_CHUNK
from hybrid_search.backends.embedded.sparse import SparsePostings
from hybrid_search.backends.embedded.text import analyzer, bm25_query, open_text_index, prepare, tantivy_filter
from hybrid_search.backends.embedded.vectors import VECTOR_FILE, VectorSearch
from hybrid_search.config.errors import (
    ConfigError,
    IndexLocked,
    QueryError,
)
from hybrid_search.config.files import FileLock, atomic_write_text, describe_holder, read_json_file
from hybrid_search.search.filters import METADATA_FIELD, Filter, clauses
from hybrid_search.search.hits import Hit, ScoredHits

__all__ = ["PhysicalIndex", "VECTOR_FILE"]

log = logging.getLogger(__name__)

_COMPACT_MIN_DEAD = 1_000
_COMPACT_FRACTION = 0.2
_BUILD_TEXT_ROWS = 65_536  # a build commits its text index at most this many rows apart (a commit is ~20 ms)
_WRITE_WAIT_SECONDS = 30.0  # how long a write waits for another process's write operation to end

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS docs(
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    vector BLOB NOT NULL,
    hash TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS dead(key INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS text_pending(doc_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sparse(key INTEGER PRIMARY KEY, terms TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS passages(
    key INTEGER NOT NULL, ord INTEGER NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL,
    vector BLOB NOT NULL, PRIMARY KEY(key, ord)
);
"""


_PAGE_SIZE = 16_384


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


class PhysicalIndex(VectorSearch):
    """One physical index directory: SQLite rows plus the tantivy and faiss indexes derived from them."""

    def __init__(self, path: Path, spec: IndexSpec, *, ef_search: int, flush_seconds: float, exact_below: int) -> None:
        self.path = path
        self.spec = spec
        self.ef_search = ef_search
        self.flush_seconds = flush_seconds
        self.exact_below = exact_below
        self.read_only = False
        try:
            self.db = sqlite3.connect(path / "docs.sqlite", isolation_level=None, check_same_thread=False)
            # a row is some 2 KB (a 384-d vector and its text): 4 KB pages hold one and leave half empty, 16 KB
            # ones hold seven (only a new, empty database takes it; an existing one keeps its page size)
            self.db.execute(f"PRAGMA page_size={_PAGE_SIZE}")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA_SQL)
            if "hash" not in {r[1] for r in self.db.execute("PRAGMA table_info(docs)")}:  # built before hashes
                self.db.execute("ALTER TABLE docs ADD COLUMN hash TEXT NOT NULL DEFAULT ''")
        except sqlite3.OperationalError as exc:
            if not (path / "docs.sqlite").exists() or not any(w in str(exc) for w in ("disk", "read-only", "readonly")):
                raise
            # a full or read-only disk: a complete build stays searchable, opened without any write
            log.warning("embedded index %s opened read-only (%s): searches work, writes do not", path.name, exc)
            self.db = _read_only_connection(path / "docs.sqlite")
            self.read_only = True
        self.analyzer = analyzer(spec.analyzer)
        self.text_index = open_text_index(self.path / "text", self.analyzer)
        self._writer: tantivy.IndexWriter | None = None
        # the highest row key added to the text writer; a build commits it every _BUILD_TEXT_ROWS rows and at
        # each flush, a serving index at each write (``text_upto`` in meta: how far a commit reached)
        self._text_added = 0
        self.vectors, self.vectors_upto = self._load_vectors()
        self._dead_selector: tuple[int, Any, Any] | None = None
        self._dead_epoch = 0  # bumped whenever the tombstone set changes
        self._generation = 0  # bumped whenever any row changes: cached filter selectors go stale
        self._storage_ids: np.ndarray | None = None  # graph position -> row key (see _graph_storage)
        self._filter_cache: OrderedDict[str, tuple[int, list[int] | None, Any, Any]] = OrderedDict()
        self._sparse: tuple[int, SparsePostings] | None = None  # built on the first sparse search after a write
        self._last_flush = time.monotonic()
        # one process writes a physical index at a time (``write.lock``); every other one only reads it and
        # follows the writes through ``meta.write_gen`` (``_follow``). A build keeps its text writer between
        # batches (``keep_writer``); a serving index hands it back after every write, for the next writer.
        self.keep_writer = False
        self._mutex = threading.RLock()  # this process's searches and writes of the in-memory graph
        self._flock = FileLock(path / "write.lock", self._write_refusal, wait=_WRITE_WAIT_SECONDS)
        self._writing_depth = 0
        self._changed = False  # the write operation in progress changed rows or derived indexes
        self._seen = self._write_stamp()
        self._catch_up_vectors()  # in memory, in any process: the rows a graph file lacks, a flat index's all
        if not self.read_only:
            self._recover()

    def _write_refusal(self, holder: dict[str, object] | None) -> str:
        return (
            f"index build {self.path.name} is being written by {describe_holder(holder)}: wait for it to finish "
            "(the lock is released when that process exits, however it exits)"
        )

    def write_generation(self) -> str:
        return self._write_stamp()[0] or "0"

    def last_write(self) -> float | None:
        files = [self.path / n for n in ("docs.sqlite", "docs.sqlite-wal")]
        times = [f.stat().st_mtime for f in files if f.exists()]
        return max(times) if times else None

    def _write_stamp(self) -> tuple[str | None, str | None]:
        """(write generation, graph generation): bumped by every write and by every compaction."""
        found = dict(self.db.execute("SELECT name, value FROM meta WHERE name IN ('write_gen', 'graph_gen')"))
        return found.get("write_gen"), found.get("graph_gen")

    @contextlib.contextmanager
    def writing(self, *, wait: bool = True) -> Iterator[None]:
        """Hold this physical index's write lock (across processes) for one write operation; nested calls
        share it. On the way out, if anything changed, the write generation is bumped, so other processes'
        next search reloads. ``wait=False``: raise ``IndexLocked`` at once when another process writes."""
        with self._mutex:
            if self.read_only:
                raise ConfigError(f"index build {self.path.name} is open read-only (disk full or read-only)")
            outermost = self._writing_depth == 0
            if outermost and not self._flock.held_now:
                self._flock.wait = _WRITE_WAIT_SECONDS if wait else 0.0
                self._flock.acquire()
            self._writing_depth += 1
            try:
                if outermost:
                    self._follow()  # another process's writes first: its rows, text and graph
                    self._apply_pending_text_deletes()
                yield
            finally:
                self._writing_depth -= 1
                if outermost:
                    if self._changed:
                        self._bump("write_gen")
                        self._seen = self._write_stamp()
                        self._changed = False
                    if not self.keep_writer:
                        self.release_writer()

    def release_writer(self) -> None:
        """Hand back the text writer and the write lock (the next process that writes takes them)."""
        with self._mutex:
            if self._writing_depth:
                return
            if self._writer is not None:
                self._commit_text()
                self._writer.wait_merging_threads()
                self._writer = None
            self._flock.release()

    def _bump(self, name: str) -> None:
        self.db.execute(
            "INSERT INTO meta(name, value) VALUES (?, '1') "
            "ON CONFLICT(name) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
            (name,),
        )

    def _follow(self) -> None:
        """Catch up with writes another process made since this one last looked: reload the text index,
        add the rows its graph lacks (in memory), reload a compacted graph, re-read the tombstones."""
        stamp = self._write_stamp()
        if stamp == self._seen:
            return
        with self._mutex:
            if stamp[1] != self._seen[1]:
                self.vectors, self.vectors_upto = self._load_vectors(tidy=False)
                self._storage_ids = None
            self._catch_up_vectors()
            self.text_index.reload()
            self._dead_epoch += 1
            self._generation += 1
            self._sparse = None
            self._seen = stamp

    def _catch_up_vectors(self) -> None:
        missing = self.db.execute(
            "SELECT key, vector FROM docs WHERE key > ? ORDER BY key", (self.vectors_upto,)
        ).fetchall()
        if missing:
            self._add_vectors([r[0] for r in missing], np.stack([self._vec(r[1]) for r in missing]))

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

    def _recover(self) -> None:
        """Replay rows that tantivy had not taken in when the process last stopped, and text deletes a kill
        left pending: only in a process that can take the write lock now (else its writer is alive and
        finishes its own batch). The vectors caught up before, at open."""
        try:
            with self.writing(wait=False):
                text_upto = self._meta("text_upto")
                rows = self.db.execute(
                    "SELECT key, doc_id, title, text, metadata FROM docs WHERE key > ? ORDER BY key", (text_upto,)
                ).fetchall()
                if rows:
                    log.info("embedded index %s: replaying %d rows into the text index", self.path.name, len(rows))
                    self._index_text(rows)
        except IndexLocked:
            pass

    def _apply_pending_text_deletes(self) -> None:
        """Remove from the text index the documents a delete removed from SQLite (its first step): what a
        kill between the two left to do is done by the next writer."""
        pending = [r[0] for r in self.db.execute("SELECT doc_id FROM text_pending")]
        if not pending:
            return
        live = set(self._existing(pending))
        for doc_id in pending:
            if doc_id not in live:  # a later upsert brought it back: its new entry stays
                self.writer.delete_documents_by_term("doc_id", doc_id)
        self._commit_text()
        self.db.executemany("DELETE FROM text_pending WHERE doc_id = ?", [(d,) for d in pending])
        self._changed = True

    # --- writing ----------------------------------------------------------------------------------
    @property
    def writer(self) -> tantivy.IndexWriter:
        if self._writer is None:
            writer = self.text_index.writer(heap_size=64_000_000, num_threads=1)
            # files a killed writer left uncommitted (segments, .del files): its opstamps are reused now, and
            # tantivy refuses to overwrite such a file. Only the write-lock holder gets here.
            writer.garbage_collect_files()
            self._writer = writer
        return self._writer

    def upsert(self, docs: Sequence[IndexedDocument]) -> BulkResult:
        batch = prepare_batch(self.spec, docs)  # the last write of an id wins; a refused one is named
        if batch.rows:
            with self.writing():
                self._write_rows(batch)
                self._generation += 1
        return BulkResult(stored=tuple(r[0] for r in batch.rows), failed=tuple(batch.failed))

    def _write_rows(self, batch: PreparedBatch) -> None:
        """One SQLite transaction stores the batch (a kill leaves each document old or new); the text index
        and the graph follow from the rows, and recovery replays whatever a kill left them short of."""
        rows = batch.rows
        text_upto = max(self._meta("text_upto"), self._text_added)  # rows a build's writer holds uncommitted
        self._changed = True
        self.db.execute("BEGIN")
        try:
            existing = self._existing([r[0] for r in rows])
            old = list(existing.values())
            insert_rows(self.db, "INSERT OR IGNORE INTO dead(key)", [(k,) for k in old])
            self._delete_keys(old)
            self._dead_epoch += bool(old)
            before = self._last_key()
            insert_rows(self.db, "INSERT INTO docs(doc_id, title, text, metadata, vector, hash)", rows)
            # AUTOINCREMENT numbers the rows of one writer's transaction in order, one after another
            keys = list(range(before + 1, before + 1 + len(rows)))
            if self._last_key() != keys[-1]:
                found = self._existing([r[0] for r in rows])
                keys = [found[r[0]] for r in rows]
            key_of = dict(zip((r[0] for r in rows), keys, strict=True))
            # in the same transaction: a document is stored with its sparse vector and passages or not at all
            insert_rows(self.db, "INSERT INTO sparse(key, terms)", [(key_of[d], t) for d, t in batch.sparse])
            insert_rows(
                self.db,
                'INSERT INTO passages(key, ord, start, "end", vector)',
                [(key_of[d], *rest) for d, *rest in batch.passages],
            )
            self._bump("write_gen")  # readers see the rows (and the tombstones) from now on
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        if before != text_upto or keys != sorted(keys):
            # rows an earlier crash left unindexed may lie between: replay from the table, as recovery does
            new = self.db.execute(
                "SELECT key, doc_id, title, text, metadata, vector FROM docs WHERE key > ? ORDER BY key", (text_upto,)
            ).fetchall()
            self._index_text([r[:5] for r in new])
            self._add_vectors([r[0] for r in new], np.stack([self._vec(r[5]) for r in new]))
        else:
            # the common case: index what was just written from memory, without reading the blobs back
            texts = [(k, r[0], r[1], r[2], m) for k, r, m in zip(keys, rows, batch.metadata, strict=True)]
            self._index_text(texts, replaced=set(existing))
            self._add_vectors(keys, batch.vectors)
        self._maybe_flush()

    def _last_key(self) -> int:
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'docs'").fetchone()
        return int(row[0]) if row else 0

    def _delete_keys(self, keys: Sequence[int]) -> None:
        for i in range(0, len(keys), SQL_CHUNK):
            part = keys[i : i + SQL_CHUNK]
            marks = ",".join("?" * len(part))
            self.db.execute(f"DELETE FROM docs WHERE key IN ({marks})", part)
            self.db.execute(f"DELETE FROM sparse WHERE key IN ({marks})", part)
            self.db.execute(f"DELETE FROM passages WHERE key IN ({marks})", part)

    def _index_text(
        self, rows: Sequence[tuple[int, str, str, str, str | dict[str, Any]]], replaced: set[str] | None = None
    ) -> None:
        """Add rows (key, id, title, text, metadata as stored JSON or as a dict) to the text index.
        ``replaced``: the ids that may already be in it (None: any may be, as when replaying after a crash),
        whose old entries are deleted first."""
        writer, kind = self.writer, self.spec.analyzer
        for _key, doc_id, title, text, metadata in rows:
            if replaced is None or doc_id in replaced:
                writer.delete_documents_by_term("doc_id", doc_id)
            fields: dict[str, Any] = {"doc_id": doc_id, "text": prepare(kind, text)}
            if title:  # an empty field and an absent one index alike (no terms, field length 0)
                fields["title"] = prepare(kind, title)
            values = metadata if isinstance(metadata, dict) else json.loads(metadata)
            if values:  # an empty JSON object costs tantivy as much as the rest of the document
                fields[METADATA_FIELD] = values
            writer.add_document(tantivy.Document(**fields))
        self._text_added = max(self._text_added, max(r[0] for r in rows))
        self._changed = True
        if not self.keep_writer or self._text_added - self._meta("text_upto") >= _BUILD_TEXT_ROWS:
            self._commit_text()

    def _commit_text(self) -> None:
        """Commit what the text writer holds and record how far it reaches (recovery replays past that)."""
        if self._writer is None:
            return
        self._writer.commit()
        self.text_index.reload()
        if self._text_added > self._meta("text_upto"):
            self._set_meta("text_upto", self._text_added)

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Remove documents: SQLite first, in one transaction that also records the text deletes still to
        do, then the text index; a kill between the two leaves them for the next writer (never a row
        missing from SQLite but served by BM25: hits are built from rows)."""
        ids = list(dict.fromkeys(doc_ids))
        with self.writing():
            keys = self._keys_for(ids)
            if not keys:
                return 0
            self._changed = True
            self.db.execute("BEGIN")
            try:
                insert_rows(self.db, "INSERT OR IGNORE INTO dead(key)", [(k,) for k in keys])
                self._delete_keys(keys)
                insert_rows(self.db, "INSERT OR IGNORE INTO text_pending(doc_id)", [(d,) for d in ids])
                self._bump("write_gen")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self._dead_epoch += 1
            self._generation += 1
            self._apply_pending_text_deletes()
            self._maybe_flush()
        return len(keys)

    def flush(self) -> None:
        """Persist the HNSW graph, compacting tombstones away first when there are many."""
        with self.writing():
            self._commit_text()
            dead = self._dead_count()
            compact = dead >= _COMPACT_MIN_DEAD and dead > _COMPACT_FRACTION * max(self.count(), 1)
            if compact:
                log.info("embedded index %s: compacting %d tombstones", self.path.name, dead)
                self._compact_graph()
            if self._changed_since_flush():
                self._changed = True
                self._write_graph(self.path / f"vectors-{self.vectors_upto}.faiss")
            self._last_flush = time.monotonic()

    def _compact_graph(self) -> None:
        """A graph of the live rows only, written, then the tombstones cleared and ``graph_gen`` bumped (every
        other process reloads the graph file at its next search)."""
        self._changed = True
        self._rebuild_graph()
        self.vectors_upto = int(self.db.execute("SELECT coalesce(max(key), 0) FROM docs").fetchone()[0])
        self._write_graph(self.path / f"vectors-{self.vectors_upto}.faiss")
        self.db.execute("BEGIN")
        self.db.execute("DELETE FROM dead")
        self._bump("graph_gen")
        self.db.execute("COMMIT")
        self._dead_epoch += 1
        self._generation += 1

    def compact(self) -> dict[str, int]:
        """Drop deleted and replaced documents for good: the graph rebuilt from the live rows, tantivy's
        deleted entries merged away and old segment files collected, SQLite's free pages returned to the
        disk. Returns the bytes on disk before and after and the tombstones removed."""
        with self.writing():
            before, dead = self.store_bytes(), self._dead_count()
            self._compact_graph()
            # tantivy purges deleted entries when its merge policy merges segments; this waits for those
            # merges and removes the files no segment uses any more
            self._commit_text()
            writer, self._writer = self.writer, None
            writer.commit()
            writer.garbage_collect_files()
            writer.wait_merging_threads()
            self.text_index.reload()
            self.db.execute("VACUUM")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return {"bytes_before": before, "bytes_after": self.store_bytes(), "tombstones_removed": dead}

    def reclaimable(self) -> dict[str, int]:
        """Deleted or replaced documents still in the graph, and about how many bytes ``compact`` frees."""
        dead = self._dead_count()
        graph = sum(p.stat().st_size for p in self.path.iterdir() if VECTOR_FILE.match(p.name))
        per_vector = graph // max(int(self.vectors.ntotal), 1)
        page = int(self.db.execute("PRAGMA page_size").fetchone()[0])
        pages = int(self.db.execute("PRAGMA page_count").fetchone()[0])
        free = int(self.db.execute("PRAGMA freelist_count").fetchone()[0]) * page
        # a deleted row's space stays inside its page until VACUUM repacks them: about a row's share each
        per_row = (pages * page - free) // max(self.count() + dead, 1)
        return {"deleted_documents": dead, "reclaimable_bytes": dead * (per_vector + per_row) + free}

    def repair(self) -> int:
        """Rebuild the HNSW graph from the vectors SQLite holds (the source of truth) and write it with a
        fresh checksum; return how many vectors it holds."""
        with self.writing():
            self._compact_graph()
        return int(self.vectors.ntotal)

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def bm25(self, query: str, k: int, filters: Filter | None, *, light: bool = False) -> Sequence[Hit]:
        """BM25 over title and text; ``light``: ids and scores only (``fill`` adds the rest)."""
        self._follow()
        schema = self.text_index.schema
        scored = bm25_query(schema, self.analyzer, prepare(self.spec.analyzer, query))
        if scored is None:
            return []
        if any(op == "range" for op, _name, _value in clauses(filters)):
            # tantivy's JSON field has no typed range: the rows' SQL decides, as it does for kNN
            allowed = self._filter_doc_ids(filters or {})
            if not allowed:
                return []
            restrict = [tantivy.Query.term_set_query(schema, "doc_id", allowed)]
        else:
            restrict = tantivy_filter(schema, filters)
        if restrict:
            scored = tantivy.Query.boolean_query(
                [(tantivy.Occur.Must, scored)]
                + [(tantivy.Occur.Must, tantivy.Query.const_score_query(f, 0.0)) for f in restrict]
            )
        searcher = self.text_index.searcher()
        found = searcher.search(scored, limit=k, count=False).hits
        ids = [searcher.doc(addr)["doc_id"][0] for _score, addr in found]
        if light:
            return ScoredHits(ids, [float(score) for score, _addr in found], "bm25_score")
        rows = self._rows_by("doc_id", ids)
        hits: list[Hit] = []
        for (score, _addr), doc_id in zip(found, ids, strict=True):
            if doc_id in rows:
                hits.append(self._hit(rows[doc_id], len(hits) + 1, float(score), bm25=float(score)))
        return hits

    def sparse(
        self, query: Mapping[str, float], k: int, filters: Filter | None, *, light: bool = False
    ) -> Sequence[Hit]:
        """Exact learned-sparse search: the ``k`` documents of highest dot product with ``query``."""
        self._follow()
        if not self.spec.sparse_model:
            raise QueryError(
                f"index {self.path.name} has no sparse field: ingest it with a sparse model (--sparse-model)"
            )
        if self._sparse is None or self._sparse[0] != self._generation:
            stored = self.db.execute("SELECT s.key, s.terms FROM sparse s JOIN docs d ON d.key = s.key")
            self._sparse = (self._generation, SparsePostings(stored))
        found = self._sparse[1].search(query, k, self._filter_keys(filters) if filters else None)
        if light:
            return self._scored_hits(found, "sparse")
        rows = self._rows_by("key", [key for key, _ in found])
        hits: list[Hit] = []
        for key, score in found:
            if key in rows:
                hits.append(self._hit(rows[key], len(hits) + 1, score, sparse=score))
        return hits

    def close(self) -> None:
        try:
            if self.path.exists() and not self.read_only and (self._flock.held_now or self._changed_since_flush()):
                with contextlib.suppress(IndexLocked):  # another process writes it now: its flush persists it
                    with self.writing(wait=False):
                        self.flush()
            if self._writer is not None:
                self._writer.wait_merging_threads()
        except (OSError, sqlite3.Error, RuntimeError, ValueError) as exc:
            # another process may have dropped this build (a retired one) while it was open: nothing to keep
            log.warning("embedded index %s: not flushed on close (%s)", self.path.name, exc)
        finally:
            self._writer = None
            self._flock.release()
            self.db.close()

    def _changed_since_flush(self) -> bool:
        """Whether the graph holds rows its file lacks (a write of this process, or rows caught up); a flat
        index has no file to keep (SQLite holds its vectors)."""
        return self.is_graph and not (self.path / f"vectors-{self.vectors_upto}.faiss").exists()
