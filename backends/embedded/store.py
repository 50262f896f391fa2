"""``EmbeddedBackend``: builds, locks, rollback, repair, writes and drop over the data directory
(``disk``), with the reads of ``reads``; each call is answered by the physical index the name resolves to
(``physical.PhysicalIndex``). It is one process's store, not a server.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from hybrid_search.backends.base import (
    BulkResult,
    IndexedDocument,
    IndexSpec,
    check_index_name,
    checks_names,
    previous_alias,
)
from hybrid_search.backends.embedded.physical import VECTOR_FILE, PhysicalIndex
from hybrid_search.backends.embedded.reads import EmbeddedReads
from hybrid_search.backends.handles import OpensIndexes
from hybrid_search.backends.logsinks import JsonlLogSink
from hybrid_search.config.errors import (
    ConfigError,
    IndexNotFound,
)
from hybrid_search.config.files import FileLock, describe_holder
from hybrid_search.search.filters import Filter

__all__ = ["EmbeddedBackend"]

log = logging.getLogger(__name__)


class EmbeddedBackend(EmbeddedReads, OpensIndexes):
    """The ``Backend`` protocol on tantivy + faiss + SQLite under ``data_dir``. Nothing is opened until used."""

    def writer_lock(self, alias: str, *, force: bool = False) -> contextlib.AbstractContextManager[None]:
        """An OS lock on ``locks/<alias>.lock``: the kernel drops it when its process dies, so it is never
        stale and ``force`` has nothing to break."""
        check_index_name(alias)

        def refusal(holder: dict[str, Any] | None) -> str:
            return (
                f"index {alias!r} is being written by {describe_holder(holder)}: wait for it to finish "
                "(the lock is released when that process exits, however it exits)"
            )

        return FileLock(self.data_dir / "locks" / f"{alias}.lock", refusal).held()

    @checks_names
    def repair(self, index: str) -> int:
        """Rebuild ``index``'s HNSW graph from its stored vectors (after ``CorruptIndex``)."""
        physical = self._physical(index)
        path = self._path(physical)
        if not (path / "spec.json").exists():
            raise IndexNotFound(f"index {index!r} does not exist under {self.data_dir}")
        stale = self._open.pop(physical, None)
        if stale is not None:
            stale.db.close()
        for p in path.iterdir():
            if VECTOR_FILE.match(p.name):
                p.unlink()  # the damaged graph: SQLite's vectors are the source of truth
        idx = PhysicalIndex(path, PhysicalIndex.read_spec(path), **self._index_kwargs)
        self._open[physical] = idx
        return idx.repair()

    @checks_names
    def ensure_index(self, index: str, spec: IndexSpec) -> None:
        existing = self.index_spec(index)
        if existing is None:
            physical = self._physical(index)
            self._open[physical] = PhysicalIndex.create(self._path(physical), spec, **self._index_kwargs)
        elif existing.dims != spec.dims:
            raise ConfigError(
                f"index {index!r} holds {existing.dims}-dim vectors but the model gives "
                f"{spec.dims}: use another --index or the model it was built with"
            )

    @checks_names
    def begin_build(self, alias: str, spec: IndexSpec, *, resume_from: str | None = None) -> str:
        if resume_from is not None:
            if not self.index_exists(resume_from):
                raise IndexNotFound(f"cannot resume: physical index {resume_from!r} is gone; ingest without --resume")
            self.ensure_index(resume_from, spec)
            self._get(resume_from).keep_writer = True
            return resume_from
        physical = f"{alias}-{datetime.now(UTC).strftime('%Y%m%d%H%M%S%f')}"
        self.ensure_index(physical, spec)
        self._get(physical).keep_writer = True  # nobody else writes a build: its text writer stays open
        return physical

    @checks_names
    def finish_build(self, alias: str, physical: str) -> None:
        built = self._get(physical)
        built.flush()
        built.keep_writer = False  # it serves now: other processes may write it next
        built.release_writer()
        keep = previous_alias(alias)
        with self._editing_aliases() as aliases:
            current, retired = aliases.get(alias), aliases.get(keep)
            if alias in self._all_physical() and alias != physical and alias not in aliases.values():
                self._drop_physical(alias)  # an older plain index of that name gives way to the alias
            aliases[alias] = physical
            if current and current != physical:
                aliases[keep] = current
        # one atomic file replace was the swap; what is left of older builds goes now (a kill before this
        # leaves orphans, which the next build of this alias removes here)
        if retired and retired not in aliases.values():
            self._drop_physical(retired)
        for orphan in self.orphan_builds(alias):
            log.info("removing orphan build %s of %s", orphan, alias)
            self._drop_physical(orphan)

    @checks_names
    def rollback(self, alias: str) -> tuple[str, str]:
        keep = previous_alias(alias)
        with self._editing_aliases() as aliases:
            if alias not in aliases or keep not in aliases:
                raise IndexNotFound(
                    f"no previous build of {alias!r} to roll back to under {self.data_dir}: one is "
                    "kept from the second successful ingest on"
                )
            aliases[alias], aliases[keep] = aliases[keep], aliases[alias]
        return aliases[alias], aliases[keep]

    @checks_names
    def upsert(self, index: str, docs: Sequence[IndexedDocument]) -> BulkResult:
        return self._get(index).upsert(docs)

    @checks_names
    def delete(self, index: str, doc_ids: Sequence[str]) -> int:
        return self._get(index).delete(doc_ids)

    @checks_names
    def refresh(self, index: str) -> None:
        idx = self._get(index)
        idx.flush()
        if not idx.keep_writer:
            idx.release_writer()

    @checks_names
    def content_hashes(self, index: str, doc_ids: Sequence[str]) -> dict[str, str]:
        return self._get(index).content_hashes(doc_ids)

    @checks_names
    def mark_written(self, index: str) -> None:
        """Nothing to do: every write bumps the build's own ``write_gen``."""

    @checks_names
    def writes_hold_gil(self, index: str, incoming: int | None) -> bool:
        """True while the index stays exact (SQLite, tantivy and the flat index are short calls between
        Python); a write that builds or grows the HNSW graph spends its time in faiss, off the GIL. Counted in
        vectors, as ``_grow_graph`` counts them (documents of several passages add more than one each)."""
        idx = self._get(index)
        return incoming is not None and not idx.is_graph and int(idx.vectors.ntotal) + incoming < idx.exact_below

    @checks_names
    def matching_ids(self, index: str, filters: Filter) -> list[str]:
        return self._get(index)._filter_doc_ids(filters)

    @checks_names
    def compact(self, index: str) -> dict[str, int]:
        """Remove deleted and replaced documents for good (``PhysicalIndex.compact``)."""
        return self._get(index).compact()

    @checks_names
    def drop_index(self, index: str) -> None:
        dropped: list[str] = []
        with self._editing_aliases() as aliases:
            if index in aliases:
                names = [name for name in (index, previous_alias(index)) if name in aliases]
                dropped = [aliases[name] for name in names]
                for physical in dropped:
                    check_index_name(physical)  # before anything changes, even if aliases.json was edited by hand
                for name in names:
                    del aliases[name]
            elif self.index_exists(index) or (self.data_dir / "indexes" / index).is_dir():
                # (a build a kill left before its spec was written has no spec.json: removed all the same)
                for name in [a for a, p in aliases.items() if p == index]:
                    del aliases[name]
                dropped = [index]
        for physical in dropped:
            self._drop_physical(physical)

    def log_sink(self) -> JsonlLogSink:
        """Query and ingest logs as JSONL files under ``data_dir/logs`` (each with its mapping beside it)."""
        return JsonlLogSink(self.data_dir / "logs")

    def _drop_physical(self, physical: str) -> None:
        idx = self._open.pop(physical, None)
        if idx is not None:
            idx.db.close()
            idx._writer = None
        shutil.rmtree(self._path(physical), ignore_errors=True)
