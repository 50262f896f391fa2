"""What Elasticsearch and OpenSearch backends share: connection, alias-based builds, resilient bulk, counts.

An engine subclass supplies its client, its exception types and the request bodies where the engines
differ (mappings, kNN, server-side fusion); everything here is written once for both. Construction only
validates: the first call that needs the cluster connects, reads the server version and plugins, and turns
any failure into one ``BackendUnavailable`` line naming the URL, what failed and what to check.

Bulk loading retries only what can succeed later: items answered 429/502/503/504 and whole requests that
failed on a dropped connection, with capped exponential backoff and full jitter (tenacity). Per-item
refusals (mapping errors, wrong dimensions) come back as ``FailedItem`` for the rejects file. Ids are the
documents' own, and every action is an ``index`` (create-or-replace), so a retry never duplicates.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import numpy as np
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from hybrid_search.backends.base import (
    BulkResult,
    IndexedDocument,
    IndexSpec,
    IndexStats,
    StoredDocument,
    checks_names,
    previous_alias,
)
from hybrid_search.backends.logsinks import mapping_fields, new_log_id
from hybrid_search.config.errors import (
    BackendUnavailable,
    ConfigError,
    FailedItem,
    FusionUnsupported,
    IndexingError,
    IndexLocked,
    IndexNotFound,
    QueryError,
)
from hybrid_search.config.files import describe_holder, holder_info
from hybrid_search.config.names import LOCK_INDEX, build_pattern
from hybrid_search.config.settings import BackendSettings, IndexSettings
from hybrid_search.config.text import passage_text
from hybrid_search.search.filters import METADATA_FIELD, Filter, to_query_dsl
from hybrid_search.search.hits import Hit
from hybrid_search.search.interfaces import ServerFusion
from hybrid_search.search.request import SearchRequest, two_leg_request

__all__ = [
    "ClusterBackend",
    "ClusterLogSink",
    "ServerInfo",
    "alias_actions",
    "bm25_body",
    "bm25_query",
    "latest_body",
    "log_index_body",
    "metadata_dynamic_template",
]

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
VECTOR_FIELD = "vector"
_MIN_SHARD_DOCS = 8  # a parallel bulk request carries at least this many documents
TEXT_FIELDS = ("title", "text")
SPEC_META_KEY = "hybrid_search"
LOCK_TTL_SECONDS = 60.0  # a lock whose heartbeat is older than this is stale (its holder is gone)
LOCK_MAPPING = {
    "dynamic": "strict",
    "properties": {
        "alias": {"type": "keyword"},
        "pid": {"type": "long"},
        "host": {"type": "keyword"},
        "since": {"type": "keyword"},
        "heartbeat": {"type": "double"},
    },
}


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the backend learnt when it connected."""

    distribution: str  # "elasticsearch" or "opensearch"
    version: tuple[int, int, int]
    plugins: frozenset[str] = field(default_factory=frozenset)

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


def parse_version(text: str) -> tuple[int, int, int]:
    parts = [int("".join(ch for ch in p if ch.isdigit()) or 0) for p in text.split("-")[0].split(".")[:3]]
    return tuple((parts + [0, 0, 0])[:3])  # type: ignore[return-value]


# --- request-body pieces both engines accept unchanged ----------------------------------------------
def bm25_query(query: str, filters: Filter | None) -> dict[str, Any]:
    """``multi_match`` over title and text (best field wins); the text is analysed, never parsed as syntax."""
    match = {"multi_match": {"query": query, "fields": list(TEXT_FIELDS), "type": "best_fields"}}
    dsl = to_query_dsl(filters)
    return {"bool": {"must": [match], "filter": dsl}} if dsl else match


def bm25_body(query: str, k: int, filters: Filter | None) -> dict[str, Any]:
    """The BM25 search request (vectors left out of the returned ``_source``)."""
    return {"query": bm25_query(query, filters), "size": k, "_source": {"excludes": [VECTOR_FIELD]}}


def alias_actions(
    targets: Mapping[str, tuple[Sequence[str], str | None]], *, remove_index: str | None = None
) -> dict[str, Any]:
    """One atomic ``_aliases`` request: each alias leaves the indexes it points at and joins the new one
    (or none); ``remove_index`` drops a plain index in the same step (it gives way to an alias)."""
    actions: list[dict[str, Any]] = []
    for alias, (old, _) in targets.items():
        actions += [{"remove": {"index": p, "alias": alias}} for p in old]
    if remove_index:
        actions.append({"remove_index": {"index": remove_index}})
    actions += [{"add": {"index": new, "alias": alias}} for alias, (_, new) in targets.items() if new]
    return {"actions": actions}


def metadata_dynamic_template() -> dict[str, Any]:
    """Metadata strings are exact-match keywords, so filters compare whole values."""
    return {
        "metadata_keywords": {
            "path_match": f"{METADATA_FIELD}.*",
            "match_mapping_type": "string",
            "mapping": {"type": "keyword"},
        }
    }


def log_index_body(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A log index: one shard, a replica only where a second node can hold it, the log's strict mapping."""
    return {"settings": {"index": {"number_of_shards": 1, "auto_expand_replicas": "0-1"}}, "mappings": dict(mapping)}


def latest_body() -> dict[str, Any]:
    """The newest log document."""
    return {"size": 1, "sort": [{"@timestamp": {"order": "desc"}}], "query": {"match_all": {}}}


class _Retryable(Exception):
    """Some bulk items got 429/5xx or their request was dropped; they are tried again."""


class ClusterBackend(ABC):
    """The ``Backend`` protocol for a search cluster; subclasses add the engine's dialect."""

    name = "cluster"
    build_check_seconds = 1.0  # one alias lookup a second at most (searches name the build, so this is safe)
    distribution = ""

    def __init__(
        self,
        settings: BackendSettings,
        index_settings: IndexSettings | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not settings.urls:
            raise ConfigError(f"--backend {self.name} needs --url (or HYBRID_SEARCH_BACKEND__URLS)")
        for url in settings.urls:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"cluster URL {url!r} must start with http:// or https://")
        self.settings = settings
        self.index_settings = index_settings or IndexSettings()
        self._sleep = sleep
        self._server_fusion_refused: dict[str, str] = {}

    # --- connection -------------------------------------------------------------------------------
    def _auth(self) -> dict[str, Any]:
        api_key, basic = self.settings.credentials()
        return {"api_key": api_key} if api_key else {"basic_auth": basic} if basic else {}

    @abstractmethod
    def _make_client(self) -> Any:
        """The engine's client object (no I/O)."""

    @abstractmethod
    def _probe(self) -> ServerInfo:
        """Ask the server who it is."""

    @cached_property
    def client(self) -> Any:
        return self._make_client()

    @cached_property
    def server(self) -> ServerInfo:
        """Connect, read the version and plugins, and check this is the engine we expect."""
        info = self._call("connect", self._probe)
        if info.distribution != self.distribution:
            raise BackendUnavailable(
                f"{self.urls_text} is {info.distribution} {info.version_text}, not "
                f"{self.distribution}: use --backend {info.distribution}"
            )
        log.info("connected to %s %s at %s", info.distribution, info.version_text, self.urls_text)
        return info

    @property
    def urls_text(self) -> str:
        return ", ".join(self.settings.urls)

    # exception families, set by the engine
    connection_errors: tuple[type[BaseException], ...] = ()
    api_error: type[BaseException] = Exception

    @abstractmethod
    def _status(self, exc: BaseException) -> int | None:
        """The HTTP status of an engine error, if it has one."""

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one client call, turning engine errors into the project's errors."""
        try:
            return fn(*args, **kwargs)
        except self.connection_errors as exc:
            raise BackendUnavailable(
                f"{self.name} at {self.urls_text} did not answer ({what}: {type(exc).__name__}); check the URL, "
                "that the cluster is up, and TLS settings (--url https://..., HYBRID_SEARCH_BACKEND__CA_CERTS)"
            ) from exc
        except self.api_error as exc:
            status = self._status(exc)
            if status in (401, 403) and "license" not in str(exc).lower():
                raise BackendUnavailable(
                    f"{self.name} at {self.urls_text} refused the credentials ({what}, HTTP {status}); set "
                    f"{self.settings.api_key.env_var}, or username and {self.settings.password.env_var}"
                ) from exc
            if status == 404 and "index_not_found" in str(exc):
                raise IndexNotFound(
                    f"index {kwargs.get('index', '?')!r} does not exist on {self.urls_text}: run "
                    "`hybrid-search ingest` first"
                ) from exc
            raise

    # --- index lifecycle --------------------------------------------------------------------------
    @abstractmethod
    def index_body(self, spec: IndexSpec, *, loading: bool) -> dict[str, Any]:
        """Settings and mappings of a new physical index."""

    @checks_names
    def ensure_index(self, index: str, spec: IndexSpec) -> None:
        existing = self.index_spec(index)
        if existing is None:
            self._create(index, spec, loading=False)
        elif existing.dims != spec.dims:
            raise ConfigError(
                f"index {index!r} holds {existing.dims}-dim vectors but the model gives {spec.dims}: "
                "use another --index or the model it was built with"
            )

    def _create(self, index: str, spec: IndexSpec, *, loading: bool) -> None:
        self.server  # noqa: B018 - connect (and check the version) before building bodies that depend on it
        self._call("create index", self.client.indices.create, index=index, body=self.index_body(spec, loading=loading))

    @checks_names
    def index_exists(self, index: str) -> bool:
        self.server  # noqa: B018
        return bool(self._call("index exists", self.client.indices.exists, index=index))

    @checks_names
    def index_spec(self, index: str) -> IndexSpec | None:
        return _spec_from_mapping(self._mapping(index)) if self.index_exists(index) else None

    def _mapping(self, index: str) -> dict[str, Any]:
        mappings = self._call("get mapping", self.client.indices.get_mapping, index=index)
        return next(iter(mappings.values()))["mappings"]

    def _alias_targets(self, alias: str) -> list[str]:
        if not self._call("alias exists", self.client.indices.exists_alias, name=alias):
            return []
        return sorted(self._call("get alias", self.client.indices.get_alias, name=alias))

    def _loading_settings(self) -> dict[str, Any]:
        return {"index": {"refresh_interval": "-1", "number_of_replicas": 0}}

    def _serving_settings(self) -> dict[str, Any]:
        s = self.index_settings
        return {"index": {"refresh_interval": s.refresh_interval, "number_of_replicas": s.replicas}}

    @checks_names
    def begin_build(self, alias: str, spec: IndexSpec, *, resume_from: str | None = None) -> str:
        if resume_from is not None:
            if not self.index_exists(resume_from):
                raise IndexNotFound(
                    f"cannot resume: index {resume_from!r} is gone from {self.urls_text}; ingest without --resume"
                )
            self._call(
                "relax settings", self.client.indices.put_settings, index=resume_from, body=self._loading_settings()
            )
            return resume_from
        physical = f"{alias}-{datetime.now(UTC).strftime('%Y%m%d%H%M%S%f')}"
        self._create(physical, spec, loading=True)
        return physical

    @checks_names
    def finish_build(self, alias: str, physical: str) -> None:
        """Restore serving settings, refresh, then move the alias (and the previous build's) in one request."""
        self._call("restore settings", self.client.indices.put_settings, index=physical, body=self._serving_settings())
        self.refresh(physical)
        keep = previous_alias(alias)
        targets = self._alias_targets(alias)
        if targets == [physical]:
            return  # swapped already (a finish interrupted after the swap, then resumed): nothing left to do
        current = [p for p in targets if p != physical]
        retired = self._alias_targets(keep)
        # no alias of that name, but an index: a plain index built before gives way to the alias
        plain = (
            not targets and alias != physical and self._call("index exists", self.client.indices.exists, index=alias)
        )
        kept = current[0] if current else None
        body = alias_actions({alias: (current, physical), keep: (retired, kept)}, remove_index=alias if plain else None)
        self._call("swap alias", self.client.indices.update_aliases, body=body)
        for old in [*current[1:], *retired]:
            if old not in (physical, kept):
                self._call("drop old index", self.client.indices.delete, index=old)
        # builds a kill left between an earlier swap and its clean-up (this runs under the writer lock)
        for orphan in self.orphan_builds(alias):
            log.info("removing orphan build %s of %s", orphan, alias)
            self._call("drop orphan build", self.client.indices.delete, index=orphan)

    @checks_names
    def rollback(self, alias: str) -> tuple[str, str]:
        keep = previous_alias(alias)
        current, previous = self._alias_targets(alias), self._alias_targets(keep)
        if len(current) != 1 or len(previous) != 1:
            raise IndexNotFound(
                f"no previous build of {alias!r} to roll back to on {self.urls_text}: one is kept "
                "from the second successful ingest on"
            )
        body = alias_actions({alias: (current, previous[0]), keep: (previous, current[0])})
        self._call("roll back alias", self.client.indices.update_aliases, body=body)
        return previous[0], current[0]

    # --- the one-writer lock: a create-only document per alias in LOCK_INDEX, kept alive by a heartbeat ---
    @checks_names
    def writer_lock(self, alias: str, *, force: bool = False) -> contextlib.AbstractContextManager[None]:
        return self._held_lock(alias, force)

    @contextlib.contextmanager
    def _held_lock(self, alias: str, force: bool) -> Iterator[None]:
        self._ensure_lock_index()
        if force:
            self._break_lock(alias, self._lock_holder(alias))
        record = {**holder_info(), "alias": alias, "heartbeat": time.time()}
        taken = self._try_lock(alias, record)
        if taken is None:
            holder = self._lock_holder(alias)
            if not _died_on_this_host(holder):
                raise IndexLocked(self._lock_refusal(alias, holder))
            # its holder was a process on this host that no longer exists (killed): the lock is certainly stale
            self._break_lock(alias, holder)
            taken = self._try_lock(alias, record)
            if taken is None:
                raise IndexLocked(self._lock_refusal(alias, self._lock_holder(alias)))
        stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(alias, record, taken, stop), name=f"lock-{alias}", daemon=True
        )
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join(timeout=5)
            with contextlib.suppress(Exception):  # a lock we cannot delete expires by its heartbeat
                self._call("release writer lock", self.client.delete, index=LOCK_INDEX, id=alias, refresh="true")

    def _try_lock(self, alias: str, record: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Create the lock document; its write result, or ``None`` when one exists (another holder)."""
        try:
            return self._call(
                "take writer lock", self.client.create, index=LOCK_INDEX, id=alias, body=dict(record), refresh="true"
            )
        except self.api_error as exc:
            if self._status(exc) != 409:
                raise
            return None

    def _ensure_lock_index(self) -> None:
        if not self.index_exists(LOCK_INDEX):
            self.create_if_missing(LOCK_INDEX, log_index_body(LOCK_MAPPING), "create lock index")

    def create_if_missing(self, name: str, body: Mapping[str, Any], what: str) -> bool:
        """Create index ``name``; ``False`` when another process created it first (not an error)."""
        try:
            self._call(what, self.client.indices.create, index=name, body=dict(body))
            return True
        except self.api_error as exc:
            if "resource_already_exists" not in str(exc):
                raise
            return False

    def _lock_refusal(self, alias: str, holder: Mapping[str, Any] | None) -> str:
        age = time.time() - float((holder or {}).get("heartbeat") or 0)
        if holder is not None and age > LOCK_TTL_SECONDS:
            return (
                f"index {alias!r} is locked by {describe_holder(holder)}, whose last heartbeat was {age:.0f} s ago: "
                "that process is gone. If so, rerun with --force-unlock"
            )
        return (
            f"index {alias!r} is being written by {describe_holder(holder)}: wait for it to finish, or "
            "--force-unlock if that process is gone"
        )

    def _lock_holder(self, alias: str) -> dict[str, Any] | None:
        try:
            found = self._call("read writer lock", self.client.get, index=LOCK_INDEX, id=alias)
        except self.api_error:
            return None
        return dict(found.get("_source") or {})

    def _break_lock(self, alias: str, holder: Mapping[str, Any] | None) -> None:
        if holder is not None:
            log.warning("breaking the writer lock of %s held by %s", alias, describe_holder(holder))
            with contextlib.suppress(self.api_error):
                self._call("break writer lock", self.client.delete, index=LOCK_INDEX, id=alias, refresh="true")

    def _heartbeat(self, alias: str, record: dict[str, Any], taken: Mapping[str, Any], stop: threading.Event) -> None:
        seq, term = taken.get("_seq_no"), taken.get("_primary_term")
        while not stop.wait(LOCK_TTL_SECONDS / 4):
            try:
                cond = {"if_seq_no": seq, "if_primary_term": term} if seq is not None and term is not None else {}
                body = {**record, "heartbeat": time.time()}
                done = self._call("lock heartbeat", self.client.index, index=LOCK_INDEX, id=alias, body=body, **cond)
                seq, term = done.get("_seq_no", seq), done.get("_primary_term", term)
            except Exception as exc:  # a lost heartbeat only makes the lock look stale sooner
                log.warning("writer lock heartbeat of %s failed: %s", alias, exc)

    @checks_names
    def serving_build(self, alias: str) -> str | None:
        targets = self._alias_targets(alias)
        if targets:
            return targets[0]
        return alias if self.index_exists(alias) else None

    @checks_names
    def orphan_builds(self, alias: str) -> list[str]:
        self.server  # noqa: B018
        pattern = build_pattern(alias)
        found = self._call("list builds", self.client.indices.get_alias, index=f"{alias}-*")
        return sorted(name for name, info in found.items() if pattern.match(name) and not info.get("aliases"))

    @checks_names
    def drop_index(self, index: str) -> None:
        targets = self._alias_targets(index)
        if targets:
            targets += self._alias_targets(previous_alias(index))
        for physical in targets or ([index] if self.index_exists(index) else []):
            self._call("drop index", self.client.indices.delete, index=physical)

    # --- documents --------------------------------------------------------------------------------
    def _source(self, doc: IndexedDocument) -> dict[str, Any]:
        return {
            "title": doc.title,
            "text": doc.text,
            VECTOR_FIELD: np.asarray(doc.vector, dtype=np.float32),
            METADATA_FIELD: dict(doc.metadata),
        }

    def _bulk_actions(self, index: str, docs: Iterable[IndexedDocument]) -> Iterable[dict[str, Any]]:
        for doc in docs:
            yield {"_op_type": "index", "_index": index, "_id": doc.doc_id, "_source": self._source(doc)}

    @property
    @abstractmethod
    def helpers(self) -> Any:
        """The client library's ``helpers`` module: both ship ``streaming_bulk`` and ``scan`` alike."""

    def _streaming_bulk(self, actions: Iterable[dict[str, Any]]) -> Iterable[tuple[bool, dict[str, Any]]]:
        """``(ok, item)`` per action; failures come back as items (our retry loop decides), never raised."""
        return self.helpers.streaming_bulk(
            self.client,
            actions,
            chunk_size=self.settings.bulk_docs,
            max_chunk_bytes=self.settings.bulk_bytes,
            raise_on_error=False,
            raise_on_exception=False,
            max_retries=0,
        )

    @checks_names
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
        return self._bulk_until_settled(
            index,
            pending,
            lambda batch: self._bulk_actions(index, batch),
            what="documents",
            hint="nothing was lost: check the cluster's health and rerun with --resume",
        )

    def _shards(self, pending: dict[str, Any]) -> list[dict[str, Any]]:
        """``pending`` split into at most ``bulk_workers`` contiguous parts of at least a few documents."""
        workers = min(self.settings.bulk_workers, max(1, len(pending) // _MIN_SHARD_DOCS))
        if workers <= 1:
            return [pending]
        items = list(pending.items())
        size = -(-len(items) // workers)
        return [dict(items[i : i + size]) for i in range(0, len(items), size)]

    @cached_property
    def _bulk_pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self.settings.bulk_workers, thread_name_prefix=f"{self.name}-bulk")

    def _bulk_until_settled(
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
            wait=wait_random_exponential(multiplier=0.5, max=self.settings.backoff_max),
            stop=stop_after_attempt(self.settings.bulk_attempts),
            sleep=self._sleep,
        )
        try:
            for attempt in retrying:
                with attempt:
                    self._bulk_once(index, pending, actions, done, refused)
                    if pending:
                        raise _Retryable(f"{len(pending)} {what} got 429/5xx answers or a dropped connection")
        except RetryError as exc:
            raise IndexingError(
                f"{self.name} at {self.urls_text} kept refusing {len(pending)} {what} after "
                f"{self.settings.bulk_attempts} attempts (429/5xx or dropped connections); {hint}",
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
        self.server  # noqa: B018
        retry_statuses: dict[Any, int] = {}
        try:
            for ok, item in self._streaming_bulk(actions(list(pending.values()))):
                op = next(iter(item.values()))
                item_id, status = str(op.get("_id")), op.get("status")
                if ok:
                    done.append(item_id)
                    pending.pop(item_id, None)
                elif status in RETRYABLE_STATUS or not isinstance(status, int):
                    retry_statuses[status] = retry_statuses.get(status, 0) + 1
                else:
                    refused.append(FailedItem(item_id, _reason(op.get("error") or op.get("result")), status))
                    pending.pop(item_id, None)
        except self.connection_errors as exc:
            retry_statuses[type(exc).__name__] = len(pending)
        if retry_statuses:
            log.warning("bulk into %s: %d items to retry (%s)", index, len(pending), retry_statuses)

    @checks_names
    def delete(self, index: str, doc_ids: Sequence[str]) -> int:
        """Remove documents; return how many existed. A refusal (429 after every retry, 5xx) is an
        ``IndexingError``, never counted as "did not exist"."""
        pending = {str(i): str(i) for i in doc_ids}
        deleted, refused = self._bulk_until_settled(
            index,
            pending,
            lambda ids: ({"_op_type": "delete", "_index": index, "_id": i} for i in ids),
            what="deletes",
            hint="the documents may still exist: check the cluster's health and delete again",
        )
        errors = [f for f in refused if f.status != 404]  # 404: the document was not there
        if errors:
            raise IndexingError(
                f"{self.name} refused {len(errors)} deletes from {index}: {errors[0].reason}", failed=errors
            )
        return len(deleted)

    @checks_names
    def count(self, index: str) -> int:
        self.server  # noqa: B018 - connect and check the engine first
        return int(self._call("count", self.client.count, index=index)["count"])

    @checks_names
    def refresh(self, index: str) -> None:
        self.server  # noqa: B018
        self._call("refresh", self.client.indices.refresh, index=index)

    @checks_names
    def stats(self, index: str) -> IndexStats:
        targets = self._alias_targets(index)
        physical = targets[0] if targets else index
        raw = self._call("stats", self.client.indices.stats, index=physical, metric="store")
        size = raw["indices"][physical]["total"]["store"]["size_in_bytes"]
        body = self._mapping(physical)
        fields = mapping_fields(body)
        return IndexStats(
            alias=index if targets else "",
            physical=physical,
            count=self.count(index),
            spec=_spec_from_mapping(body),
            store_bytes=int(size),
            vector=dict(body.get("properties", {}).get(VECTOR_FIELD) or {}),
            fields=fields,
            metadata_fields={
                path.removeprefix(f"{METADATA_FIELD}."): kind
                for path, kind in fields.items()
                if path.startswith(f"{METADATA_FIELD}.")
            },
        )

    # --- search -----------------------------------------------------------------------------------
    def _search(
        self, index: str, body: Mapping[str, Any], params: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        self.server  # noqa: B018
        extra = {"params": dict(params)} if params else {}
        try:
            response = self._call("search", self.client.search, index=index, body=dict(body), **extra)
        except self.api_error as exc:
            raise QueryError(f"{self.name} rejected the search on {index!r}: {_reason(exc)}") from exc
        return response["hits"]["hits"]

    def _hits(self, raw: Sequence[dict[str, Any]], stage: str) -> list[Hit]:
        hits = []
        for rank, h in enumerate(raw, start=1):
            src = h.get("_source") or {}
            score = float(h.get("_score") or 0.0)
            hits.append(
                Hit(
                    doc_id=str(h["_id"]),
                    rank=rank,
                    score=score,
                    title=src.get("title", ""),
                    text=src.get("text", ""),
                    metadata=src.get(METADATA_FIELD) or {},
                    bm25_score=score if stage == "bm25" else None,
                    knn_score=score if stage == "knn" else None,
                    fusion_score=score if stage == "fusion" else None,
                )
            )
        return hits

    @checks_names
    def search_bm25(self, index: str, query: str, k: int, filters: Filter | None = None) -> list[Hit]:
        return self._hits(self._search(index, bm25_body(query, k, filters)), "bm25")

    @abstractmethod
    def knn_body(self, vector: np.ndarray, k: int, num_candidates: int, filters: Filter | None) -> dict[str, Any]:
        """The engine's kNN search request."""

    def similarity(self, score: float) -> float:
        """The vector similarity behind an engine's kNN ``_score`` (engines rescale it to be positive)."""
        return score

    @checks_names
    def search_knn(
        self, index: str, vector: np.ndarray, k: int, num_candidates: int, filters: Filter | None = None
    ) -> list[Hit]:
        raw = self._search(index, self.knn_body(vector, k, num_candidates, filters))
        for h in raw:  # report the similarity itself, as the embedded backend does
            h["_score"] = self.similarity(float(h.get("_score") or 0.0))
        return self._hits(raw, "knn")

    def dialect_fusion_refusal(self, request: SearchRequest) -> str | None:
        """Why this engine and version cannot fuse ``request`` on the server (the engine subclass says)."""
        return f"{self.name} has no server-side fusion"

    def fused_body(self, request: SearchRequest) -> dict[str, Any]:
        """The server-side fusion request (asked only after ``dialect_fusion_refusal`` said yes)."""
        raise FusionUnsupported(f"{self.name} has no server-side fusion")

    def fusion_refusal(self, request: SearchRequest) -> str | None:
        if request.fusion is None:
            return "one leg has nothing to fuse"
        return self._server_fusion_refused.get(request.fusion.method) or self.dialect_fusion_refusal(request)

    def _hybrid_search(self, index: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        return self._search(index, body)

    @checks_names
    def search_fused(self, index: str, request: SearchRequest) -> list[Hit]:
        assert request.fusion is not None, "asked only after fusion_refusal said yes"
        body = self.fused_body(request)
        try:
            raw = self._hybrid_search(index, body)
        except QueryError as exc:
            cause = exc.__cause__
            if cause is not None and self._status(cause) in (400, 403, 404):
                method = request.fusion.method
                reason = f"{self.name} {self.server.version_text} refused {method} fusion: {_reason(cause)}"
                self._server_fusion_refused[method] = reason
                raise FusionUnsupported(reason) from exc
            raise
        return self._hits(raw, "fusion")

    @checks_names
    def search_hybrid(self, index: str, query: str, vector: np.ndarray, k: int, **legs: Any) -> list[Hit]:
        """Deprecated two-leg form of ``search_fused`` (``legs``: bm25_depth, knn_depth, num_candidates,
        fusion as a ``ServerFusion``, filters); raises ``FusionUnsupported`` where the server cannot fuse."""
        fusion: ServerFusion = legs.pop("fusion")
        request = two_leg_request(query, vector, k, fusion=fusion.spec(), **legs)
        reason = self.fusion_refusal(request)
        if reason is not None:
            raise FusionUnsupported(reason)
        return self.search_fused(index, request)

    # --- corpus-wide access (duplicate mining) -------------------------------------------------------
    def _scan(self, index: str, body: dict[str, Any], size: int) -> Iterable[dict[str, Any]]:
        """Every hit of ``body`` over ``index``, scrolled."""
        return self.helpers.scan(self.client, index=index, query=body, size=size)

    @checks_names
    def iter_vectors(self, index: str, batch: int = 1_000) -> Iterable[tuple[list[str], np.ndarray]]:
        """Every stored vector, scrolled from ``_source`` a batch at a time."""
        ids: list[str] = []
        vectors: list[Any] = []
        for hit in self._scan(index, {"query": {"match_all": {}}, "_source": [VECTOR_FIELD]}, batch):
            vector = (hit.get("_source") or {}).get(VECTOR_FIELD)
            if vector is None:
                continue
            ids.append(str(hit["_id"]))
            vectors.append(vector)
            if len(ids) >= batch:
                yield ids, np.asarray(vectors, dtype=np.float32)
                ids, vectors = [], []
        if ids:
            yield ids, np.asarray(vectors, dtype=np.float32)

    @checks_names
    def iter_documents(self, index: str, batch: int = 1_000) -> Iterable[list[StoredDocument]]:
        """Every stored document's text and metadata, scrolled a batch at a time (vectors left on the server)."""
        out: list[StoredDocument] = []
        body = {"query": {"match_all": {}}, "_source": [*TEXT_FIELDS, METADATA_FIELD]}
        for hit in self._scan(index, body, batch):
            src = hit.get("_source") or {}
            out.append(
                StoredDocument(
                    str(hit["_id"]), src.get("title") or "", src.get("text") or "", src.get(METADATA_FIELD) or {}
                )
            )
            if len(out) >= batch:
                yield out
                out = []
        if out:
            yield out

    @checks_names
    def knn_batch(self, index: str, vectors: np.ndarray, k: int, num_candidates: int) -> list[list[tuple[str, float]]]:
        """Neighbours of many vectors in one ``_msearch`` round trip."""
        lines: list[dict[str, Any]] = []
        for vector in vectors:
            body = self.knn_body(vector, k, num_candidates, None)
            body["_source"] = False
            lines += [{"index": index}, body]
        response = self._call("msearch", self.client.msearch, body=lines)
        out = []
        for item in response["responses"]:
            if "error" in item:
                raise QueryError(f"{self.name} rejected a kNN search in a batch: {_reason(item['error'])}")
            out.append([(str(h["_id"]), self.similarity(float(h["_score"]))) for h in item["hits"]["hits"]])
        return out

    @checks_names
    def get_texts(self, index: str, doc_ids: Sequence[str]) -> dict[str, str]:
        """``title text`` of each id found, in ``mget`` requests of ``bulk_docs`` ids each."""
        out: dict[str, str] = {}
        ids = list(doc_ids)
        for start in range(0, len(ids), self.settings.bulk_docs):
            part = ids[start : start + self.settings.bulk_docs]
            response = self._call(
                "mget", self.client.mget, index=index, body={"ids": part}, _source_includes=list(TEXT_FIELDS)
            )
            out.update(
                (d["_id"], passage_text(d["_source"].get("title", ""), d["_source"].get("text", "")))
                for d in response["docs"]
                if d.get("found")
            )
        return out

    def log_sink(self) -> ClusterLogSink:
        """Query and ingest logs as indexes beside the corpus on this cluster."""
        return ClusterLogSink(self)

    def close(self) -> None:
        if "_bulk_pool" in self.__dict__:
            self.__dict__.pop("_bulk_pool").shutdown(wait=True)
        if "client" in self.__dict__:
            self.__dict__.pop("client").close()

    def __enter__(self) -> ClusterBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ClusterLogSink:
    """A ``LogSink`` writing log documents into indexes of the backend's cluster (see ``search.logs``)."""

    def __init__(self, backend: ClusterBackend) -> None:
        self.backend = backend
        self.location = backend.urls_text

    @checks_names
    def ensure(self, name: str, mapping: Mapping[str, Any]) -> None:
        b = self.backend
        if not b.index_exists(name) and b.create_if_missing(name, log_index_body(mapping), "create log index"):
            return
        # it existed (made by another process first, or by an older version): it gains the fields added since
        # (mappings only ever grow)
        b._call(
            "update log mapping", b.client.indices.put_mapping, index=name, body={"properties": mapping["properties"]}
        )

    @checks_names
    def append(self, name: str, docs: Sequence[Mapping[str, Any]], *, refresh: bool = False) -> int:
        b = self.backend
        b.server  # noqa: B018
        actions = [{"_op_type": "create", "_index": name, "_id": new_log_id(), "_source": dict(d)} for d in docs]
        stored, failed = 0, []
        for ok, item in b._streaming_bulk(actions):
            op = next(iter(item.values()))
            if ok:
                stored += 1
            else:
                failed.append(FailedItem(str(op.get("_id")), _reason(op.get("error")), op.get("status")))
        if refresh:
            b.refresh(name)
        if failed:
            raise IndexingError(
                f"{b.name} refused {len(failed)} documents for {name}: {failed[0].reason}", failed=failed
            )
        return stored

    @checks_names
    def latest(self, name: str) -> dict[str, Any] | None:
        if not self.backend.index_exists(name):
            return None
        hits = self.backend._search(name, latest_body())
        return dict(hits[0]["_source"]) if hits else None

    @checks_names
    def count(self, name: str) -> int:
        return self.backend.count(name) if self.backend.index_exists(name) else 0


def _died_on_this_host(holder: Mapping[str, Any] | None) -> bool:
    """Whether a lock's holder was a process on this host that no longer exists."""
    if not holder or holder.get("host") != holder_info()["host"] or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        return False
    return False


def _spec_from_mapping(body: Mapping[str, Any]) -> IndexSpec | None:
    """The spec stored in the mapping's ``_meta``; for an index made elsewhere, its vector size alone."""
    meta = (body.get("_meta") or {}).get(SPEC_META_KEY)
    if meta:
        return IndexSpec.from_dict(meta)
    vector = body.get("properties", {}).get(VECTOR_FIELD, {})
    dims = vector.get("dims") or vector.get("dimension")
    return IndexSpec(dims=int(dims)) if dims else None


def _reason(error: Any) -> str:
    """A short human reason from an engine error body or exception."""
    if isinstance(error, dict):
        reason = error.get("reason") or error.get("type") or str(error)
        caused = error.get("caused_by")
        if isinstance(caused, dict) and caused.get("reason") and caused.get("reason") != reason:
            reason = f"{reason} (caused by: {caused['reason']})"
        return str(reason)
    info = getattr(error, "info", None) or getattr(error, "body", None)
    if isinstance(info, dict) and isinstance(info.get("error"), dict):
        return _reason(info["error"].get("root_cause", [info["error"]])[0])
    return str(error) if error is not None else "unknown error"
