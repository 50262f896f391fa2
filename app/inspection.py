"""``hybrid-search inspect``: what an index holds and how it was built, for users without Kibana.

It reads, never writes: the alias and its physical index, counts and size, the vector field and its HNSW
options, the field mapping, the last ingest run from ``<alias>-ingest`` and how many searches
``<alias>-queries`` holds. The same report comes from every backend, the embedded one included.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from hybrid_search.app.logs import ingest_log_index, query_log_index
from hybrid_search.backends.base import Backend, IndexStats

__all__ = ["Inspection", "inspect_index"]


@dataclass(frozen=True, slots=True)
class Inspection:
    """One index as ``inspect`` reports it."""

    backend: str
    location: str  # where the logs live: the cluster URL, or the embedded backend's log folder
    stats: IndexStats
    last_ingest: Mapping[str, Any] | None = None
    queries_logged: int = 0
    last_query: Mapping[str, Any] | None = field(default=None)
    # builds of this alias nothing serves (a kill between a swap and its clean-up, or an unfinished ingest):
    # the next successful build removes them
    orphan_builds: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stats"]["spec"] = self.stats.spec.to_dict() if self.stats.spec else None
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def table(self) -> str:
        """A plain-text report."""
        s = self.stats
        lines = [
            f"backend        {self.backend} (logs at {self.location})",
            f"alias          {s.alias or '(none: a plain index)'}",
            f"physical index {s.physical}",
            f"documents      {s.count:,}",
            f"store size     {_size(s.store_bytes)}",
        ]
        if s.deleted_documents is not None:
            reclaim = f", about {_size(s.reclaimable_bytes)} reclaimable" if s.reclaimable_bytes is not None else ""
            lines.append(
                f"deleted        {s.deleted_documents:,} deleted or replaced, not yet compacted{reclaim}"
                + (" (`hybrid-search compact` removes them)" if s.deleted_documents else "")
            )
        if s.spec is not None:
            lines.append(f"vectors        {s.spec.dims} dims, {s.spec.similarity}, model {s.spec.model or '?'}")
        if s.vector:
            lines.append("vector field   " + ", ".join(f"{k}={_short(v)}" for k, v in s.vector.items()))
        if self.orphan_builds:
            lines.append(
                f"orphan builds  {', '.join(self.orphan_builds)} "
                "(unserved; removed by the next build or by `hybrid-search prune`)"
            )
        filterable = ", ".join(f"{name} ({kind})" for name, kind in s.metadata_fields.items())
        lines.append(f"filter fields  {filterable or 'none (ingest with --metadata-fields to filter)'}")
        lines.append("mapping")
        lines += [f"  {name:<28} {kind}" for name, kind in sorted(s.fields.items())]
        lines.append(
            "last ingest    "
            + (
                _ingest_line(self.last_ingest)
                if self.last_ingest
                else "none logged (ingest with logs.ingest on, the default)"
            )
        )
        queries = f"{self.queries_logged:,} searches logged"
        if self.last_query:
            queries += f", last at {self.last_query.get('@timestamp')} ({self.last_query.get('mode')})"
        lines.append(
            "query log      "
            + (
                queries
                if self.queries_logged
                else "empty (search with --log-queries or HYBRID_SEARCH_LOGS__QUERIES=true)"
            )
        )
        return "\n".join(lines)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _short(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, Mapping | list) else str(value)


def _ingest_line(doc: Mapping[str, Any]) -> str:
    status = doc.get("status", "?")
    if status != "completed":
        return f"{status} at {doc.get('@timestamp')}: {doc.get('error', '')}"
    return (
        f"{doc.get('@timestamp')} from {doc.get('source')} with {doc.get('model')}: read {doc.get('read'):,}, "
        f"stored {doc.get('stored'):,}, rejected {doc.get('rejected'):,}, truncated {doc.get('truncated'):,}; "
        f"{doc.get('duration_s')} s, encode {doc.get('encode_docs_per_s')} docs/s, "
        f"bulk {doc.get('bulk_docs_per_s')} docs/s -> {doc.get('physical')}"
    )


def inspect_index(backend: Backend, index: str) -> Inspection:
    """Everything ``inspect`` shows about ``index`` (an alias or a physical index) on ``backend``."""
    stats = backend.stats(index)
    alias = stats.alias or index
    sink = backend.log_sink()
    queries = query_log_index(alias)
    logged = sink.count(queries)
    return Inspection(
        backend=backend.name,
        location=sink.location,
        stats=stats,
        last_ingest=sink.latest(ingest_log_index(alias)),
        queries_logged=logged,
        last_query=sink.latest(queries) if logged else None,
        orphan_builds=tuple(backend.orphan_builds(alias)),
    )
