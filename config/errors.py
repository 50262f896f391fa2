"""The one exception hierarchy of hybrid-search.

Every error the application raises on purpose derives from :class:`HybridSearchError`, and its message
says what went wrong *and what to do next*; the CLI prints that message as one line (``--debug`` shows
the traceback). Engine and library errors are wrapped with ``raise ... from exc`` so the cause is kept.

    HybridSearchError
    ├── ConfigError            bad settings, unknown model, missing optional extra
    ├── SourceError            a corpus cannot be read at all (missing file, unknown format)
    ├── BadRecordError         one bad record, raised only in ``--strict`` mode
    ├── BackendUnavailable     a cluster cannot be reached or refuses the credentials
    ├── IndexNotFound          searching or counting an index that does not exist
    ├── IndexingError          documents were not stored; carries the failed items
    ├── IndexLocked            another process is writing this index (the message names it)
    ├── CorruptIndex           a stored file fails its integrity check (``hybrid-search repair`` recovers it)
    ├── FusionUnsupported      the server cannot fuse this way; callers fall back to client-side fusion
    ├── QueryError             a query was rejected
    └── DashboardsError        Kibana / OpenSearch Dashboards refused the saved objects

Nothing here imports anything heavy, and nothing here logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "BackendUnavailable",
    "BadRecordError",
    "ConfigError",
    "CorruptIndex",
    "DashboardsError",
    "FailedItem",
    "FusionUnsupported",
    "HybridSearchError",
    "IndexLocked",
    "IndexNotFound",
    "IndexingError",
    "QueryError",
    "SourceError",
]


class HybridSearchError(Exception):
    """Base class of every error hybrid-search raises on purpose."""


class ConfigError(HybridSearchError):
    """Settings are invalid, a model cannot be resolved, or an optional extra is missing."""


class SourceError(HybridSearchError):
    """A corpus, query or qrels source cannot be opened or has an unknown layout."""


class BadRecordError(HybridSearchError):
    """A record was rejected while ``strict`` mode makes the first rejection fatal."""


class BackendUnavailable(HybridSearchError):
    """The search backend cannot be reached, or refused the connection or credentials."""


class IndexNotFound(HybridSearchError):
    """The named index or alias does not exist on the backend."""


class IndexLocked(HybridSearchError):
    """Another process holds this index's writer lock; the message names the holder and what to do."""


class CorruptIndex(HybridSearchError):
    """A stored file of an index does not match the checksum recorded when it was written."""


class QueryError(HybridSearchError):
    """The backend rejected a query."""


class DashboardsError(HybridSearchError):
    """Kibana or OpenSearch Dashboards could not be reached, or refused some saved objects."""


class FusionUnsupported(HybridSearchError):
    """The backend cannot run this fusion on the server; the searcher fuses in the client instead."""


@dataclass(frozen=True, slots=True)
class FailedItem:
    """One document the backend refused, with the reason it gave."""

    doc_id: str
    reason: str
    status: int | None = None


class IndexingError(HybridSearchError):
    """Documents were not stored. ``failed`` lists each one with its reason."""

    def __init__(self, message: str, failed: Sequence[FailedItem] = ()) -> None:
        super().__init__(message)
        self.failed: tuple[FailedItem, ...] = tuple(failed)
