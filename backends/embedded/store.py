"""``EmbeddedBackend``: the store over ``data_dir``: aliases (``aliases.json``, replaced atomically),
builds, locks, rollback and drop, and the ``Backend`` protocol's calls, each answered by the physical
index the name resolves to (``physical.PhysicalIndex``). It is one process's store, not a server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hybrid_search.backends.base import (
    BulkResult,
    IndexedDocument,
    IndexSpec,
    IndexStats,
    StoredDocument,
    check_index_name,
    checks_names,
    previous_alias,
)
from hybrid_search.backends.embedded.physical import VECTOR_FILE, PhysicalIndex
from hybrid_search.backends.handles import OpensIndexes
from hybrid_search.backends.logsinks import JsonlLogSink
from hybrid_search.config.errors import (
    ConfigError,
    CorruptIndex,
    FusionUnsupported,
    IndexNotFound,
)
from hybrid_search.config.files import FileLock, atomic_write_text, describe_holder, read_json_file
from hybrid_search.config.names import build_pattern
from hybrid_search.config.text import passage_text
from hybrid_search.search.filters import METADATA_FIELD, Filter
from hybrid_search.search.hits import Hit
from hybrid_search.search.request import SearchRequest

if TYPE_CHECKING:
    from hybrid_search.config.settings import Settings

__all__ = ["EmbeddedBackend"]

log = logging.getLogger(__name__)


class EmbeddedBackend(OpensIndexes):
    """The ``Backend`` protocol on tantivy + faiss + SQLite under ``data_dir``. Nothing is opened until used."""

    name = "embedded"
    build_check_seconds = 0.0  # a stat of aliases.json: cheap enough before every search

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddedBackend:
        return cls(
            data_dir=settings.data_dir,
            ef_search=settings.index.hnsw_ef_search,
            flush_seconds=settings.ingest.checkpoint_seconds,
        )

    def __init__(self, *, data_dir: str | Path, ef_search: int = 100, flush_seconds: float = 30.0) -> None:
        if ef_search < 1:
            raise ConfigError(f"ef_search must be at least 1, got {ef_search}")
        self.data_dir = Path(data_dir)
        self.ef_search = ef_search
        self.flush_seconds = flush_seconds
        self._open: dict[str, PhysicalIndex] = {}
        self._aliases_cache: tuple[tuple[int, int, int], dict[str, str]] | None = None
        self.alias_reads = 0  # times aliases.json was parsed (it is re-read only when it changed)

    # --- names and aliases ------------------------------------------------------------------------
    @property
    def _aliases_path(self) -> Path:
        return self.data_dir / "aliases.json"

    def _aliases(self) -> dict[str, str]:
        """alias -> physical, as aliases.json holds it now; parsed again only when the file was replaced
        (every write renames a new file into place, so its inode changes)."""
        try:
            st = os.stat(self._aliases_path)
        except FileNotFoundError:
            return {}
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._aliases_cache is not None and self._aliases_cache[0] == stamp:
            return dict(self._aliases_cache[1])
        fix = "restore it from a backup, or remove it (every alias is then forgotten; the builds stay on disk)"
        data = read_json_file(self._aliases_path, expect=dict, fix=fix)
        bad = [k for k, v in data.items() if not isinstance(v, str)]
        if bad:
            raise ConfigError(f"{self._aliases_path} is damaged (alias {bad[0]!r} names no build): {fix}")
        self.alias_reads += 1
        self._aliases_cache = (stamp, data)
        return dict(data)

    @contextlib.contextmanager
    def _editing_aliases(self) -> Iterator[dict[str, str]]:
        """aliases.json read, changed by the caller and written back under the data dir's alias lock, so
        two processes changing aliases (even of different indexes) never lose each other's update."""
        lock = FileLock(
            self.data_dir / "locks" / ".aliases.lock",  # no index name starts with a dot
            lambda holder: f"aliases.json under {self.data_dir} is being changed by {describe_holder(holder)}",
            wait=30.0,
        )
        with lock.held():
            aliases = self._aliases()
            yield aliases
            atomic_write_text(self._aliases_path, json.dumps(aliases, indent=1, sort_keys=True))

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
    def serving_build(self, alias: str) -> str | None:
        physical = self._aliases().get(alias)
        if physical is not None:
            return physical
        return alias if self.index_exists(alias) else None

    @checks_names
    def orphan_builds(self, alias: str) -> list[str]:
        pattern = build_pattern(alias)
        served = set(self._aliases().values())
        return sorted(p for p in self._all_physical() if pattern.match(p) and p not in served)

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

    def _physical(self, index: str) -> str:
        return self._aliases().get(index, index)

    def _path(self, physical: str) -> Path:
        check_index_name(physical)  # also what aliases.json says, in case someone edited it
        return self.data_dir / "indexes" / physical

    def _get(self, index: str) -> PhysicalIndex:
        physical = self._physical(index)
        if physical not in self._open:
            path = self._path(physical)
            if not (path / "spec.json").exists():
                raise IndexNotFound(
                    f"index {index!r} does not exist under {self.data_dir}: run "
                    f"`hybrid-search ingest SOURCE --index {index}` first"
                )
            try:
                self._open[physical] = PhysicalIndex(path, PhysicalIndex.read_spec(path), **self._index_kwargs)
            except CorruptIndex as exc:
                raise CorruptIndex(
                    f"index {index!r}: {exc}. Run `hybrid-search repair --index {index}` to rebuild it from the "
                    "stored vectors"
                ) from None
        return self._open[physical]

    @cached_property
    def _index_kwargs(self) -> dict[str, Any]:
        return {"ef_search": self.ef_search, "flush_seconds": self.flush_seconds}

    # --- protocol ---------------------------------------------------------------------------------
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
    def index_exists(self, index: str) -> bool:
        return (self._path(self._physical(index)) / "spec.json").exists()

    @checks_names
    def index_spec(self, index: str) -> IndexSpec | None:
        if not self.index_exists(index):
            return None
        return PhysicalIndex.read_spec(self._path(self._physical(index)))

    @checks_names
    def begin_build(self, alias: str, spec: IndexSpec, *, resume_from: str | None = None) -> str:
        if resume_from is not None:
            if not self.index_exists(resume_from):
                raise IndexNotFound(f"cannot resume: physical index {resume_from!r} is gone; ingest without --resume")
            self.ensure_index(resume_from, spec)
            return resume_from
        physical = f"{alias}-{datetime.now(UTC).strftime('%Y%m%d%H%M%S%f')}"
        self.ensure_index(physical, spec)
        return physical

    @checks_names
    def finish_build(self, alias: str, physical: str) -> None:
        self._get(physical).flush()
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
    def search_bm25(self, index: str, query: str, k: int, filters: Filter | None = None) -> list[Hit]:
        return self._get(index).bm25(query, k, filters)

    @checks_names
    def search_knn(
        self, index: str, vector: np.ndarray, k: int, num_candidates: int, filters: Filter | None = None
    ) -> list[Hit]:
        return self._get(index).knn(vector, k, num_candidates, filters)

    def fusion_refusal(self, request: SearchRequest) -> str | None:
        return "the embedded backend fuses in the client"

    def search_fused(self, index: str, request: SearchRequest) -> list[Hit]:
        raise FusionUnsupported("the embedded backend fuses in the client")

    @checks_names
    def count(self, index: str) -> int:
        return self._get(index).count()

    @checks_names
    def refresh(self, index: str) -> None:
        self._get(index).flush()

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
            elif self.index_exists(index):
                for name in [a for a, p in aliases.items() if p == index]:
                    del aliases[name]
                dropped = [index]
        for physical in dropped:
            self._drop_physical(physical)

    @checks_names
    def stats(self, index: str) -> IndexStats:
        idx = self._get(index)
        spec = idx.spec
        vector = {
            "type": "faiss IndexHNSWFlat",
            "dims": spec.dims,
            "metric": "inner_product",
            "similarity": spec.similarity,
            "m": spec.hnsw_m,
            "ef_construction": spec.hnsw_ef_construction,
            "ef_search": self.ef_search,
            "vectors_in_graph": idx.vectors.ntotal,
            "tombstones": idx._dead_count(),
        }
        fields = {
            "title": f"text (tantivy, {spec.analyzer})",
            "text": f"text (tantivy, {spec.analyzer})",
            "vector": f"float32[{spec.dims}] (SQLite + faiss HNSW)",
            METADATA_FIELD: "json (tantivy raw terms)",
        }
        return IndexStats(
            alias=index if index in self._aliases() else "",
            physical=idx.path.name,
            count=idx.count(),
            spec=spec,
            store_bytes=idx.store_bytes(),
            vector=vector,
            fields=fields,
            metadata_fields=idx.metadata_types(),
        )

    def log_sink(self) -> JsonlLogSink:
        """Query and ingest logs as JSONL files under ``data_dir/logs`` (each with its mapping beside it)."""
        return JsonlLogSink(self.data_dir / "logs")

    @checks_names
    def iter_vectors(self, index: str, batch: int = 10_000) -> Iterable[tuple[list[str], np.ndarray]]:
        """Stored vectors straight from disk, for corpus-wide jobs such as duplicate mining."""
        return self._get(index).iter_vectors(batch)

    @checks_names
    def iter_documents(self, index: str, batch: int = 1_000) -> Iterable[list[StoredDocument]]:
        """Stored documents straight from disk, a batch at a time (re-encoding, training, corpus statistics)."""
        return self._get(index).iter_documents(batch)

    @checks_names
    def knn_batch(self, index: str, vectors: np.ndarray, k: int, num_candidates: int) -> list[list[tuple[str, float]]]:
        """Neighbours of many vectors at once over the HNSW graph (no per-query round trips)."""
        return self._get(index).knn_batch(vectors, k, num_candidates)

    @checks_names
    def get_texts(self, index: str, doc_ids: Sequence[str]) -> dict[str, str]:
        """``title text`` of each id found."""
        rows = self._get(index)._rows_by("doc_id", list(doc_ids))
        return {doc_id: passage_text(row[2], row[3]) for doc_id, row in rows.items()}

    def _all_physical(self) -> set[str]:
        root = self.data_dir / "indexes"
        return {p.name for p in root.iterdir()} if root.exists() else set()

    def _drop_physical(self, physical: str) -> None:
        idx = self._open.pop(physical, None)
        if idx is not None:
            idx.db.close()
            idx._writer = None
        shutil.rmtree(self._path(physical), ignore_errors=True)

    def close(self) -> None:
        while self._open:
            _, idx = self._open.popitem()
            idx.close()

    def __enter__(self) -> EmbeddedBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
