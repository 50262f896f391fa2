"""``IndexWrites``: the client's incremental writes into the index it serves (``add``, ``upsert``,
``delete_documents``, ``compact``) and the data-dir-wide management calls (``indexes``, ``drop``, ``prune``).

A mixin of ``HybridSearch``: it uses the client's backend, settings, index and models, and tells the client
to read the index's spec again after a write. The work itself is ``ingest.incremental`` and
``app.indexes``; nothing here encodes or stores by itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hybrid_search.app.indexes import IndexListing, PruneReport
    from hybrid_search.backends.base import Backend
    from hybrid_search.config.settings import Settings
    from hybrid_search.encoding.encoder import Encoder
    from hybrid_search.encoding.sparse import SparseEncoder
    from hybrid_search.ingest.incremental import WriteMode, WriteSummary
    from hybrid_search.ingest.sources import CorpusSource
    from hybrid_search.search.filters import Filter

__all__ = ["IndexWrites"]

Records = str | Path | Iterable[Mapping[str, Any]] | Any


class IndexWrites:
    """Incremental writes and index management on ``HybridSearch`` (see the module docstring)."""

    settings: Settings
    index: str

    if TYPE_CHECKING:  # provided by HybridSearch

        @property
        def backend(self) -> Backend: ...

        @property
        def sparse_encoder(self) -> SparseEncoder | None: ...

        def _encoder_for_index(self) -> Encoder: ...

        def _forget_index(self) -> None: ...

        def _as_source(self, source: Records, *, name: str | None, fields: Mapping[str, Any]) -> CorpusSource: ...

    def add(self, records: Records, *, refresh: bool = True, name: str | None = None, **fields: Any) -> WriteSummary:
        """Add new documents to the serving index (a record whose id the index has is rejected: use
        ``upsert``). ``records`` and the field options are those of ``ingest``. Visible to new searches
        when this returns (``refresh=False`` leaves that to the next refresh, for bulk speed)."""
        return self._write(records, "append", refresh=refresh, name=name, fields=fields)

    def upsert(self, records: Records, *, refresh: bool = True, name: str | None = None, **fields: Any) -> WriteSummary:
        """Add new documents and replace changed ones; a record whose content hash is unchanged is skipped
        (not encoded) and counted as ``unchanged``. Encodes with the index's own model."""
        return self._write(records, "upsert", refresh=refresh, name=name, fields=fields)

    def delete_documents(
        self, ids: Sequence[str] = (), *, filters: Filter | None = None, refresh: bool = True
    ) -> WriteSummary:
        """Delete documents by id and/or by a filter (the same filters as ``search``)."""
        from hybrid_search.ingest.incremental import delete_documents

        return delete_documents(
            self.backend, self.settings, alias=self.index, ids=list(ids), filters=filters, refresh=refresh
        )

    def compact(self) -> dict[str, int]:
        """Remove deleted and replaced documents for good; return the bytes before and after."""
        compact = getattr(self.backend, "compact", None)
        if compact is None:
            from hybrid_search.config.errors import ConfigError

            raise ConfigError(f"the {self.backend.name} backend has no compaction")
        with self.backend.writer_lock(self.index, force=self.settings.ingest.force_unlock):
            physical = self.backend.serving_build(self.index) or self.index
            return dict(compact(physical))

    def indexes(self) -> list[IndexListing]:
        """Every index on the backend: alias, serving build, count, size, model, last write, previous build."""
        from hybrid_search.app.indexes import list_indexes

        return list_indexes(self.backend, self.settings)

    def drop(self) -> list[str]:
        """Remove this index, its previous build, its checkpoint, rejects, logs and evaluation caches;
        return what was removed."""
        from hybrid_search.app.indexes import drop_index

        try:
            return drop_index(self.backend, self.settings, self.index)
        finally:
            self._forget_index()

    def prune(self, *, dry_run: bool = False) -> PruneReport:
        """Remove orphan builds, stale checkpoints and stale evaluation caches of every index."""
        from hybrid_search.app.indexes import prune

        return prune(self.backend, self.settings, dry_run=dry_run)

    def _write(
        self, records: Records, mode: WriteMode, *, refresh: bool, name: str | None, fields: Mapping[str, Any]
    ) -> WriteSummary:
        from hybrid_search.encoding.encoder import set_cpu_threads
        from hybrid_search.ingest.incremental import run_incremental

        source = self._as_source(records, name=name, fields=fields)
        encoder = self._encoder_for_index()
        previous = set_cpu_threads(0)
        try:
            return run_incremental(
                source,
                self.backend,
                encoder,
                self.settings,
                alias=self.index,
                mode=mode,
                refresh=refresh,
                sparse_encoder=self.sparse_encoder,
            )
        finally:
            set_cpu_threads(previous)
