"""``ClusterBackend``: what Elasticsearch and OpenSearch share: alias-based builds, lifecycle, writes and
logs; the connection is ``connection``, reads and searches ``search``, the one-writer lock ``locks`` and
resilient bulk ``bulk``.

An engine subclass supplies its client, its exception types and the request bodies where the engines
differ (mappings, kNN, server-side fusion). Construction only validates: the first call that needs the
cluster connects, reads the server version and plugins, and turns any failure into one
``BackendUnavailable`` line naming the URL, what failed and what to check.
"""

from __future__ import annotations

import contextlib
import logging
from abc import abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from hybrid_search.backends.base import (
    BulkResult,
    IndexedDocument,
    IndexSpec,
    checks_names,
    previous_alias,
)
from hybrid_search.backends.cluster.bodies import (
    alias_actions,
    spec_from_mapping,
    write_gen_body,
)
from hybrid_search.backends.cluster.bulk import BulkWriter
from hybrid_search.backends.cluster.connection import ClientLibrary
from hybrid_search.backends.cluster.locks import WriterLocks
from hybrid_search.backends.cluster.search import ClusterSearch
from hybrid_search.backends.handles import OpensIndexes
from hybrid_search.config.errors import (
    ConfigError,
    IndexNotFound,
)
from hybrid_search.config.names import build_alias, build_pattern, reserved_reason

if TYPE_CHECKING:
    from hybrid_search.backends.cluster.logsink import ClusterLogSink

__all__ = ["ClientLibrary", "ClusterBackend"]

log = logging.getLogger(__name__)


class ClusterBackend(ClusterSearch, OpensIndexes):
    """The ``Backend`` protocol for a search cluster; subclasses add the engine's dialect."""

    build_check_seconds = 1.0  # one alias lookup a second at most (searches name the build, so this is safe)

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

    def catalog(self) -> dict[str, tuple[str, ...]]:
        self.connect()
        found = self.call("list indexes", self.client.indices.get_alias, index="*")
        out: dict[str, tuple[str, ...]] = {}
        for name, info in sorted(found.items()):
            if name.startswith(".") or (reserved_reason(name) is not None and build_alias(name) is None):
                continue  # the engine's own, a log or the lock index
            out[name] = tuple(sorted((info.get("aliases") or {}).keys()))
        return out

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
    @cached_property
    def _bulk(self) -> BulkWriter:
        return BulkWriter(self)

    def _bulk_actions(self, index: str, docs: Iterable[IndexedDocument]) -> Iterable[dict[str, Any]]:
        """The bulk actions an upsert sends (the spec tests check them against the official specs)."""
        return self._bulk.actions(index, docs)

    @checks_names
    def upsert(self, index: str, docs: Sequence[IndexedDocument]) -> BulkResult:
        return self._bulk.upsert(index, docs)

    @checks_names
    def delete(self, index: str, doc_ids: Sequence[str]) -> int:
        """Remove documents; return how many existed. A refusal (429 after every retry, 5xx) is an
        ``IndexingError``, never counted as "did not exist"."""
        return self._bulk.delete(index, doc_ids)

    @checks_names
    def mark_written(self, index: str) -> None:
        """Count the write in the mapping's ``_meta`` (beside the spec), read back by ``stats``."""
        body = write_gen_body(self._mapping(index).get("_meta") or {})
        self.call("mark written", self.client.indices.put_mapping, index=index, body=body)

    @checks_names
    def compact(self, index: str) -> dict[str, int]:
        """Have the engine merge deleted documents away (``_forcemerge?only_expunge_deletes``); the bytes
        before and after are the index's store size as its stats report it."""
        before = self.stats(index).store_bytes or 0
        self.connect()
        self.call("forcemerge", self.client.indices.forcemerge, index=index, only_expunge_deletes=True)
        return {"bytes_before": before, "bytes_after": self.stats(index).store_bytes or 0, "tombstones_removed": 0}

    def log_sink(self) -> ClusterLogSink:
        """Query and ingest logs as indexes beside the corpus on this cluster."""
        from hybrid_search.backends.cluster.logsink import ClusterLogSink

        return ClusterLogSink(self)

    def close(self) -> None:
        if "_bulk" in self.__dict__:
            self.__dict__.pop("_bulk").close()
        super().close()

    def __enter__(self) -> ClusterBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
