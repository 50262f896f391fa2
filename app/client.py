"""``HybridSearch``: the one object a Python user (and the CLI) works with.

It owns the backend, the lazily loaded bi-encoder and cross-encoder, and the query log, for one index::

    with HybridSearch(index="nq") as hs:                  # embedded backend under ./.hybrid-search
        hs.ingest("corpus.jsonl")
        result = hs.search("who wrote hamlet", mode="hybrid+rerank", top_k=5, filters={"lang": "en"})

Construction validates the settings and does no I/O; the backend connects and each model loads on first
use (``warm_up`` loads them now). One instance may be shared by several threads: components are created
once under a lock, and every search uses only thread-safe parts. ``close`` releases models, the query log
and connections.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

from hybrid_search.app.writes import IndexWrites
from hybrid_search.backends import open_backend
from hybrid_search.backends.base import Backend, IndexSpec, IndexStats
from hybrid_search.config.errors import ConfigError, IndexNotFound, QueryError
from hybrid_search.config.settings import Settings, load_settings
from hybrid_search.search.filters import Filter, check_value_types
from hybrid_search.search.hits import SearchResult
from hybrid_search.search.request import Preset, SearchRequest, build_request
from hybrid_search.search.searcher import RetrievalPipeline

if TYPE_CHECKING:
    from hybrid_search.app.evaluate import EvalOutputs, EvalReport
    from hybrid_search.app.inspection import Inspection
    from hybrid_search.app.logs import QueryLog
    from hybrid_search.encoding.encoder import Encoder
    from hybrid_search.encoding.sparse import SparseEncoder
    from hybrid_search.ingest.pipeline import IngestSummary
    from hybrid_search.ingest.sources import CorpusSource, FieldMap
    from hybrid_search.rerank.cross_encoder import CrossEncoderReranker

__all__ = ["DEFAULT_MODES", "HybridSearch"]

DEFAULT_MODES = ("bm25", "knn", "hybrid", "hybrid+rerank")


class HybridSearch(IndexWrites):
    """Ingest, search, evaluate and manage one index on one backend (incremental writes and index
    management: ``app.writes``). See the module docstring."""

    def __init__(
        self,
        index: str | None = None,
        *,
        backend: str | None = None,
        url: str | Sequence[str] | None = None,
        data_dir: str | Path | None = None,
        config: str | Path | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        """``index`` (default ``corpus``), ``backend`` (``embedded``, ``elasticsearch`` or ``opensearch``),
        ``url`` of a cluster, ``data_dir`` of the embedded backend, a settings file, and nested
        ``overrides`` (e.g. ``{"search": {"rrf_k": 20}}``), over defaults < file < environment."""
        urls = ",".join(url) if url is not None and not isinstance(url, str) else url
        given: dict[str, Any] = {
            "data_dir": str(data_dir) if data_dir is not None else None,
            "backend": {"kind": backend, "urls": urls},
            "index": {"name": index},
        }
        settings = load_settings(config, _merge(given, overrides or {}))
        self._init(settings)

    @classmethod
    def from_settings(cls, settings: Settings, *, index: str | None = None) -> HybridSearch:
        """A client over already loaded settings (``load_settings(...)``); ``index`` overrides theirs."""
        self = cls.__new__(cls)
        if index is not None:
            settings = settings.model_copy(update={"index": settings.index.model_copy(update={"name": index})})
        self._init(settings)
        return self

    def _init(self, settings: Settings) -> None:
        self.settings = settings
        self.index = settings.index.name
        self._lock = threading.RLock()
        self._backend: Backend | None = None
        self._encoder: Encoder | None = None
        self._query_encoder: Encoder | None = None
        self._reranker: CrossEncoderReranker | None = None
        self._sparse_encoder: SparseEncoder | None = None
        self._pipeline: RetrievalPipeline | None = None
        self._query_log: QueryLog | None = None
        self._spec: IndexSpec | None = None  # the followed build's spec (models, fields), read once per build
        self._field_types: dict[str, str] | None = None  # metadata field -> type, read with the spec
        # the physical build this client's searcher and query model belong to: searches go to it by name, so
        # a rebuild by another process can never be searched with this client's (maybe other) model
        self._serving: str | None = None
        self._build_checked = 0.0
        self._closed = False

    # --- components, each created once on first use -------------------------------------------
    @property
    def backend(self) -> Backend:
        with self._lock:
            self._check_open()
            if self._backend is None:
                self._backend = open_backend(self.settings)
            return self._backend

    @property
    def encoder(self) -> Encoder:
        with self._lock:
            self._check_open()
            if self._encoder is None:
                from hybrid_search.encoding.encoder import Encoder

                self._encoder = Encoder(settings=self.settings.models)
            return self._encoder

    @property
    def query_encoder(self) -> Encoder:
        """The encoder for queries against this index: the model the index was built with. A model set in
        the settings that differs from it is an error (its vectors would not be comparable); with none set,
        the index's own model is used."""
        if self._serving is None:
            self._follow_build()
        with self._lock:
            if self._query_encoder is None:
                self._query_encoder = self._encoder_for_index()
            return self._query_encoder

    def _serving_spec(self) -> IndexSpec | None:
        """The spec of the build this client follows, read once per build (``_forget_index`` drops it);
        ``None`` for a missing index, asked again next time."""
        if self._spec is None:
            self._spec = self.backend.index_spec(self._serving or self.index)
        return self._spec

    def _encoder_for_index(self) -> Encoder:
        from hybrid_search.encoding.encoder import Encoder
        from hybrid_search.encoding.models import model_identity

        spec = self._serving_spec()
        configured = self.settings.models.bi_encoder
        if spec is None or not spec.model or model_identity(configured) == spec.model:
            return self.encoder
        if "bi_encoder" in self.settings.models.model_fields_set:
            raise ConfigError(
                f"index {self.index!r} holds vectors from {spec.model}, but queries would be encoded with "
                f"{configured}: search with --model {spec.model}, or re-encode the index first with "
                f"hybrid-search reindex --index {self.index} --model {configured}"
            )
        return Encoder(spec.model, settings=self.settings.models)

    @property
    def sparse_encoder(self) -> SparseEncoder | None:
        """The learned-sparse encoder for queries: the model the serving build's sparse vectors come from
        (``None`` when the index has no sparse field)."""
        if self._serving is None:
            self._follow_build()
        with self._lock:
            if self._sparse_encoder is None:
                spec = self._serving_spec()
                if spec is None or not spec.sparse_model:
                    return None
                from hybrid_search.encoding.sparse import SparseEncoder

                self._sparse_encoder = SparseEncoder(spec.sparse_model, settings=self.settings.models)
            return self._sparse_encoder

    @property
    def reranker(self) -> CrossEncoderReranker:
        with self._lock:
            self._check_open()
            if self._reranker is None:
                from hybrid_search.rerank.cross_encoder import CrossEncoderReranker

                self._reranker = CrossEncoderReranker(settings=self.settings.models)
            return self._reranker

    @property
    def pipeline(self) -> RetrievalPipeline:
        """The retrieval pipeline over the build this client follows (created on first use)."""
        if self._serving is None:
            self._follow_build()
        with self._lock:
            if self._pipeline is None:
                from hybrid_search.encoding.encoder import set_cpu_threads

                set_cpu_threads(self.settings.search.threads)  # for serving: see SearchSettings.threads
                backend = self.backend
                if self._query_log is None:  # one log for the client's life, across rebuilds
                    self._query_log = self._new_query_log(backend)
                self._pipeline = RetrievalPipeline(
                    backend,
                    index=self._serving or self.index,
                    encoder=self.query_encoder,
                    reranker=self.reranker,
                    settings=self.settings.search,
                    query_log=self._query_log,
                    owns_parts=False,
                    sparse_encoder=self.sparse_encoder,
                )
            return self._pipeline

    @property
    def searcher(self) -> RetrievalPipeline:
        """Deprecated name of ``pipeline``."""
        return self.pipeline

    @property
    def query_log(self) -> QueryLog | None:
        """The query log searches are recorded in, when ``logs.queries`` is on (``None`` otherwise)."""
        self.pipeline.query_log  # noqa: B018 - the log is created with the pipeline
        return self._query_log

    def _new_query_log(self, backend: Backend) -> QueryLog | None:
        if not self.settings.logs.queries:
            return None
        from hybrid_search.app.logs import QueryLog

        return QueryLog(backend.log_sink(), index=self.index, backend=backend.name, settings=self.settings.logs)

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("this HybridSearch is closed: create a new one")

    # --- the work -----------------------------------------------------------------------------------
    def ingest(
        self,
        source: str | Path | CorpusSource | Iterable[Mapping[str, Any]] | Any,
        *,
        name: str | None = None,
        metadata_fields: Sequence[str] = (),
        id_field: str | None = None,
        title_field: str = "title",
        text_field: str = "text",
        vector_field: str | None = None,
        sparse_field: str | None = None,
        fields: FieldMap | None = None,
        resume: bool = False,
        progress: bool = False,
    ) -> IngestSummary:
        """Read, encode and store ``source`` (``quora``, ``nq``, ``sample``, a BEIR folder, a
        .jsonl/.csv/.parquet file, or records in memory: dicts, a pandas DataFrame, a pyarrow Table or a
        ``datasets.Dataset``) into a new build of the index, then switch the index to it. ``name`` names
        in-memory records, which ``resume`` requires.

        ``metadata_fields`` are kept as filterable metadata; ``id_field`` (default ``_id``, then ``id``),
        ``title_field`` and ``text_field`` name the record's fields (or give a whole ``FieldMap``);
        ``vector_field`` names a precomputed embedding (made by this client's model) to store instead of
        encoding: a record whose vector has the wrong size, non-finite values or (for a normalised model)
        not unit length is rejected with that reason. ``sparse_field`` likewise names precomputed learned-sparse
        vectors (token -> positive weight, made by ``models.sparse_encoder``, which encodes the queries).
        Every run, finished or failed, is recorded in ``<index>-ingest`` (``logs.ingest``)."""
        options = {
            "metadata_fields": metadata_fields,
            "id_field": id_field,
            "title_field": title_field,
            "text_field": text_field,
            "vector_field": vector_field,
            "sparse_field": sparse_field,
            "fields": fields,
        }
        corpus = self._as_source(source, name=name, fields=options)
        if resume and not getattr(corpus, "named", True):
            raise ConfigError(
                "resume needs to know the records are the same ones: pass name=... (and the same records in "
                "the same order) to ingest and to the resumed ingest"
            )
        return self._build(corpus, self.encoder, self.settings, resume=resume, progress=progress)

    def _as_source(self, source: Any, *, name: str | None, fields: Mapping[str, Any]) -> CorpusSource:
        from hybrid_search.ingest.sources import as_source

        return as_source(source, name=name, options=fields)

    def _build(
        self, source: CorpusSource, encoder: Encoder, settings: Settings, *, resume: bool, progress: bool
    ) -> IngestSummary:
        """One ingest run into a new build of the index (logged), with every core encoding; afterwards the
        client reads the index's model and fields again."""
        from hybrid_search.app.logs import IngestLog
        from hybrid_search.encoding.encoder import set_cpu_threads
        from hybrid_search.ingest.pipeline import run_ingest

        backend = self.backend
        log = IngestLog(backend, settings.logs, alias=self.index, source=source.name, model=encoder.model_name)
        previous = set_cpu_threads(0)  # encoding a corpus uses every core, whatever searches use
        try:
            sparse = None
            if settings.models.sparse_encoder:
                from hybrid_search.encoding.sparse import SparseEncoder

                sparse = SparseEncoder(settings.models.sparse_encoder, settings=settings.models)
            return run_ingest(
                source,
                backend,
                encoder,
                settings,
                alias=self.index,
                resume=resume,
                progress=progress,
                on_finish=log,
                sparse_encoder=sparse,
            )
        finally:
            set_cpu_threads(previous)
            self._forget_index()

    def _forget_index(self) -> None:
        """A new build may hold another model and other fields: read them again on the next search."""
        with self._lock:
            self._spec = None
            self._field_types = None
            self._query_encoder = None
            self._sparse_encoder = None
            self._pipeline = None
            self._serving = None
            self._build_checked = 0.0

    def _follow_build(self, *, force: bool = False) -> None:
        """Notice a rebuild, rollback or reindex made by anyone (another process too): when the alias serves
        another build than the one this client opened, its spec, fields and query model are read again.
        Asked before each search on the embedded backend (a file stat); at most once a second on a cluster,
        which is safe because searches name the build they opened, never the moving alias."""
        now = time.monotonic()
        if not force and self._serving is not None and now - self._build_checked < self.backend.build_check_seconds:
            return
        serving = self.backend.serving_build(self.index)
        with self._lock:
            if serving != self._serving:
                if self._serving is not None:
                    self._forget_index()
                self._serving = serving
            self._build_checked = now

    def reindex(
        self,
        model: str | None = None,
        *,
        sparse_model: str | None = None,
        resume: bool = False,
        progress: bool = False,
    ) -> IngestSummary:
        """Re-encode the documents the index holds with ``model`` into a new build, and move the alias to it
        only once every document is stored (searches keep answering from the old build meanwhile, and it stays
        as the previous build for ``rollback``). The analyzer, HNSW options and metadata fields carry over;
        every document must re-encode (a failure leaves the index as it was). Afterwards this client searches
        with ``model``.

        ``model`` defaults to the index's own bi-encoder. The learned-sparse field carries over with the
        index's sparse model unless ``sparse_model`` names another (swapping it) or is ``""`` (dropping the
        field); queries always use the model the serving build records."""
        from hybrid_search.app.reindexing import reindex_settings
        from hybrid_search.encoding.encoder import Encoder
        from hybrid_search.ingest.sources import StoredIndex

        backend = self.backend
        stats = backend.stats(self.index)  # IndexNotFound says how to create it
        spec = stats.spec
        if spec is None:
            raise ConfigError(f"index {self.index!r} records no vector spec: ingest it with hybrid-search first")
        source = StoredIndex(backend, stats.physical, tuple(spec.metadata_fields or ()))
        s = self.settings
        settings = reindex_settings(s, spec, model=model, sparse_model=sparse_model)
        encoder = Encoder(settings=settings.models)
        summary = self._build(source, encoder, settings, resume=resume, progress=progress)
        if "bi_encoder" in s.models.model_fields_set:  # a model the user named follows the index to the new one
            with self._lock:
                self.settings = s.model_copy(update={"models": settings.models})
                self._encoder = encoder
        return summary

    def request(self, query: str, **preset: Unpack[Preset]) -> SearchRequest:
        """The ``SearchRequest`` a mode preset makes from this client's settings (see ``Preset``; change it
        with ``dataclasses.replace`` and pass it to ``search``)."""
        return build_request(self.settings.search, query, **preset)

    def search(self, query: str | SearchRequest, *, highlight: bool = False, **preset: Unpack[Preset]) -> SearchResult:
        """Search the index. ``preset``: ``mode`` (``bm25``, ``knn`` or ``hybrid``, optionally ``+rerank``;
        default from the settings), ``top_k``, ``offset`` (a later page), ``rerank``, and ``filters``:
        ``{"field": value}``, ``{"field": [any, of]}`` or ``{"field": {"gte": low, "lt": high}}`` on metadata
        fields the index was ingested with (a misspelt one is an error, not zero hits). ``highlight``: each
        hit's ``highlight`` is the matching part of its text. ``query`` may be a whole ``SearchRequest``."""
        request = query if isinstance(query, SearchRequest) else self.request(query, **preset)

        def once() -> SearchResult:
            if request.filters:
                self._check_filters(request.filters)
            result = self.pipeline.run(request)
            if not highlight:
                return result
            from hybrid_search.app.highlight import highlight_hits

            spec = self._serving_spec()
            return replace(
                result, hits=highlight_hits(result.hits, request.query, spec.analyzer if spec else "standard")
            )

        self._follow_build()
        try:
            return once()
        except IndexNotFound:
            # the build this client opened was dropped by another process's later builds: open the serving one
            self._follow_build(force=True)
            return once()

    def field_types(self) -> dict[str, str]:
        """Metadata field -> the type the index holds it as (keyword, long, double, boolean), read once per build."""
        self._follow_build()
        return self._types()

    def _types(self) -> dict[str, str]:
        if self._field_types is None:
            self._field_types = dict(self.backend.stats(self._serving or self.index).metadata_fields)
        return self._field_types

    def check_filters(self, filters: Filter) -> None:
        """``QueryError`` when a filter names a field the index was not ingested with, or gives a value of
        another type than the field holds."""
        self._follow_build()
        self._check_filters(filters)

    def _check_filters(self, filters: Filter) -> None:
        """``check_filters`` against the build this client follows now (the caller has just followed it)."""
        spec = self._serving_spec()
        if spec is None:
            return  # a missing index fails in the search itself
        if spec.metadata_fields is not None:  # an older index does not record its fields
            unknown = [name for name in filters if name not in spec.metadata_fields]
            if unknown:
                have = ", ".join(spec.metadata_fields) or "no metadata fields"
                raise QueryError(
                    f"no metadata field {unknown[0]!r} in index {self.index!r} (it has: {have}): check the name, "
                    f"or ingest with --metadata-fields {unknown[0]} to filter on it"
                )
        check_value_types(filters, self._types())

    def evaluate(
        self,
        source: str | Path,
        *,
        modes: Iterable[str] = DEFAULT_MODES,
        split: str = "test",
        max_queries: int | None = None,
        ignore_identical_ids: bool = True,
        progress: bool = False,
        outputs: EvalOutputs | None = None,
    ) -> EvalReport:
        """nDCG@10, Recall@100, MRR@10 and latency per mode, on the queries and qrels of ``source``.

        A mode named ``tuned`` is this client's own pipeline as its settings (a ``tune`` profile) define it;
        beside it, the fixed modes run at the shipped defaults, so one table compares them fairly. Each
        query's run is cached under ``data_dir/eval-cache`` (a rerun skips it); ``outputs`` adds run files,
        the estimate up front and each mode's report as it completes (``app.evaluate.EvalOutputs``)."""
        from hybrid_search.app.evaluate import evaluate_source

        return evaluate_source(
            self,
            source,
            modes=modes,
            split=split,
            max_queries=max_queries,
            ignore_identical_ids=ignore_identical_ids,
            progress=progress,
            outputs=outputs,
        )

    def check_index(self) -> int:
        """Connect and check the index exists (``IndexNotFound`` says how to create it); return its count.

        Cheap: call it before anything slow, such as loading models."""
        return self.backend.count(self.index)

    def fixed_pipeline(self) -> RetrievalPipeline:
        """A pipeline over this client's index, models and query log at the shipped default settings (what a
        ``tune`` profile is compared with)."""
        from hybrid_search.config.settings import SearchSettings

        return RetrievalPipeline(
            self.backend,
            index=self._serving or self.index,
            encoder=self.query_encoder,
            reranker=self.reranker,
            settings=SearchSettings(),
            query_log=self._query_log,
            owns_parts=False,
            sparse_encoder=self.sparse_encoder,
        )

    def exists(self) -> bool:
        """Whether the index exists on the backend."""
        return self.backend.index_exists(self.index)

    def stats(self) -> IndexStats:
        """Alias, physical index, count, size, vector field and mapping of the index."""
        return self.backend.stats(self.index)

    def inspect(self) -> Inspection:
        """``stats`` plus the last ingest run and the query log's size (what ``hybrid-search inspect`` shows)."""
        from hybrid_search.app.inspection import inspect_index

        return inspect_index(self.backend, self.index)

    def rollback(self) -> tuple[str, str]:
        """Serve the previous build again; return (now serving, now previous). Twice undoes it. Refused
        (``IndexLocked``) while another process writes the index."""
        try:
            with self.backend.writer_lock(self.index, force=self.settings.ingest.force_unlock):
                return self.backend.rollback(self.index)
        finally:
            self._forget_index()

    def delete(self) -> None:
        """Delete the index: its current and previous builds (the logs are kept). Refused while another
        process writes it."""
        try:
            with self.backend.writer_lock(self.index, force=self.settings.ingest.force_unlock):
                self.backend.drop_index(self.index)
        finally:
            self._forget_index()

    def repair(self) -> int:
        """Rebuild the index's vector graph from the vectors it stores (after a ``CorruptIndex`` error);
        return how many vectors it holds. Embedded backend only: a cluster repairs its own shards."""
        repair = getattr(self.backend, "repair", None)
        if repair is None:
            raise ConfigError(f"the {self.backend.name} backend repairs its own files: nothing to do here")
        try:
            with self.backend.writer_lock(self.index, force=self.settings.ingest.force_unlock):
                return int(repair(self.index))
        finally:
            self._forget_index()

    def warm_up(self, *, rerank: bool = True, dense: bool = True) -> None:
        """Load the bi-encoder (``dense``) and the cross-encoder (``rerank``) now, so the first search measures
        searching; a BM25-only search needs neither."""
        if dense:
            self.query_encoder.encode_queries(["warm up"])
        if rerank:
            self.reranker.score("warm up", ["warm up"])

    def close(self) -> None:
        """Drain the query log, release the models and close the backend's connections. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pipeline, self._pipeline = self._pipeline, None
            if pipeline is not None:
                pipeline.close()  # drains the query log; the models are this client's to close
            elif self._query_log is not None:
                self._query_log.close()
            parts = (self._encoder, self._query_encoder, self._reranker, self._sparse_encoder)
            for part in dict.fromkeys(p for p in parts if p is not None):
                part.close()
            if self._backend is not None:
                self._backend.close()

    def query_log_report(self) -> str | None:
        """One line on where the query log went and what it could not write (``None`` without a log)."""
        log = self._query_log
        if log is None:
            return None
        s = log.stats
        return (
            f"query log {log.name} at {log.sink.location}: {s.written} written, {s.dropped} dropped, "
            f"{s.failed} failed of {s.recorded}"
        )

    def index_model(self) -> str | None:
        """The bi-encoder the serving build was encoded with, as its spec records it (``None`` if unrecorded)."""
        self._follow_build()
        spec = self._serving_spec()
        return spec.model if spec is not None and spec.model else None

    def __enter__(self) -> HybridSearch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HybridSearch(index={self.index!r}, backend={self.settings.backend.kind!r})"


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
