"""``ClusterSearch``: what a cluster answers about an index: counts, stats, BM25, kNN, server-side fusion
(by capability: ``fusion_refusal``; a refusal at run time is remembered) and corpus-wide reads (scrolled
documents and vectors, batched kNN, texts by id). Bodies that differ by engine come from the dialect.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np

from hybrid_search.backends.base import (
    IndexStats,
    StoredDocument,
    checks_names,
)
from hybrid_search.backends.cluster.bodies import (
    HASH_FIELD,
    PASSAGES_FIELD,
    TEXT_FIELDS,
    VECTOR_FIELD,
    bm25_body,
    ids_body,
    matching_ids_body,
    reason,
    spec_from_mapping,
    write_generation,
)
from hybrid_search.backends.cluster.connection import ClusterConnection
from hybrid_search.backends.logsinks import mapping_fields
from hybrid_search.config.errors import (
    FusionUnsupported,
    QueryError,
)
from hybrid_search.config.text import passage_text
from hybrid_search.search.filters import METADATA_FIELD, Filter
from hybrid_search.search.hits import Hit, Passage
from hybrid_search.search.interfaces import ServerFusion
from hybrid_search.search.request import SearchRequest, two_leg_request

__all__ = ["ClusterSearch"]

_PASSAGE_CHECK_SECONDS = 10.0  # how stale the knowledge of whether an index holds passages may be
INNER_PASSAGES = 8  # best passages a cluster kNN hit brings back (``inner_hits``); a request shows up to its own


def _hnsw_field(properties: Mapping[str, Any]) -> Mapping[str, Any]:
    """The mapping of the vector field kNN searches: the nested passages' in an index of passages."""
    nested = (properties.get(PASSAGES_FIELD) or {}).get("properties") or {}
    return nested.get(VECTOR_FIELD) or properties.get(VECTOR_FIELD) or {}


class ClusterSearch(ClusterConnection):
    """Reads of a cluster index; the engine subclass gives ``knn_body``, ``similarity`` and fusion bodies."""

    @cached_property
    def _server_fusion_refused(self) -> dict[str, str]:
        return {}  # fusion method -> why the server refused it (asked once)

    @cached_property
    def _holds_passages(self) -> dict[str, tuple[float, bool]]:
        return {}  # index or alias -> (when asked, whether its build holds passages)

    def passages_in(self, index: str) -> bool:
        """Whether ``index`` (what its alias serves now) holds passages: its kNN goes to the nested
        vectors. Asked of the mapping at most every ``_PASSAGE_CHECK_SECONDS`` per name."""
        now = time.monotonic()
        known = self._holds_passages.get(index)
        if known is None or now - known[0] > _PASSAGE_CHECK_SECONDS:
            try:
                spec = spec_from_mapping(self._mapping(index))
            except self.api_error:  # a missing index: its search then says so
                spec = None
            known = (now, bool(spec is not None and spec.passages))
            self._holds_passages[index] = known
        return known[1]

    def _knn_passages(self, index: str, shown: int) -> int:
        return shown if self.passages_in(index) else 0

    def _mapping(self, index: str) -> dict[str, Any]:
        mappings = self.call("get mapping", self.client.indices.get_mapping, index=index)
        return next(iter(mappings.values()))["mappings"]

    def _alias_targets(self, alias: str) -> list[str]:
        if not self.call("alias exists", self.client.indices.exists_alias, name=alias):
            return []
        return sorted(self.call("get alias", self.client.indices.get_alias, name=alias))

    @checks_names
    def count(self, index: str) -> int:
        self.connect()
        return int(self.call("count", self.client.count, index=index)["count"])

    @checks_names
    def refresh(self, index: str) -> None:
        self.connect()
        self.call("refresh", self.client.indices.refresh, index=index)

    @checks_names
    def stats(self, index: str) -> IndexStats:
        targets = self._alias_targets(index)
        physical = targets[0] if targets else index
        raw = self.call("stats", self.client.indices.stats, index=physical, metric="store,docs")
        total = raw["indices"][physical]["total"]
        size = total["store"]["size_in_bytes"]
        deleted = (total.get("docs") or {}).get("deleted")
        body = self._mapping(physical)
        fields = mapping_fields(body)
        return IndexStats(
            alias=index if targets else "",
            physical=physical,
            count=self.count(index),
            spec=spec_from_mapping(body),
            store_bytes=int(size),
            vector=dict(_hnsw_field(body.get("properties", {}))),
            fields=fields,
            metadata_fields={
                path.removeprefix(f"{METADATA_FIELD}."): kind
                for path, kind in fields.items()
                if path.startswith(f"{METADATA_FIELD}.")
            },
            deleted_documents=int(deleted) if deleted is not None else None,
            write_generation=str(write_generation(body.get("_meta") or {})),
        )

    # --- search -----------------------------------------------------------------------------------
    def search_body(
        self, index: str, body: Mapping[str, Any], params: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        self.connect()
        extra = {"params": dict(params)} if params else {}
        try:
            response = self.call("search", self.client.search, index=index, body=dict(body), **extra)
        except self.api_error as exc:
            raise QueryError(f"{self.name} rejected the search on {index!r}: {reason(exc)}") from exc
        return response["hits"]["hits"]

    def _passages(self, h: Mapping[str, Any], text: str, stage: str) -> tuple[Passage | None, tuple[Passage, ...]]:
        """A hit's best passages from its ``inner_hits`` (kNN over passages), else every passage span its
        ``_source`` holds, unscored (``with_passages`` chooses among them by the query's terms)."""
        spans = [
            (int(p.get("start", 0)), int(p.get("end", 0))) for p in (h.get("_source") or {}).get(PASSAGES_FIELD) or []
        ]
        inner = (((h.get("inner_hits") or {}).get(PASSAGES_FIELD) or {}).get("hits") or {}).get("hits") or []
        chosen: list[Passage] = []
        for ih in inner:
            n = int((ih.get("_nested") or {}).get("offset", 0))
            fields = ((ih.get("fields") or {}).get(PASSAGES_FIELD) or [{}])[0]
            start = int((fields.get("start") or [spans[n][0] if n < len(spans) else 0])[0])
            end = int((fields.get("end") or [spans[n][1] if n < len(spans) else len(text)])[0])
            score = float(ih.get("_score") or 0.0)
            chosen.append(Passage(n, start, end, text[start:end], self.similarity(score) if stage == "knn" else score))
        if chosen:
            return chosen[0], tuple(chosen)
        return None, tuple(Passage(i, s, e, text[s:e]) for i, (s, e) in enumerate(spans))

    def _hits(self, raw: Sequence[dict[str, Any]], stage: str) -> list[Hit]:
        hits = []
        for rank, h in enumerate(raw, start=1):
            src = h.get("_source") or {}
            score = float(h.get("_score") or 0.0)
            passage, passages = self._passages(h, src.get("text", ""), stage)
            hits.append(
                Hit(
                    doc_id=str(h["_id"]),
                    rank=rank,
                    score=score,
                    title=src.get("title", ""),
                    text=src.get("text", ""),
                    metadata=src.get(METADATA_FIELD) or {},
                    bm25_score=score if stage == "bm25" else None,
                    knn_score=score if stage == "knn" else None,
                    sparse_score=score if stage == "sparse" else None,
                    fusion_score=score if stage == "fusion" else None,
                    passage=passage,
                    passages=passages,
                )
            )
        return hits

    @checks_names
    def search_bm25(self, index: str, query: str, k: int, filters: Filter | None = None) -> list[Hit]:
        return self._hits(self.search_body(index, bm25_body(query, k, filters)), "bm25")

    @abstractmethod
    def knn_body(
        self, vector: np.ndarray, k: int, num_candidates: int, filters: Filter | None, passages: int = 0
    ) -> dict[str, Any]:
        """The engine's kNN search request; ``passages`` > 0: over the nested passage vectors of an index of
        passages, each hit with its best ``passages`` passages."""

    def similarity(self, score: float) -> float:
        """The vector similarity behind an engine's kNN ``_score`` (engines rescale it to be positive)."""
        return score

    @checks_names
    def search_knn(
        self, index: str, vector: np.ndarray, k: int, num_candidates: int, filters: Filter | None = None
    ) -> list[Hit]:
        def search() -> list[dict[str, Any]]:
            passages = self._knn_passages(index, INNER_PASSAGES)
            return self.search_body(index, self.knn_body(vector, k, num_candidates, filters, passages))

        try:
            raw = search()
        except QueryError:
            # the alias may have moved to a build with (or without) passages since it was last asked
            known = self._holds_passages.pop(index, None)
            if known is None or self.passages_in(index) == known[1]:
                raise
            raw = search()
        for h in raw:  # report the similarity itself, as the embedded backend does
            h["_score"] = self.similarity(float(h.get("_score") or 0.0))
        return self._hits(raw, "knn")

    @abstractmethod
    def sparse_body(self, vector: Mapping[str, float], k: int, filters: Filter | None) -> dict[str, Any]:
        """The engine's learned-sparse search request."""

    @checks_names
    def search_sparse(
        self, index: str, vector: Mapping[str, float], k: int, filters: Filter | None = None
    ) -> list[Hit]:
        if not vector:
            return []  # a query that weighs nothing matches nothing
        return self._hits(self.search_body(index, self.sparse_body(vector, k, filters)), "sparse")

    def dialect_fusion_refusal(self, request: SearchRequest) -> str | None:
        """Why this engine and version cannot fuse ``request`` on the server (the engine subclass says)."""
        return f"{self.name} has no server-side fusion"

    def fused_body(self, request: SearchRequest, passages: bool = False) -> dict[str, Any]:
        """The server-side fusion request (asked only after ``dialect_fusion_refusal`` said yes)."""
        raise FusionUnsupported(f"{self.name} has no server-side fusion")

    def fusion_refusal(self, request: SearchRequest) -> str | None:
        if request.fusion is None:
            return "one leg has nothing to fuse"
        return self._server_fusion_refused.get(request.fusion.method) or self.dialect_fusion_refusal(request)

    def _hybrid_search(self, index: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        return self.search_body(index, body)

    @checks_names
    def search_fused(self, index: str, request: SearchRequest) -> list[Hit]:
        assert request.fusion is not None, "asked only after fusion_refusal said yes"
        body = self.fused_body(request, self.passages_in(index))
        try:
            raw = self._hybrid_search(index, body)
        except QueryError as exc:
            cause = exc.__cause__
            if cause is not None and self.status_of(cause) in (400, 403, 404):
                method = request.fusion.method
                why = f"{self.name} {self.server.version_text} refused {method} fusion: {reason(cause)}"
                self._server_fusion_refused[method] = why
                raise FusionUnsupported(why) from exc
            raise
        return self._hits(raw, "fusion")

    @checks_names
    def search_hybrid(self, index: str, query: str, vector: np.ndarray, k: int, **legs: Any) -> list[Hit]:
        """Deprecated two-leg form of ``search_fused`` (``legs``: bm25_depth, knn_depth, num_candidates,
        fusion as a ``ServerFusion``, filters); raises ``FusionUnsupported`` where the server cannot fuse."""
        fusion: ServerFusion = legs.pop("fusion")
        request = two_leg_request(query, vector, k, fusion=fusion.spec(), **legs)
        reason = self.fusion_refusal(request)
        if reason is not None:
            raise FusionUnsupported(reason)
        return self.search_fused(index, request)

    # --- corpus-wide access (duplicate mining) -------------------------------------------------------
    def _scan(self, index: str, body: dict[str, Any], size: int) -> Iterable[dict[str, Any]]:
        """Every hit of ``body`` over ``index``, scrolled."""
        return self.helpers.scan(self.client, index=index, query=body, size=size)

    @checks_names
    def iter_vectors(self, index: str, batch: int = 1_000) -> Iterable[tuple[list[str], np.ndarray]]:
        """Every stored vector, scrolled from ``_source`` a batch at a time."""
        ids: list[str] = []
        vectors: list[Any] = []
        for hit in self._scan(index, {"query": {"match_all": {}}, "_source": [VECTOR_FIELD]}, batch):
            vector = (hit.get("_source") or {}).get(VECTOR_FIELD)
            if vector is None:
                continue
            ids.append(str(hit["_id"]))
            vectors.append(vector)
            if len(ids) >= batch:
                yield ids, np.asarray(vectors, dtype=np.float32)
                ids, vectors = [], []
        if ids:
            yield ids, np.asarray(vectors, dtype=np.float32)

    @checks_names
    def iter_documents(self, index: str, batch: int = 1_000) -> Iterable[list[StoredDocument]]:
        """Every stored document's text and metadata, scrolled a batch at a time (vectors left on the server)."""
        out: list[StoredDocument] = []
        body = {"query": {"match_all": {}}, "_source": [*TEXT_FIELDS, METADATA_FIELD]}
        for hit in self._scan(index, body, batch):
            src = hit.get("_source") or {}
            out.append(
                StoredDocument(
                    str(hit["_id"]), src.get("title") or "", src.get("text") or "", src.get(METADATA_FIELD) or {}
                )
            )
            if len(out) >= batch:
                yield out
                out = []
        if out:
            yield out

    @checks_names
    def knn_batch(self, index: str, vectors: np.ndarray, k: int, num_candidates: int) -> list[list[tuple[str, float]]]:
        """Neighbours of many vectors in one ``_msearch`` round trip."""
        lines: list[dict[str, Any]] = []
        passages = self._knn_passages(index, 1)  # ids only: one inner hit keeps the body small
        for vector in vectors:
            body = self.knn_body(vector, k, num_candidates, None, passages)
            body["_source"] = False
            lines += [{"index": index}, body]
        response = self.call("msearch", self.client.msearch, body=lines)
        out = []
        for item in response["responses"]:
            if "error" in item:
                raise QueryError(f"{self.name} rejected a kNN search in a batch: {reason(item['error'])}")
            out.append([(str(h["_id"]), self.similarity(float(h["_score"]))) for h in item["hits"]["hits"]])
        return out

    def _found(self, index: str, doc_ids: Sequence[str], fields: list[str]) -> Iterable[tuple[str, dict[str, Any]]]:
        """(id, the requested ``_source`` fields) of each id found, in ``mget`` requests of ``bulk_docs`` ids."""
        ids = list(doc_ids)
        for start in range(0, len(ids), self.settings.bulk_docs):
            part = ids[start : start + self.settings.bulk_docs]
            response = self.call("mget", self.client.mget, index=index, body=ids_body(part), _source_includes=fields)
            yield from ((d["_id"], d.get("_source") or {}) for d in response["docs"] if d.get("found"))

    @checks_names
    def content_hashes(self, index: str, doc_ids: Sequence[str]) -> dict[str, str]:
        """The content hash each stored id was written with (``mget`` of that one field)."""
        return {i: str(src.get(HASH_FIELD) or "") for i, src in self._found(index, doc_ids, [HASH_FIELD])}

    def writes_hold_gil(self, index: str, incoming: int | None) -> bool:
        """False: a bulk request waits on the network, when the reader can work."""
        return False

    @checks_names
    def matching_ids(self, index: str, filters: Filter) -> list[str]:
        """Ids of every document the filters allow, scrolled without their sources."""
        return [str(hit["_id"]) for hit in self._scan(index, matching_ids_body(filters), self.settings.bulk_docs)]

    @checks_names
    def get_texts(self, index: str, doc_ids: Sequence[str]) -> dict[str, str]:
        """``title text`` of each id found."""
        found = self._found(index, doc_ids, list(TEXT_FIELDS))
        return {i: passage_text(src.get("title", ""), src.get("text", "")) for i, src in found}
