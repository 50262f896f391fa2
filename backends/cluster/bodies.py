"""Request bodies and constants both cluster engines share: BM25 (``multi_match`` best fields, never query
syntax), alias swaps, the metadata template, log indexes, and reading a spec or an error reason back.
Pure functions: tests check each body against the official API specs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybrid_search.backends.base import (
    IndexedDocument,
    IndexSpec,
)
from hybrid_search.search.filters import METADATA_FIELD, Filter, to_query_dsl

__all__ = [
    "RETRYABLE_STATUS",
    "SOURCE_EXCLUDES",
    "HASH_FIELD",
    "WRITE_GEN_META_KEY",
    "ids_body",
    "matching_ids_body",
    "write_gen_body",
    "write_generation",
    "SPARSE_FIELD",
    "SPEC_META_KEY",
    "TEXT_FIELDS",
    "VECTOR_FIELD",
    "PASSAGES_FIELD",
    "passage_sources",
    "ServerInfo",
    "alias_actions",
    "bm25_body",
    "bm25_query",
    "latest_body",
    "log_index_body",
    "metadata_dynamic_template",
    "parse_version",
    "reason",
    "spec_from_mapping",
]

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
VECTOR_FIELD = "vector"
SPARSE_FIELD = "sparse"  # token -> weight (sparse_vector on Elasticsearch, rank_features on OpenSearch)
WRITE_GEN_META_KEY = "hybrid_search_writes"  # incremental writes into the build, counted in _meta
HASH_FIELD = "content_hash"  # of the record's content: an upsert skips a record whose hash is unchanged
PASSAGES_FIELD = "passages"  # nested: each passage's vector and its span in the text (an index of passages)
PASSAGE_VECTOR = f"{PASSAGES_FIELD}.{VECTOR_FIELD}"
# what searches leave out of the returned _source (passage spans stay: a hit's best passage is chosen from them)
SOURCE_EXCLUDES = [VECTOR_FIELD, SPARSE_FIELD, HASH_FIELD, PASSAGE_VECTOR]
TEXT_FIELDS = ("title", "text")
SPEC_META_KEY = "hybrid_search"


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the backend learnt when it connected."""

    distribution: str  # "elasticsearch" or "opensearch"
    version: tuple[int, int, int]
    plugins: frozenset[str] = field(default_factory=frozenset)

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


def parse_version(text: str) -> tuple[int, int, int]:
    parts = [int("".join(ch for ch in p if ch.isdigit()) or 0) for p in text.split("-")[0].split(".")[:3]]
    return tuple((parts + [0, 0, 0])[:3])  # type: ignore[return-value]


# --- request-body pieces both engines accept unchanged ----------------------------------------------
def bm25_query(query: str, filters: Filter | None) -> dict[str, Any]:
    """``multi_match`` over title and text (best field wins); the text is analysed, never parsed as syntax."""
    match = {"multi_match": {"query": query, "fields": list(TEXT_FIELDS), "type": "best_fields"}}
    dsl = to_query_dsl(filters)
    return {"bool": {"must": [match], "filter": dsl}} if dsl else match


def bm25_body(query: str, k: int, filters: Filter | None) -> dict[str, Any]:
    """The BM25 search request (vectors left out of the returned ``_source``)."""
    return {"query": bm25_query(query, filters), "size": k, "_source": {"excludes": SOURCE_EXCLUDES}}


def passage_sources(doc: IndexedDocument) -> list[dict[str, Any]]:
    """The nested passages of a document in an index of passages: each one's vector and span."""
    return [
        {VECTOR_FIELD: np.asarray(p.vector, dtype=np.float32), "start": p.start, "end": p.end} for p in doc.passages
    ]


def inner_hits_body(n: int) -> dict[str, Any]:
    """The best ``n`` passages of each kNN hit, their spans only (``_nested.offset`` numbers them)."""
    return {"size": n, "_source": False, "fields": [f"{PASSAGES_FIELD}.start", f"{PASSAGES_FIELD}.end"]}


def matching_ids_body(filters: Filter) -> dict[str, Any]:
    """Every document the filters allow, ids only (what a delete by filter scrolls)."""
    return {"query": {"bool": {"filter": to_query_dsl(filters)}}, "_source": False}


def ids_body(ids: Sequence[str]) -> dict[str, Any]:
    """An ``mget`` of these ids."""
    return {"ids": list(ids)}


def write_gen_body(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The mapping update that counts one incremental write in ``_meta`` (the rest of ``_meta`` kept)."""
    return {"_meta": {**meta, WRITE_GEN_META_KEY: {"generation": write_generation(meta) + 1}}}


def write_generation(meta: Mapping[str, Any]) -> int:
    """The incremental writes counted in a mapping's ``_meta`` (``write_gen_body``)."""
    value = meta.get(WRITE_GEN_META_KEY)
    return int(value.get("generation", 0)) if isinstance(value, Mapping) else 0


def alias_actions(
    targets: Mapping[str, tuple[Sequence[str], str | None]], *, remove_index: str | None = None
) -> dict[str, Any]:
    """One atomic ``_aliases`` request: each alias leaves the indexes it points at and joins the new one
    (or none); ``remove_index`` drops a plain index in the same step (it gives way to an alias)."""
    actions: list[dict[str, Any]] = []
    for alias, (old, _) in targets.items():
        actions += [{"remove": {"index": p, "alias": alias}} for p in old]
    if remove_index:
        actions.append({"remove_index": {"index": remove_index}})
    actions += [{"add": {"index": new, "alias": alias}} for alias, (_, new) in targets.items() if new]
    return {"actions": actions}


FOLDING_ANALYZER = "hs_folding"


def text_analysis(name: str) -> tuple[str, dict[str, Any]]:
    """The analyzer a text field maps to and the index's ``analysis`` settings it needs (both engines): the
    built-in ``standard``, ``cjk`` and language analyzers by name; ``folding`` is a custom analyzer of the
    standard tokenizer, ``lowercase`` and ``asciifolding``."""
    if name == "folding":
        custom = {"type": "custom", "tokenizer": "standard", "filter": ["lowercase", "asciifolding"]}
        return FOLDING_ANALYZER, {"analyzer": {FOLDING_ANALYZER: custom}}
    return name, {}


def metadata_dynamic_template() -> dict[str, Any]:
    """Metadata strings are exact-match keywords, so filters compare whole values."""
    return {
        "metadata_keywords": {
            "path_match": f"{METADATA_FIELD}.*",
            "match_mapping_type": "string",
            "mapping": {"type": "keyword"},
        }
    }


def log_index_body(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A log index: one shard, a replica only where a second node can hold it, the log's strict mapping."""
    return {"settings": {"index": {"number_of_shards": 1, "auto_expand_replicas": "0-1"}}, "mappings": dict(mapping)}


def latest_body() -> dict[str, Any]:
    """The newest log document."""
    return {"size": 1, "sort": [{"@timestamp": {"order": "desc"}}], "query": {"match_all": {}}}


def spec_from_mapping(body: Mapping[str, Any]) -> IndexSpec | None:
    """The spec stored in the mapping's ``_meta``; for an index made elsewhere, its vector size alone."""
    meta = (body.get("_meta") or {}).get(SPEC_META_KEY)
    if meta:
        return IndexSpec.from_dict(meta)
    vector = body.get("properties", {}).get(VECTOR_FIELD, {})
    dims = vector.get("dims") or vector.get("dimension")
    return IndexSpec(dims=int(dims)) if dims else None


def reason(error: Any) -> str:
    """A short human reason from an engine error body or exception."""
    if isinstance(error, dict):
        text = error.get("reason") or error.get("type") or str(error)
        caused = error.get("caused_by")
        if isinstance(caused, dict) and caused.get("reason") and caused.get("reason") != text:
            text = f"{text} (caused by: {caused['reason']})"
        return str(text)
    info = getattr(error, "info", None) or getattr(error, "body", None)
    if isinstance(info, dict) and isinstance(info.get("error"), dict):
        return reason(info["error"].get("root_cause", [info["error"]])[0])
    return str(error) if error is not None else "unknown error"
