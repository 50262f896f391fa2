"""Index management over a whole backend: list every index (``indexes``), remove one with everything the
application keeps for it (``drop``), and remove what no index needs any more (``prune``).

What belongs to an index ``X``: its serving build and ``X-previous``, its builds left by a kill (orphans),
``checkpoints/X.json``, ``rejects/X*.jsonl``, the logs ``X-queries`` / ``X-ingest`` and
``eval-cache/X``. ``prune`` never removes a build that an alias serves, that a checkpoint names (an
interrupted ingest ``--resume`` can finish) or whose index is being written now.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybrid_search.config.errors import IndexLocked, IndexNotFound
from hybrid_search.config.names import build_alias, previous_alias, reserved_reason

if TYPE_CHECKING:
    from hybrid_search.backends.base import Backend
    from hybrid_search.config.settings import Settings

__all__ = ["IndexListing", "PruneReport", "drop_index", "list_indexes", "prune"]


@dataclass(frozen=True, slots=True)
class IndexListing:
    """One index as ``hybrid-search indexes`` lists it."""

    name: str
    physical: str
    count: int
    store_bytes: int | None
    model: str
    last_write: float | None
    previous: str = ""
    deleted_documents: int | None = None
    orphans: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__} | {"orphans": list(self.orphans)}


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What ``prune`` removed (or, with ``dry_run``, would remove), what it kept and why, and the bytes."""

    removed: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    bytes_freed: int = 0
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "removed": list(self.removed),
            "kept": list(self.kept),
            "bytes_freed": self.bytes_freed,
            "dry_run": self.dry_run,
        }


def list_indexes(backend: Backend, settings: Settings) -> list[IndexListing]:
    """Every alias (and plain index) with its serving build, count, size, model, last write and previous build."""
    catalog = backend.catalog()
    names: dict[str, str] = {}  # listed name -> the physical index it serves
    for physical, aliases in catalog.items():
        for alias in aliases:
            if reserved_reason(alias) is None:
                names[alias] = physical
        if not aliases and build_alias(physical) is None:
            names[physical] = physical  # a plain index
    out = []
    for name, physical in sorted(names.items()):
        stats = backend.stats(physical)
        previous = next((p for p, a in catalog.items() if previous_alias(name) in a), "")
        out.append(
            IndexListing(
                name=name,
                physical=physical,
                count=stats.count,
                store_bytes=stats.store_bytes,
                model=stats.spec.model if stats.spec else "",
                last_write=stats.last_write,
                previous=previous,
                deleted_documents=stats.deleted_documents,
                orphans=tuple(backend.orphan_builds(name)) if name != physical else (),
            )
        )
    return out


def _current_cache(backend: Backend, settings: Settings, index: str) -> Path | None:
    """The evaluation cache folder of what ``index`` serves now (``None``: it serves nothing)."""
    from hybrid_search.app.evaluate import cache_dir_for

    try:
        if backend.serving_build(index) is None:
            return None
        return cache_dir_for(settings.data_dir, index, backend.stats(index))
    except Exception:  # a name no backend accepts (edited by hand) or a damaged index: nothing to keep
        return None


def _size(backend: Backend, physical: str) -> int:
    with contextlib.suppress(Exception):  # a damaged orphan is removed all the same
        return int(backend.stats(physical).store_bytes or 0)
    return 0


def _tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _local_files(settings: Settings, alias: str) -> list[Path]:
    """What the application keeps for ``alias`` on local disk besides its builds."""
    data = Path(settings.data_dir)
    rejects = data / "rejects"
    found = [data / "checkpoints" / f"{alias}.json", data / "eval-cache" / alias]
    if rejects.exists():
        found += [p for p in rejects.iterdir() if p.name in (f"{alias}.jsonl", f"{alias}-writes.jsonl")]
    return [p for p in found if p.exists()]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def drop_index(backend: Backend, settings: Settings, alias: str) -> list[str]:
    """Remove ``alias``: its builds (serving, previous, orphans), checkpoint, rejects, logs and eval cache.
    Refused while another process writes it. Returns what was removed."""
    removed: list[str] = []
    with backend.writer_lock(alias, force=settings.ingest.force_unlock):
        existed = backend.index_exists(alias)
        for orphan in backend.orphan_builds(alias):
            backend.drop_index(orphan)
            removed.append(f"build {orphan} (orphan)")
        if existed:
            serving = backend.serving_build(alias)
            previous = backend.serving_build(previous_alias(alias)) if serving != alias else None
            backend.drop_index(alias)
            removed += [f"build {p}" for p in (serving, previous) if p]
        sink = backend.log_sink()
        for log in (f"{alias}-queries", f"{alias}-ingest"):
            if sink.drop(log):
                removed.append(f"log {log}")
        for path in _local_files(settings, alias):
            _remove(path)
            removed.append(str(path))
    if not removed:
        raise IndexNotFound(f"index {alias!r} does not exist on the {backend.name} backend: nothing to drop")
    return removed


def prune(backend: Backend, settings: Settings, *, dry_run: bool = False) -> PruneReport:
    """Remove orphan builds, checkpoints whose build is gone and evaluation caches of other builds; see the
    module docstring for what is always kept."""
    from hybrid_search.ingest.pipeline import Checkpoint

    data = Path(settings.data_dir)
    catalog = backend.catalog()
    removed: list[str] = []
    kept: list[str] = []
    freed = 0
    checkpoints: dict[str, str] = {}  # alias -> the build its checkpoint names
    for path in sorted((data / "checkpoints").glob("*.json")) if (data / "checkpoints").exists() else []:
        try:
            ckpt = Checkpoint.load(path)
        except Exception:
            ckpt = None
        if ckpt is None or ckpt.physical not in catalog:
            freed += _tree_bytes(path)
            removed.append(f"{path} (its build is gone)" if ckpt else f"{path} (damaged)")
            if not dry_run:
                path.unlink(missing_ok=True)
        else:
            checkpoints[ckpt.alias] = ckpt.physical
    for physical, aliases in catalog.items():
        alias = build_alias(physical)
        if aliases or alias is None:
            continue
        if checkpoints.get(alias) == physical:
            kept.append(f"build {physical}: an interrupted ingest of {alias!r} (finish it with --resume)")
            continue
        try:
            with backend.writer_lock(alias):
                size = _size(backend, physical)
                if not dry_run:
                    backend.drop_index(physical)
        except IndexLocked:
            kept.append(f"build {physical}: {alias!r} is being written now")
            continue
        freed += size
        removed.append(f"build {physical} (orphan of {alias!r})")
    cache = data / "eval-cache"
    for folder in sorted(p for p in cache.iterdir() if p.is_dir()) if cache.exists() else []:
        current = _current_cache(backend, settings, folder.name)
        for run in sorted(folder.iterdir()):
            if run != current:
                freed += _tree_bytes(run)
                removed.append(f"{run} (results of an index state no longer served)")
                if not dry_run:
                    _remove(run)
    return PruneReport(removed=tuple(removed), kept=tuple(kept), bytes_freed=freed, dry_run=dry_run)
