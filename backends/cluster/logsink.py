"""``ClusterLogSink``: query and ingest logs as documents in ``<index>-queries`` / ``<index>-ingest`` on the
cluster, through the backend's own bulk helper and searches (asked, never reached into).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hybrid_search.backends.base import (
    checks_names,
)
from hybrid_search.backends.cluster.bodies import (
    latest_body,
    log_index_body,
    reason,
)
from hybrid_search.backends.logsinks import new_log_id
from hybrid_search.config.errors import (
    FailedItem,
    IndexingError,
)

if TYPE_CHECKING:
    from hybrid_search.backends.cluster.store import ClusterBackend

__all__ = ["ClusterLogSink"]


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
        b.call(
            "update log mapping", b.client.indices.put_mapping, index=name, body={"properties": mapping["properties"]}
        )

    @checks_names
    def append(self, name: str, docs: Sequence[Mapping[str, Any]], *, refresh: bool = False) -> int:
        b = self.backend
        b.server  # noqa: B018
        actions = [{"_op_type": "create", "_index": name, "_id": new_log_id(), "_source": dict(d)} for d in docs]
        stored, failed = 0, []
        for ok, item in b.streaming_bulk(actions):
            op = next(iter(item.values()))
            if ok:
                stored += 1
            else:
                failed.append(FailedItem(str(op.get("_id")), reason(op.get("error")), op.get("status")))
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
        hits = self.backend.search_body(name, latest_body())
        return dict(hits[0]["_source"]) if hits else None

    @checks_names
    def count(self, name: str) -> int:
        return self.backend.count(name) if self.backend.index_exists(name) else 0

    @checks_names
    def drop(self, name: str) -> bool:
        if not self.backend.index_exists(name):
            return False
        self.backend.call("drop log", self.backend.client.indices.delete, index=name)
        return True
