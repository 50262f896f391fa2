"""The ``Backend`` protocol every engine implements (embedded, Elasticsearch, OpenSearch), and its data types.

A backend stores documents with a dense vector beside their text, answers BM25 and kNN queries, and builds
indexes behind an alias so that a rebuild is swapped in atomically. It never encodes text, fuses or reranks:
that is the searcher's job, so every engine gets the same pipeline. Construction never does I/O.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, cast, runtime_checkable

from hybrid_search.config.errors import ConfigError, FailedItem
from hybrid_search.config.names import check_index_name, previous_alias
from hybrid_search.config.text import Analyzer
from hybrid_search.search.filters import Filter
from hybrid_search.search.interfaces import Retriever

if TYPE_CHECKING:
    import numpy as np

    from hybrid_search.backends.handles import BuildHandle, IndexHandle
    from hybrid_search.backends.logsinks import LogSink

__all__ = [
    "Backend",
    "IndexBuilder",
    "Inspectable",
    "LogStore",
    "BulkResult",
    "IndexSpec",
    "IndexedDocument",
    "PassageVector",
    "IndexStats",
    "StoredDocument",
    "check_index_name",
    "CheckedName",
    "checks_names",
    "previous_alias",
]

Similarity = Literal["dot_product", "cosine"]

_NAME_PARAMS = ("index", "alias", "physical", "resume_from", "name")

F = TypeVar("F", bound=Callable[..., Any])


class CheckedName(str):
    """An index name ``check_index_name`` has accepted: what an ``IndexHandle`` holds and passes, so the
    backend methods it calls do not check it again."""

    __slots__ = ()

    def __new__(cls, name: str) -> CheckedName:
        if isinstance(name, CheckedName):
            return name
        check_index_name(name)
        return super().__new__(cls, name)


def checks_names(method: F) -> F:
    """Check every index or alias name a backend method is given (parameters named ``index``, ``alias``,
    ``physical``, ``resume_from`` or ``name``) before it runs, so no unchecked name reaches a file system
    path or a request. Every public backend and log-sink method that takes a name carries this."""
    signature = inspect.signature(method)
    checked = [p for p in _NAME_PARAMS if p in signature.parameters]

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if len(args) > 1 and isinstance(args[1], CheckedName) and len(checked) == 1 and not kwargs.get(checked[0]):
            return method(*args, **kwargs)  # a handle's name: checked once, when the handle was opened
        bound = signature.bind(*args, **kwargs)
        for param in checked:
            value = bound.arguments.get(param)
            if value is not None and not isinstance(value, CheckedName):
                check_index_name(value)
        return method(*args, **kwargs)

    return cast(F, wrapper)


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """What an index must hold: the vector field's size and similarity, and how text is analysed."""

    dims: int
    similarity: Similarity = "dot_product"  # dot_product for L2-normalised models, cosine otherwise
    analyzer: Analyzer = "standard"
    model: str = ""
    hnsw_m: int = 16
    hnsw_ef_construction: int = 100
    # the metadata fields records were ingested with (what filters may name); None for an index built
    # before this was recorded, whose filters are not checked
    metadata_fields: tuple[str, ...] | None = None
    sparse_model: str = ""  # the learned-sparse model its sparse vectors come from ("": no sparse field)
    # documents hold passages (``ingest.chunking`` other than none), each with its vector: kNN scores a
    # document by its best passage and returns that passage; an index without them holds one vector each
    passages: bool = False
    chunking: str = ""  # the chunking mode the passages were made with ("" before chunking existed)

    def __post_init__(self) -> None:
        if self.dims <= 0:
            raise ConfigError(f"vector dimension must be positive, got {self.dims}")

    def to_dict(self) -> dict[str, Any]:
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        if self.metadata_fields is not None:
            out["metadata_fields"] = list(self.metadata_fields)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IndexSpec:
        """The spec as ``to_dict`` stored it (unknown keys from other versions are ignored)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if known.get("metadata_fields") is not None:
            known["metadata_fields"] = tuple(known["metadata_fields"])
        return cls(**known)


@dataclass(frozen=True, slots=True)
class PassageVector:
    """One passage of a long document: its character span in the document's text and its dense vector."""

    start: int
    end: int
    vector: np.ndarray


@dataclass(frozen=True, slots=True)
class IndexedDocument:
    """A document ready to store: its text fields and its dense vector. A document chunked into several
    passages carries them in ``passages`` (``vector`` is then the first passage's); a document of one passage
    carries none."""

    doc_id: str
    title: str
    text: str
    vector: np.ndarray
    metadata: Mapping[str, Any] = field(default_factory=dict)
    sparse: Mapping[str, float] | None = None  # token -> weight, when the index has a sparse field
    content_hash: str = ""  # of the record's content (``ingest.hashing``): an upsert skips an unchanged one
    passages: tuple[PassageVector, ...] = ()


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """A document as an index holds it, without its vector: what re-encoding and corpus statistics read."""

    doc_id: str
    title: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BulkResult:
    """Outcome of one upsert: ids stored, and each refused document with its reason."""

    stored: tuple[str, ...] = ()
    failed: tuple[FailedItem, ...] = ()


@dataclass(frozen=True, slots=True)
class IndexStats:
    """What ``inspect`` shows about an index. ``alias`` is empty when the name is a plain index."""

    alias: str
    physical: str
    count: int
    spec: IndexSpec | None
    store_bytes: int | None = None
    vector: Mapping[str, Any] = field(default_factory=dict)  # the vector field's type, similarity, HNSW options
    fields: Mapping[str, str] = field(default_factory=dict)  # field path -> type, as the engine maps it
    metadata_fields: Mapping[str, str] = field(default_factory=dict)  # filterable field -> its type
    deleted_documents: int | None = None  # deleted or replaced, not yet compacted away (None: not known)
    reclaimable_bytes: int | None = None  # about what ``compact`` would free
    last_write: float | None = None  # when a document was last written (Unix time; None: not known)
    write_generation: str = ""  # changes with every write into the build (what caches of results key on)


@runtime_checkable
class IndexBuilder(Protocol):
    """Creating, loading and swapping indexes: what ingest needs. ``index`` may name an alias."""

    name: str

    def ensure_index(self, index: str, spec: IndexSpec) -> None:
        """Create the index if missing; raise ``ConfigError`` if it exists with another vector size."""

    def index_exists(self, index: str) -> bool: ...

    def index_spec(self, index: str) -> IndexSpec | None:
        """The spec the index was created with, or ``None`` if it does not exist."""

    def begin_build(self, alias: str, spec: IndexSpec, *, resume_from: str | None = None) -> str:
        """Create (or, with ``resume_from``, reopen) a physical index for a bulk load; return its name."""

    def finish_build(self, alias: str, physical: str) -> None:
        """Make ``physical`` durable and searchable and point ``alias`` at it atomically. The build it
        replaces stays as ``previous_alias(alias)``; the one that alias held before is dropped."""

    def rollback(self, alias: str) -> tuple[str, str]:
        """Swap ``alias`` and its previous build atomically; return (now serving, now previous).

        Raises ``IndexNotFound`` when there is no previous build."""

    def upsert(self, index: str, docs: Sequence[IndexedDocument]) -> BulkResult:
        """Store documents; an existing id is replaced, never duplicated."""

    def delete(self, index: str, doc_ids: Sequence[str]) -> int:
        """Remove documents; return how many existed."""

    def content_hashes(self, index: str, doc_ids: Sequence[str]) -> dict[str, str]:
        """doc id -> the content hash each stored id was written with ("" if written without one); ids not
        in the index are left out. What an upsert asks to skip unchanged records."""

    def mark_written(self, index: str) -> None:
        """Record that an incremental write changed ``index`` (its ``IndexStats.write_generation`` moves on)."""

    def writes_hold_gil(self, index: str, incoming: int | None) -> bool:
        """Whether storing ``incoming`` more documents (``None``: unknown) in ``index`` is Python work from
        start to end. Then an ingest with nothing to encode reads and writes on one thread (a second one would
        only trade the GIL); a write that waits elsewhere (a bulk request, HNSW insertions) overlaps reading."""

    def matching_ids(self, index: str, filters: Filter) -> list[str]:
        """The ids of every document ``filters`` allows (what a delete by filter removes)."""

    def count(self, index: str) -> int: ...

    def refresh(self, index: str) -> None:
        """Make everything upserted so far visible to searches and durable."""

    def drop_index(self, index: str) -> None:
        """Delete the index; for an alias, its physical index and its previous build."""

    def writer_lock(self, alias: str, *, force: bool = False) -> AbstractContextManager[None]:
        """Hold ``alias``'s one-writer lock for the duration (builds, rollback, drop); raise ``IndexLocked``
        naming the holder when another process has it. ``force`` first breaks a lock whose holder is gone."""

    def serving_build(self, alias: str) -> str | None:
        """The physical build ``alias`` serves now (the name itself for a plain index; ``None`` if missing).
        Cheap enough to ask before every search: a client notices a rebuild by it."""

    def catalog(self) -> dict[str, tuple[str, ...]]:
        """Every corpus index on the backend (builds and plain indexes, not logs or locks) -> the aliases
        that point at it (empty for an orphan or a plain index)."""

    def orphan_builds(self, alias: str) -> list[str]:
        """Physical builds of ``alias`` that no alias serves and no unfinished ingest owns (left by a kill
        between a swap and its clean-up); the next successful build removes them."""


@runtime_checkable
class LogStore(Protocol):
    """Where the application's query and ingest logs live (``hybrid_search.app.logs``)."""

    name: str

    def log_sink(self) -> LogSink: ...


@runtime_checkable
class Inspectable(Protocol):
    """What ``inspect`` reads about an index."""

    def stats(self, index: str) -> IndexStats: ...

    def count(self, index: str) -> int: ...

    def get_texts(self, index: str, doc_ids: Sequence[str]) -> dict[str, str]:
        """``title text`` of each id found (ids not in the index are left out)."""

    def iter_documents(self, index: str, batch: int = ...) -> Iterable[list[StoredDocument]]:
        """Every stored document, streamed a batch at a time (no vectors), for re-encoding and training."""

    def iter_vectors(self, index: str, batch: int = ...) -> Iterable[tuple[list[str], np.ndarray]]:
        """Every stored vector with its id, a batch at a time (duplicate mining)."""

    def knn_batch(self, index: str, vectors: np.ndarray, k: int, num_candidates: int) -> list[list[tuple[str, float]]]:
        """Neighbours of many vectors at once, as ``(doc_id, similarity)`` runs."""


@runtime_checkable
class Backend(Retriever, IndexBuilder, LogStore, Inspectable, Protocol):
    """A whole storage engine: every small protocol above, plus ``close`` and use as a context manager.

    Callers type against the small protocol they need; ``hybrid_search.backends.open_backend`` returns this."""

    build_check_seconds: float  # how often a client may ask ``serving_build`` (0: before every search)

    def open_index(self, name: str) -> IndexHandle:
        """A handle on index (or alias) ``name``, checked once (``backends.handles``)."""

    def open_build(self, physical: str) -> BuildHandle:
        """A handle for writing physical build ``physical``."""

    def close(self) -> None: ...

    def __enter__(self) -> Backend: ...

    def __exit__(self, *exc: object) -> None: ...
