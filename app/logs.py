"""What the application records beside an index for Kibana / OpenSearch Dashboards: queries and ingest runs.

Two logs per corpus alias, each with an explicit, strict mapping (dates, keywords, numbers; an unknown
field is an error, never a silently guessed type):

    <alias>-queries   one document per search: mode, per-stage latency, hits with their stage scores, and
                      the rank change the reranker made (query text only when ``logs.query_text`` is on)
    <alias>-ingest    one document per ingest run: source, model, counts, throughput, physical index

A backend hands out a ``LogSink`` that stores these documents (an index on a cluster, a JSONL file beside
the embedded backend). Searches reach it only through ``QueryLog``: a bounded queue drained by one daemon
thread. ``record`` never blocks and never raises; what does not fit is dropped and counted, and ``close``
reports the counts. This module must never make a search wait for a log write.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hybrid_search.backends.logsinks import LogSink
from hybrid_search.config.errors import IndexingError
from hybrid_search.config.settings import LogSettings

if TYPE_CHECKING:
    from hybrid_search.backends.base import LogStore
    from hybrid_search.ingest.pipeline import IngestSummary
    from hybrid_search.search.hits import SearchResult

__all__ = [
    "IngestLog",
    "INGEST_LOG_MAPPING",
    "QUERY_LOG_MAPPING",
    "STAGES",
    "QueryLog",
    "QueryLogStats",
    "ingest_log_doc",
    "ingest_log_index",
    "now_iso",
    "query_log_doc",
    "query_log_index",
]

log = logging.getLogger(__name__)

STAGES = ("encode", "bm25", "knn", "fusion", "passages", "rerank", "total")
QUERY_TEXT_LIMIT = 1024  # longer queries are kept in _source but not aggregated (keyword ignore_above)

_KEYWORD = {"type": "keyword"}
_DATE = {"type": "date"}
_FLOAT = {"type": "float"}
_INT = {"type": "integer"}
_LONG = {"type": "long"}
_BOOL = {"type": "boolean"}

QUERY_LOG_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "@timestamp": _DATE,
        "index": _KEYWORD,
        "backend": _KEYWORD,
        "mode": _KEYWORD,  # e.g. hybrid+rerank
        "base_mode": _KEYWORD,  # bm25 | knn | hybrid
        "reranked": _BOOL,
        "fusion_location": _KEYWORD,  # server | client (hybrid only)
        "query": {"type": "keyword", "ignore_above": QUERY_TEXT_LIMIT, "fields": {"text": {"type": "text"}}},
        "query_chars": _INT,
        "top_k": _INT,
        "filtered": _BOOL,
        "latency_ms": {"type": "object", "properties": {stage: _FLOAT for stage in STAGES}},
        "total_hits": _INT,
        "returned": _INT,
        "zero_result": {"type": "byte"},  # 0/1, so its average is the zero-result rate
        "hits": {
            "type": "object",
            "properties": {
                "id": _KEYWORD,
                "rank": _INT,
                "score": _FLOAT,
                "bm25_score": _FLOAT,
                "knn_score": _FLOAT,
                "fusion_score": _FLOAT,
                "rerank_score": _FLOAT,
                "rank_before_rerank": _INT,
                "rank_change": _INT,
                "passage": _KEYWORD,  # an index of passages: the best passage's id, ``<doc id>#<passage number>``
                "passage_start": _INT,
                "passage_end": _INT,
            },
        },
        "rerank": {
            "type": "object",
            "properties": {
                "moved": _INT,  # returned hits whose rank changed
                "mean_abs_change": _FLOAT,
                "max_promotion": _INT,  # most places any returned hit climbed
                "top1_changed": _BOOL,
            },
        },
    },
}

INGEST_LOG_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "@timestamp": _DATE,  # when the run ended
        "started_at": _DATE,
        "status": _KEYWORD,  # completed | failed
        "error": {"type": "text"},
        "alias": _KEYWORD,
        "physical": _KEYWORD,
        "backend": _KEYWORD,
        "source": _KEYWORD,
        "model": _KEYWORD,
        "read": _LONG,
        "stored": _LONG,
        "rejected": _LONG,
        "truncated": _LONG,
        "duration_s": _FLOAT,
        "docs_per_s": _FLOAT,
        "encode_docs_per_s": _FLOAT,
        "bulk_docs_per_s": _FLOAT,
        "resumed": _BOOL,
        "rejects_path": _KEYWORD,
    },
}


def query_log_index(alias: str) -> str:
    return f"{alias}-queries"


def ingest_log_index(alias: str) -> str:
    return f"{alias}-ingest"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- documents ------------------------------------------------------------------------------------
def _score(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def query_log_doc(
    result: SearchResult,
    *,
    at: str,
    index: str,
    backend: str,
    top_k: int | None = None,
    filtered: bool = False,
    with_text: bool = True,
) -> dict[str, Any]:
    """The ``<alias>-queries`` document for one search result."""
    base, _, suffix = result.mode.partition("+")
    hits = []
    for h in result.hits:
        item = {
            "id": h.doc_id,
            "rank": h.rank,
            "score": _score(h.score),
            "bm25_score": _score(h.bm25_score),
            "knn_score": _score(h.knn_score),
            "fusion_score": _score(h.fusion_score),
            "rerank_score": _score(h.rerank_score),
            "rank_before_rerank": h.rank_before_rerank,
            "rank_change": h.rank_change,
            "passage": f"{h.doc_id}#{h.passage.index}" if h.passage is not None else None,
            "passage_start": h.passage.start if h.passage is not None else None,
            "passage_end": h.passage.end if h.passage is not None else None,
        }
        hits.append({k: v for k, v in item.items() if v is not None})
    total = result.total_hits if result.total_hits is not None else len(result.hits)
    doc: dict[str, Any] = {
        "@timestamp": at,
        "index": index,
        "backend": backend,
        "mode": result.mode,
        "base_mode": base,
        "reranked": suffix == "rerank",
        "query_chars": len(result.query),
        "filtered": filtered,
        "latency_ms": {k: round(float(v), 3) for k, v in result.timings_ms.items() if k in STAGES},
        "total_hits": total,
        "returned": len(result.hits),
        "zero_result": int(total == 0),
        "hits": hits,
    }
    if top_k is not None:
        doc["top_k"] = top_k
    if result.fusion_location:
        doc["fusion_location"] = result.fusion_location
    if with_text:
        doc["query"] = result.query
    changes = [h.rank_change for h in result.hits if h.rank_change is not None]
    if changes:
        doc["rerank"] = {
            "moved": sum(1 for c in changes if c != 0),
            "mean_abs_change": round(sum(abs(c) for c in changes) / len(changes), 3),
            "max_promotion": max(max(changes), 0),
            "top1_changed": result.hits[0].rank_before_rerank != 1,
        }
    return doc


def ingest_log_doc(
    summary: IngestSummary | None,
    *,
    backend: str,
    started_at: str,
    alias: str,
    source: str,
    model: str,
    error: str | None = None,
) -> dict[str, Any]:
    """The ``<alias>-ingest`` document for one run; ``summary`` is ``None`` when the run failed."""
    doc: dict[str, Any] = {
        "@timestamp": now_iso(),
        "started_at": started_at,
        "alias": alias,
        "backend": backend,
        "source": source,
        "model": model,
        "status": "failed" if error else "completed",
    }
    if error:
        doc["error"] = error
    if summary is not None:
        s = summary
        doc.update(
            {
                "physical": s.physical,
                "read": s.read,
                "stored": s.stored,
                "rejected": s.rejected,
                "truncated": s.truncated,
                "duration_s": round(s.seconds, 3),
                "docs_per_s": round(s.docs_per_s, 1),
                "encode_docs_per_s": round(s.encoded / s.encode_seconds, 1) if s.encode_seconds > 0 else 0.0,
                "bulk_docs_per_s": round(s.encoded / s.upsert_seconds, 1) if s.upsert_seconds > 0 else 0.0,
                "resumed": s.resumed,
                "rejects_path": s.rejects_path,
            }
        )
    return doc


class IngestLog:
    """Writes one ``<alias>-ingest`` document per run; give it to ``run_ingest(on_finish=...)``.

    A log that cannot be written is a warning, never a failed ingest."""

    def __init__(self, backend: LogStore, settings: LogSettings, *, alias: str, source: str, model: str) -> None:
        self.backend, self.settings = backend, settings
        self.alias, self.source, self.model = alias, source, model
        self.started_at = now_iso()

    def __call__(self, summary: IngestSummary | None, error: BaseException | None) -> None:
        if not self.settings.ingest:
            return
        name = ingest_log_index(self.alias)
        doc = ingest_log_doc(
            summary,
            backend=self.backend.name,
            started_at=self.started_at,
            alias=self.alias,
            source=self.source,
            model=self.model,
            error=f"{type(error).__name__}: {error}" if error is not None else None,
        )
        try:
            sink = self.backend.log_sink()
            sink.ensure(name, INGEST_LOG_MAPPING)
            sink.append(name, [doc], refresh=True)
        except Exception as exc:
            log.warning("the ingest summary was not written to %s (%s)", name, exc)


# --- the query log --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class QueryLogStats:
    """What became of the recorded searches: written, dropped (queue full or closed), failed (refused)."""

    recorded: int
    written: int
    dropped: int
    failed: int

    @property
    def in_flight(self) -> int:
        """Entries a stuck writer still held when ``close`` gave up waiting (neither written nor lost yet)."""
        return self.recorded - self.written - self.dropped - self.failed


@dataclass(frozen=True, slots=True)
class _Entry:
    """A log document, built when the search is recorded: it holds ids and scores, never hit texts."""

    doc: dict[str, Any]
    size: int  # approximate bytes, for the queue's byte bound


def _approx_size(doc: Mapping[str, Any]) -> int:
    """A cheap upper-bound-ish estimate of a query-log document's size in memory."""
    return 512 + len(doc.get("query") or "") * 4 + 256 * len(doc.get("hits") or ())


_STOP = object()


class QueryLog:
    """Records searches in ``<index>-queries`` from a background thread; see the module docstring.

    Construction does no I/O; the writer thread starts with the first ``record``.
    """

    def __init__(self, sink: LogSink, *, index: str, backend: str, settings: LogSettings | None = None) -> None:
        self.sink = sink
        self.index = index
        self.name = query_log_index(index)
        self.backend = backend
        self.settings = settings or LogSettings()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=self.settings.queue_size)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._recorded = self._written = self._dropped = self._failed = self._queued_bytes = 0
        self._warned = False

    # --- producer side: called from searches -------------------------------------------------------
    def record(self, result: SearchResult, *, top_k: int | None = None, filtered: bool = False) -> None:
        """Queue one search for writing. Never blocks and never raises: a full queue (by entries or by
        ``logs.queue_bytes``) drops and counts."""
        try:
            doc = self._doc(result, now_iso(), top_k, filtered)
            entry = _Entry(doc, _approx_size(doc))
        except Exception:  # a log must never fail a search
            with self._lock:
                self._recorded += 1
                self._dropped += 1
            return
        with self._lock:  # the put happens under the lock, so close() cannot queue its stop marker in between
            self._recorded += 1
            if self._closed or self._queued_bytes + entry.size > self.settings.queue_bytes:
                self._dropped += 1
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"query-log-{self.index}", daemon=True)
                self._thread.start()
            try:
                self._queue.put_nowait(entry)
            except queue.Full:
                self._dropped += 1
                return
            self._queued_bytes += entry.size

    @property
    def queued_bytes(self) -> int:
        """Approximate bytes of the entries waiting for the writer."""
        with self._lock:
            return self._queued_bytes

    @property
    def stats(self) -> QueryLogStats:
        with self._lock:
            return QueryLogStats(self._recorded, self._written, self._dropped, self._failed)

    # --- consumer side: the writer thread ----------------------------------------------------------
    def _run(self) -> None:
        ensured = False
        stop = False
        while not stop:
            batch, stop = self._next_batch()
            if not batch:
                continue
            try:
                if not ensured:
                    self.sink.ensure(self.name, QUERY_LOG_MAPPING)
                    ensured = True
                written = self.sink.append(self.name, [e.doc for e in batch])
                with self._lock:
                    self._written += written
            except IndexingError as exc:
                self._count_failure(len(exc.failed), len(batch) - len(exc.failed), exc)
            except Exception as exc:  # the cluster is down or refused the index: count, keep draining
                self._count_failure(len(batch), 0, exc)

    def _next_batch(self) -> tuple[list[_Entry], bool]:
        """Up to ``batch_size`` entries, waiting at most ``flush_seconds`` after the first; True at stop."""
        batch: list[_Entry] = []
        deadline: float | None = None
        while len(batch) < self.settings.batch_size:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            with self._lock:
                self._queued_bytes -= item.size
            batch.append(item)
            if deadline is None:
                deadline = time.monotonic() + self.settings.flush_seconds
        return batch, False

    def _doc(self, result: SearchResult, at: str, top_k: int | None, filtered: bool) -> dict[str, Any]:
        return query_log_doc(
            result,
            at=at,
            index=self.index,
            backend=self.backend,
            top_k=top_k,
            filtered=filtered,
            with_text=self.settings.query_text,
        )

    def _count_failure(self, failed: int, written: int, exc: Exception) -> None:
        with self._lock:
            self._failed += failed
            self._written += written
            first = not self._warned
            self._warned = True
        if first:  # once per log: a down cluster would otherwise warn for every batch
            log.warning(
                "query log %s: %d entries not written (%s); searches go on, failures are counted",
                self.name,
                failed,
                exc,
            )

    # --- shutdown ----------------------------------------------------------------------------------
    def close(self, timeout: float | None = None) -> QueryLogStats:
        """Write what is queued (waiting at most ``timeout`` s), stop the writer, report what was lost."""
        wait = self.settings.close_seconds if timeout is None else timeout
        with self._lock:
            already, self._closed = self._closed, True
            thread = self._thread
        if thread is not None and not already:
            deadline = time.monotonic() + wait
            try:
                self._queue.put(_STOP, timeout=wait)
            except queue.Full:
                pass
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                self._drain_unwritten()
        stats = self.stats
        if (stats.dropped or stats.failed) and not already:
            log.warning(
                "query log %s: %d of %d searches not logged (%d dropped: queue full or closed, %d refused "
                "or unreachable); raise logs.queue_size or check the cluster",
                self.name,
                stats.dropped + stats.failed,
                stats.recorded,
                stats.dropped,
                stats.failed,
            )
        return stats

    def _drain_unwritten(self) -> None:
        """The writer is stuck past the deadline: what it never took counts as dropped."""
        left = size = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                left, size = left + 1, size + item.size
        with self._lock:
            self._dropped += left
            self._queued_bytes -= size

    def __enter__(self) -> QueryLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
