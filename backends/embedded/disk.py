"""``EmbeddedDisk``: the embedded backend's data directory: ``aliases.json`` (alias -> physical build,
replaced atomically and edited under one lock, parsed again only when the file changed), the physical
indexes it has open, and how a name resolves to one. Nothing is opened until used.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from hybrid_search.backends.base import (
    check_index_name,
)
from hybrid_search.backends.embedded.physical import PhysicalIndex
from hybrid_search.config.errors import (
    ConfigError,
    CorruptIndex,
    IndexNotFound,
)
from hybrid_search.config.files import FileLock, atomic_write_text, describe_holder, read_json_file
from hybrid_search.config.settings import EXACT_BELOW

if TYPE_CHECKING:
    from hybrid_search.config.settings import Settings

__all__ = ["EmbeddedDisk"]


class EmbeddedDisk:
    """A data directory of physical indexes behind aliases (see the module docstring)."""

    name = "embedded"
    build_check_seconds = 0.0  # a stat of aliases.json: cheap enough before every search

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            data_dir=settings.data_dir,
            ef_search=settings.index.hnsw_ef_search,
            flush_seconds=settings.ingest.checkpoint_seconds,
            exact_below=settings.index.exact_below,
        )

    def __init__(
        self,
        *,
        data_dir: str | Path,
        ef_search: int = 100,
        flush_seconds: float = 30.0,
        exact_below: int = EXACT_BELOW,
    ) -> None:
        if ef_search < 1:
            raise ConfigError(f"ef_search must be at least 1, got {ef_search}")
        self.data_dir = Path(data_dir)
        self.ef_search = ef_search
        self.flush_seconds = flush_seconds
        self.exact_below = exact_below
        self._open: dict[str, PhysicalIndex] = {}
        self._opening = threading.Lock()
        self._aliases_cache: tuple[tuple[int, int, int], dict[str, str]] | None = None
        self.alias_reads = 0  # times aliases.json was parsed (it is re-read only when it changed)

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

    def _physical(self, index: str) -> str:
        return self._aliases().get(index, index)

    def _path(self, physical: str) -> Path:
        check_index_name(physical)  # also what aliases.json says, in case someone edited it
        return self.data_dir / "indexes" / physical

    def _get(self, index: str) -> PhysicalIndex:
        physical = self._physical(index)
        found = self._open.get(physical)
        if found is not None:
            return found
        with self._opening:  # two threads' first searches open a build once, not twice
            return self._open_physical(index, physical)

    def _open_physical(self, index: str, physical: str) -> PhysicalIndex:
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
        return {"ef_search": self.ef_search, "flush_seconds": self.flush_seconds, "exact_below": self.exact_below}

    def _all_physical(self) -> set[str]:
        root = self.data_dir / "indexes"
        return {p.name for p in root.iterdir()} if root.exists() else set()

    def close(self) -> None:
        while self._open:
            _, idx = self._open.popitem()
            idx.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
