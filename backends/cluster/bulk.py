"""Resilient bulk writes to a cluster index: documents (or deletes) sent until each is settled: stored,
refused for good (returned with its reason), or still answered 429/5xx after every try, which raises
``IndexingError`` naming them. Retries wait with capped, jittered exponential backoff (tenacity); a large
batch is split into up to ``bulk_workers`` shards sent concurrently, each with the whole retry semantics.
Ids are the documents' own and every action is an ``index``, so a retry never duplicates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from hybrid_search.backends.base import (
    BulkResult,
    IndexedDocument,
)
from hybrid_search.backends.cluster.bodies import (
    HASH_FIELD,
    PASSAGES_FIELD,
    RETRYABLE_STATUS,
    SPARSE_FIELD,
    VECTOR_FIELD,
    passage_sources,
    reason,
)
from hybrid_search.config.errors import (
    FailedItem,
    IndexingError,
)
from hybrid_search.search.filters import METADATA_FIELD

if TYPE_CHECKING:
    from hybrid_search.backends.cluster.store import ClusterBackend

__all__ = ["BulkWriter"]

log = logging.getLogger(__name__)

_MIN_SHARD_DOCS = 8  # a parallel bulk request carries at least this many documents


class _Retryable(Exception):
    """Some bulk items got 429/5xx or their request was dropped; they are tried again."""


class BulkWriter:
    """Upserts and deletes through one backend's client (its ``streaming_bulk`` and settings)."""

    def __init__(self, backend: ClusterBackend) -> None:
        self.b = backend

    def close(self) -> None:
        """Wait for the concurrent bulk requests in flight, then stop their threads."""
        if "_bulk_pool" in self.__dict__:
            self.__dict__.pop("_bulk_pool").shutdown(wait=True)

    def _source(self, doc: IndexedDocument) -> dict[str, Any]:
        return {
            "title": doc.title,
            "text": doc.text,
            VECTOR_FIELD: np.asarray(doc.vector, dtype=np.float32),
            METADATA_FIELD: dict(doc.metadata),
            **({SPARSE_FIELD: dict(doc.sparse)} if doc.sparse else {}),
            **({HASH_FIELD: doc.content_hash} if doc.content_hash else {}),
            **({PASSAGES_FIELD: passage_sources(doc)} if doc.passages else {}),
        }

    def actions(self, index: str, docs: Iterable[IndexedDocument]) -> Iterable[dict[str, Any]]:
        for doc in docs:
            yield {"_op_type": "index", "_index": index, "_id": doc.doc_id, "_source": self._source(doc)}

    def upsert(self, index: str, docs: Sequence[IndexedDocument]) -> BulkResult:
        pending: dict[str, IndexedDocument] = {}  # last write of an id wins
        failed: list[FailedItem] = []
        for doc in docs:
            vector = np.asarray(doc.vector)
            if vector.ndim == 1 and np.all(np.isfinite(vector)):
                pending[doc.doc_id] = doc
            else:
                pending.pop(doc.doc_id, None)
                failed.append(FailedItem(doc.doc_id, "vector is not a finite 1-d array"))
        shards = self._shards(pending)
        if len(shards) == 1:
            stored, refused = self._upsert_shard(index, pending)
            return BulkResult(stored=tuple(stored), failed=tuple(failed + refused))
        # N concurrent bulk requests, each shard with the whole retry, refusal and count semantics; a shard
        # that gives up does not cancel the others: everything they stored is stored, and the error names
        # every document that was not (the batch is not checkpointed, so a resume sends it again)
        futures = [self._bulk_pool.submit(self._upsert_shard, index, shard) for shard in shards]
        stored, errors = [], []
        for future in futures:
            try:
                done, refused = future.result()
            except IndexingError as exc:
                errors.append(exc)
                continue
            stored += done
            failed += refused
        if errors:
            raise IndexingError(str(errors[0]), failed=[f for e in errors for f in e.failed])
        return BulkResult(stored=tuple(stored), failed=tuple(failed))

    def _upsert_shard(self, index: str, pending: dict[str, IndexedDocument]) -> tuple[list[str], list[FailedItem]]:
        return self.until_settled(
            index,
            pending,
            lambda batch: self.actions(index, batch),
            what="documents",
            hint="nothing was lost: check the cluster's health and rerun with --resume",
        )

    def _shards(self, pending: dict[str, Any]) -> list[dict[str, Any]]:
        """``pending`` split into at most ``bulk_workers`` contiguous parts of at least a few documents."""
        workers = min(self.b.settings.bulk_workers, max(1, len(pending) // _MIN_SHARD_DOCS))
        if workers <= 1:
            return [pending]
        items = list(pending.items())
        size = -(-len(items) // workers)
        return [dict(items[i : i + size]) for i in range(0, len(items), size)]

    @cached_property
    def _bulk_pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self.b.settings.bulk_workers, thread_name_prefix=f"{self.b.name}-bulk")

    def until_settled(
        self,
        index: str,
        pending: dict[str, Any],
        actions: Callable[[list[Any]], Iterable[dict[str, Any]]],
        *,
        what: str,
        hint: str,
    ) -> tuple[list[str], list[FailedItem]]:
        """Send ``pending`` (id -> payload) in bulk until every item is settled: done, refused for good
        (returned with its reason), or still answered 429/5xx / dropped after ``bulk_attempts`` tries, which
        raises ``IndexingError`` naming them. Retries wait with capped, jittered exponential backoff."""
        done: list[str] = []
        refused: list[FailedItem] = []
        retrying = Retrying(
            retry=retry_if_exception_type(_Retryable),
            wait=wait_random_exponential(multiplier=0.5, max=self.b.settings.backoff_max),
            stop=stop_after_attempt(self.b.settings.bulk_attempts),
            sleep=self.b._sleep,
        )
        try:
            for attempt in retrying:
                with attempt:
                    self._bulk_once(index, pending, actions, done, refused)
                    if pending:
                        raise _Retryable(f"{len(pending)} {what} got 429/5xx answers or a dropped connection")
        except RetryError as exc:
            raise IndexingError(
                f"{self.b.name} at {self.b.urls_text} kept refusing {len(pending)} {what} after "
                f"{self.b.settings.bulk_attempts} attempts (429/5xx or dropped connections); {hint}",
                failed=[FailedItem(i, "retryable error persisted") for i in pending],
            ) from exc
        return done, refused

    def _bulk_once(
        self,
        index: str,
        pending: dict[str, Any],
        actions: Callable[[list[Any]], Iterable[dict[str, Any]]],
        done: list[str],
        refused: list[FailedItem],
    ) -> None:
        """One pass over the pending items; settled ones leave ``pending``, retryable ones stay."""
        self.b.connect()
        retry_statuses: dict[Any, int] = {}
        try:
            for ok, item in self.b.streaming_bulk(actions(list(pending.values()))):
                op = next(iter(item.values()))
                item_id, status = str(op.get("_id")), op.get("status")
                if ok:
                    done.append(item_id)
                    pending.pop(item_id, None)
                elif status in RETRYABLE_STATUS or not isinstance(status, int):
                    retry_statuses[status] = retry_statuses.get(status, 0) + 1
                else:
                    refused.append(FailedItem(item_id, reason(op.get("error") or op.get("result")), status))
                    pending.pop(item_id, None)
        except self.b.connection_errors as exc:
            retry_statuses[type(exc).__name__] = len(pending)
        if retry_statuses:
            log.warning("bulk into %s: %d items to retry (%s)", index, len(pending), retry_statuses)

    def delete(self, index: str, doc_ids: Sequence[str]) -> int:
        """Remove documents; return how many existed. A refusal (429 after every retry, 5xx) is an
        ``IndexingError``, never counted as "did not exist"."""
        pending = {str(i): str(i) for i in doc_ids}
        deleted, refused = self.until_settled(
            index,
            pending,
            lambda ids: ({"_op_type": "delete", "_index": index, "_id": i} for i in ids),
            what="deletes",
            hint="the documents may still exist: check the cluster's health and delete again",
        )
        errors = [f for f in refused if f.status != 404]  # 404: the document was not there
        if errors:
            raise IndexingError(
                f"{self.b.name} refused {len(errors)} deletes from {index}: {errors[0].reason}", failed=errors
            )
        return len(deleted)
