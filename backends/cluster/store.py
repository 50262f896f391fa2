"""``ClusterBackend``: what Elasticsearch and OpenSearch share: connection, alias-based builds, counts,
searches and corpus-wide access; the one-writer lock lives in ``locks`` and resilient bulk in ``bulk``.

An engine subclass supplies its client, its exception types and the request bodies where the engines
differ (mappings, kNN, server-side fusion). Construction only validates: the first call that needs the
cluster connects, reads the server version and plugins, and turns any failure into one
``BackendUnavailable`` line naming the URL, what failed and what to check.
"""

from __future__ import annotations

import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from hybrid_search.backends.base import (
    BulkResult,
    IndexedDocument,
    IndexSpec,
    IndexStats,
    StoredDocument,
    checks_names,
    previous_alias,
)
from hybrid_search.backends.cluster.bodies import (
    TEXT_FIELDS,
    VECTOR_FIELD,
    ServerInfo,
    alias_actions,
    bm25_body,
    reason,
    spec_from_mapping,
)
from hybrid_search.backends.cluster.bulk import BulkWriter
from hybrid_search.backends.cluster.locks import WriterLocks
from hybrid_search.backends.handles import OpensIndexes
from hybrid_search.backends.logsinks import mapping_fields
from hybrid_search.config.errors import (
    BackendUnavailable,
    ConfigError,
    FusionUnsupported,
    IndexNotFound,
    QueryError,
)
from hybrid_search.config.names import build_pattern
from hybrid_search.config.settings import BackendSettings, IndexSettings
from hybrid_search.config.text import passage_text
from hybrid_search.search.filters import METADATA_FIELD, Filter
from hybrid_search.search.hits import Hit
from hybrid_search.search.interfaces import ServerFusion
from hybrid_search.search.request import SearchRequest, two_leg_request

if TYPE_CHECKING:
    from hybrid_search.backends.cluster.logsink import ClusterLogSink
    from hybrid_search.config.settings import Settings

__all__ = ["ClientLibrary", "ClusterBackend"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClientLibrary:
    """What an engine's Python client gives every call: the errors of a dropped connection, the error of an
    answered request, and the ``helpers`` module (``streaming_bulk``, ``scan``)."""

    connection_errors: tuple[type[BaseException], ...]
    api_error: type[BaseException]
    helpers: Any


class ClusterBackend(OpensIndexes, ABC):
    """The ``Backend`` protocol for a search cluster; subclasses add the engine's dialect."""

    name = "cluster"
    build_check_seconds = 1.0  # one alias lookup a second at most (searches name the build, so this is safe)
    distribution = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(settings.backend, settings.index)

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
        info = self.call("connect", self._probe)
        if info.distribution != self.distribution:
            raise BackendUnavailable(
                f"{self.urls_text} is {info.distribution} {info.version_text}, not "
                f"{self.distribution}: use --backend {info.distribution}"
            )
        log.info("connected to %s %s at %s", info.distribution, info.version_text, self.urls_text)
        return info

    def connect(self) -> ServerInfo:
        """Connect now (once: it checks the engine and reads its version, which request bodies depend on)."""
        return self.server

    @property
    def urls_text(self) -> str:
        return ", ".join(self.settings.urls)

    @abstractmethod
    def _library(self) -> ClientLibrary:
        """The engine's client library, imported on first use."""

    @cached_property
    def library(self) -> ClientLibrary:
        return self._library()

    @property
    def connection_errors(self) -> tuple[type[BaseException], ...]:
        return self.library.connection_errors

    @property
    def api_error(self) -> type[BaseException]:
        return self.library.api_error

    @property
    def helpers(self) -> Any:
        """The client library's ``helpers`` module: both ship ``streaming_bulk`` and ``scan`` alike."""
        return self.library.helpers

    @abstractmethod
    def status_of(self, exc: BaseException) -> int | None:
        """The HTTP status of an engine error, if it has one."""

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one client call, turning engine errors into the project's errors."""
        try:
            return fn(*args, **kwargs)
        except self.connection_errors as exc:
            raise BackendUnavailable(
                f"{self.name} at {self.urls_text} did not answer ({what}: {type(exc).__name__}); check the URL, "
                "that the cluster is up, and TLS settings (--url https://..., HYBRID_SEARCH_BACKEND__CA_CERTS)"
            ) from exc
        except self.api_error as exc:
            status = self.status_of(exc)
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
        self.connect()
        self.call("create index", self.client.indices.create, index=index, body=self.index_body(spec, loading=loading))

    @checks_names
    def index_exists(self, index: str) -> bool:
        self.connect()
        return bool(self.call("index exists", self.client.indices.exists, index=index))

    @checks_names
    def index_spec(self, index: str) -> IndexSpec | None:
        return spec_from_mapping(self._mapping(index)) if self.index_exists(index) else None

    def _mapping(self, index: str) -> dict[str, Any]:
        mappings = self.call("get mapping", self.client.indices.get_mapping, index=index)
        return next(iter(mappings.values()))["mappings"]

    def _alias_targets(self, alias: str) -> list[str]:
        if not self.call("alias exists", self.client.indices.exists_alias, name=alias):
            return []
        return sorted(self.call("get alias", self.client.indices.get_alias, name=alias))

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
            self.call(
                "relax settings", self.client.indices.put_settings, index=resume_from, body=self._loading_settings()
            )
            return resume_from
        physical = f"{alias}-{datetime.now(UTC).strftime('%Y%m%d%H%M%S%f')}"
        self._create(physical, spec, loading=True)
        return physical

    @checks_names
    def finish_build(self, alias: str, physical: str) -> None:
        """Restore serving settings, refresh, then move the alias (and the previous build's) in one request."""
        self.call("restore settings", self.client.indices.put_settings, index=physical, body=self._serving_settings())
        self.refresh(physical)
        keep = previous_alias(alias)
        targets = self._alias_targets(alias)
        if targets == [physical]:
            return  # swapped already (a finish interrupted after the swap, then resumed): nothing left to do
        current = [p for p in targets if p != physical]
        retired = self._alias_targets(keep)
        # no alias of that name, but an index: a plain index built before gives way to the alias
        plain = not targets and alias != physical and self.call("index exists", self.client.indices.exists, index=alias)
        kept = current[0] if current else None
        body = alias_actions({alias: (current, physical), keep: (retired, kept)}, remove_index=alias if plain else None)
        self.call("swap alias", self.client.indices.update_aliases, body=body)
        for old in [*current[1:], *retired]:
            if old not in (physical, kept):
                self.call("drop old index", self.client.indices.delete, index=old)
        # builds a kill left between an earlier swap and its clean-up (this runs under the writer lock)
        for orphan in self.orphan_builds(alias):
            log.info("removing orphan build %s of %s", orphan, alias)
            self.call("drop orphan build", self.client.indices.delete, index=orphan)

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
        self.call("roll back alias", self.client.indices.update_aliases, body=body)
        return previous[0], current[0]

    # --- the one-writer lock (see ``locks``) and shared index creation ---------------------------------
    @checks_names
    def writer_lock(self, alias: str, *, force: bool = False) -> contextlib.AbstractContextManager[None]:
        return self._locks.held(alias, force)

    @cached_property
    def _locks(self) -> WriterLocks:
        return WriterLocks(self)

    def create_if_missing(self, name: str, body: Mapping[str, Any], what: str) -> bool:
        """Create index ``name``; ``False`` when another process created it first (not an error)."""
        try:
            self.call(what, self.client.indices.create, index=name, body=dict(body))
            return True
        except self.api_error as exc:
            if "resource_already_exists" not in str(exc):
                raise
            return False

    @checks_names
    def serving_build(self, alias: str) -> str | None:
        targets = self._alias_targets(alias)
        if targets:
            return targets[0]
        return alias if self.index_exists(alias) else None

    @checks_names
    def orphan_builds(self, alias: str) -> list[str]:
        self.connect()
        pattern = build_pattern(alias)
        found = self.call("list builds", self.client.indices.get_alias, index=f"{alias}-*")
        return sorted(name for name, info in found.items() if pattern.match(name) and not info.get("aliases"))

    @checks_names
    def drop_index(self, index: str) -> None:
        targets = self._alias_targets(index)
        if targets:
            targets += self._alias_targets(previous_alias(index))
        for physical in targets or ([index] if self.index_exists(index) else []):
            self.call("drop index", self.client.indices.delete, index=physical)

    # --- documents (see ``bulk``) ---------------------------------------------------------------------

    def streaming_bulk(self, actions: Iterable[dict[str, Any]]) -> Iterable[tuple[bool, dict[str, Any]]]:
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

    @cached_property
    def _bulk(self) -> BulkWriter:
        return BulkWriter(self)

    @checks_names
    def upsert(self, index: str, docs: Sequence[IndexedDocument]) -> BulkResult:
        return self._bulk.upsert(index, docs)

    @checks_names
    def delete(self, index: str, doc_ids: Sequence[str]) -> int:
        """Remove documents; return how many existed. A refusal (429 after every retry, 5xx) is an
        ``IndexingError``, never counted as "did not exist"."""
        return self._bulk.delete(index, doc_ids)

    @checks_names
    def count(self, index: str) -> int:
        self.connect()
        return int(self.call("count", self.client.count, index=index)["count"])

    @checks_names
    def refresh(self, index: str) -> None:
        self.connect()
        self.call("refresh", self.client.indices.refresh, index=index)

    @checks_names
    def stats(self, index: str) -> IndexStats:
        targets = self._alias_targets(index)
        physical = targets[0] if targets else index
        raw = self.call("stats", self.client.indices.stats, index=physical, metric="store")
        size = raw["indices"][physical]["total"]["store"]["size_in_bytes"]
        body = self._mapping(physical)
        fields = mapping_fields(body)
        return IndexStats(
            alias=index if targets else "",
            physical=physical,
            count=self.count(index),
            spec=spec_from_mapping(body),
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
    def search_body(
        self, index: str, body: Mapping[str, Any], params: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        self.connect()
        extra = {"params": dict(params)} if params else {}
        try:
            response = self.call("search", self.client.search, index=index, body=dict(body), **extra)
        except self.api_error as exc:
            raise QueryError(f"{self.name} rejected the search on {index!r}: {reason(exc)}") from exc
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
        return self._hits(self.search_body(index, bm25_body(query, k, filters)), "bm25")

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
        raw = self.search_body(index, self.knn_body(vector, k, num_candidates, filters))
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
        return self.search_body(index, body)

    @checks_names
    def search_fused(self, index: str, request: SearchRequest) -> list[Hit]:
        assert request.fusion is not None, "asked only after fusion_refusal said yes"
        body = self.fused_body(request)
        try:
            raw = self._hybrid_search(index, body)
        except QueryError as exc:
            cause = exc.__cause__
            if cause is not None and self.status_of(cause) in (400, 403, 404):
                method = request.fusion.method
                why = f"{self.name} {self.server.version_text} refused {method} fusion: {reason(cause)}"
                self._server_fusion_refused[method] = why
                raise FusionUnsupported(why) from exc
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
        response = self.call("msearch", self.client.msearch, body=lines)
        out = []
        for item in response["responses"]:
            if "error" in item:
                raise QueryError(f"{self.name} rejected a kNN search in a batch: {reason(item['error'])}")
            out.append([(str(h["_id"]), self.similarity(float(h["_score"]))) for h in item["hits"]["hits"]])
        return out

    @checks_names
    def get_texts(self, index: str, doc_ids: Sequence[str]) -> dict[str, str]:
        """``title text`` of each id found, in ``mget`` requests of ``bulk_docs`` ids each."""
        out: dict[str, str] = {}
        ids = list(doc_ids)
        for start in range(0, len(ids), self.settings.bulk_docs):
            part = ids[start : start + self.settings.bulk_docs]
            response = self.call(
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
        from hybrid_search.backends.cluster.logsink import ClusterLogSink

        return ClusterLogSink(self)

    def close(self) -> None:
        if "_bulk" in self.__dict__:
            self.__dict__.pop("_bulk").close()
        if "client" in self.__dict__:
            self.__dict__.pop("client").close()

    def __enter__(self) -> ClusterBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
