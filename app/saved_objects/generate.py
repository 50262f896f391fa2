"""Writes the saved objects that ``hybrid-search dashboards install`` imports (run after changing a mapping).

    python -m hybrid_search.app.saved_objects.generate

The files are what Kibana and OpenSearch Dashboards export (NDJSON, one saved object per line), for the
default alias ``corpus``; ``install`` renames them for another alias. They can also be imported by hand
through Stack Management / Dashboards Management -> Saved objects -> Import. Both products get the same
aggregation-based visualizations; only the envelope differs (Kibana 8.8+ migration versions, and the
OpenSearch Dashboards index patterns carry their field list). A test checks these files equal this
script's output and that every field they name exists in the mappings the code creates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hybrid_search.app.logs import INGEST_LOG_MAPPING, QUERY_LOG_MAPPING, STAGES
from hybrid_search.backends.base import IndexSpec
from hybrid_search.backends.elasticsearch import es_index_body
from hybrid_search.backends.logsinks import mapping_fields
from hybrid_search.backends.opensearch import os_index_body

HERE = Path(__file__).resolve().parent

ALIAS = "corpus"
PREFIX = f"hybrid-search-{ALIAS}"
TAG = f"[{ALIAS}]"
FILES = {"kibana": HERE / "kibana.ndjson", "opensearch-dashboards": HERE / "opensearch-dashboards.ndjson"}

CORPUS, QUERIES, INGEST = PREFIX, f"{PREFIX}-queries", f"{PREFIX}-ingest"
INDEX_PATTERNS = {
    CORPUS: (ALIAS, None),
    QUERIES: (f"{ALIAS}-queries", "@timestamp"),
    INGEST: (f"{ALIAS}-ingest", "@timestamp"),
}
_SOURCE_REF = "kibanaSavedObjectMeta.searchSourceJSON.index"


def mappings() -> dict[str, dict[str, Any]]:
    """The mapping each index pattern's index gets from the code, by index-pattern id."""
    spec = IndexSpec(dims=384)
    return {
        CORPUS: {"elasticsearch": es_index_body(spec)["mappings"], "opensearch": os_index_body(spec)["mappings"]},
        QUERIES: {"elasticsearch": QUERY_LOG_MAPPING, "opensearch": QUERY_LOG_MAPPING},
        INGEST: {"elasticsearch": INGEST_LOG_MAPPING, "opensearch": INGEST_LOG_MAPPING},
    }


_KIBANA_TYPES = {
    "keyword": "string",
    "text": "string",
    "date": "date",
    "boolean": "boolean",
    "float": "number",
    "integer": "number",
    "long": "number",
    "short": "number",
    "byte": "number",
}


def _field_list(mapping: dict[str, Any]) -> list[dict[str, Any]]:
    """The field list an OpenSearch Dashboards index pattern caches (it refreshes it from the cluster too)."""
    out = []
    for name, es_type in sorted(mapping_fields(mapping).items()):
        if es_type == "object":
            continue
        kind = _KIBANA_TYPES.get(es_type, "unknown")
        out.append(
            {
                "name": name,
                "type": kind,
                "esTypes": [es_type],
                "count": 0,
                "scripted": False,
                "searchable": kind != "unknown",
                "aggregatable": kind != "unknown" and es_type != "text",
                "readFromDocValues": kind != "unknown" and es_type != "text",
            }
        )
    meta = [
        ("_id", "string", True),
        ("_index", "string", True),
        ("_score", "number", False),
        ("_source", "_source", False),
        ("_type", "string", True),
    ]
    out += [
        {
            "name": n,
            "type": t,
            "count": 0,
            "scripted": False,
            "searchable": s,
            "aggregatable": s,
            "readFromDocValues": False,
        }
        for n, t, s in meta
    ]
    return out


def _search_source(query: str = "") -> str:
    return json.dumps({"query": {"query": query, "language": "kuery"}, "filter": [], "indexRefName": _SOURCE_REF})


def _agg(i: int, kind: str, schema: str, **params: Any) -> dict[str, Any]:
    return {"id": str(i), "enabled": True, "type": kind, "schema": schema, "params": params}


def _terms(i: int, field: str, size: int, schema: str = "bucket", order_by: str = "1") -> dict[str, Any]:
    return _agg(
        i,
        "terms",
        schema,
        field=field,
        size=size,
        order="desc",
        orderBy=order_by,
        otherBucket=False,
        otherBucketLabel="Other",
        missingBucket=False,
        missingBucketLabel="Missing",
    )


_TABLE = {
    "perPage": 10,
    "showPartialRows": False,
    "showMetricsAtAllLevels": False,
    "showTotal": False,
    "totalFunc": "sum",
    "percentageCol": "",
    "sort": {"columnIndex": None, "direction": None},
}


def _xy(kind: str, label: str) -> dict[str, Any]:
    return {
        "type": kind,
        "grid": {"categoryLines": False},
        "addTooltip": True,
        "addLegend": True,
        "legendPosition": "right",
        "times": [],
        "addTimeMarker": False,
        "labels": {"show": False},
        "thresholdLine": {"show": False, "value": 10, "width": 1, "style": "full", "color": "#E7664C"},
        "categoryAxes": [
            {
                "id": "CategoryAxis-1",
                "type": "category",
                "position": "bottom",
                "show": True,
                "style": {},
                "scale": {"type": "linear"},
                "labels": {"show": True, "filter": True, "truncate": 100},
                "title": {},
            }
        ],
        "valueAxes": [
            {
                "id": "ValueAxis-1",
                "name": "LeftAxis-1",
                "type": "value",
                "position": "left",
                "show": True,
                "style": {},
                "scale": {"type": "linear", "mode": "normal"},
                "labels": {"show": True, "rotate": 0, "filter": False, "truncate": 100},
                "title": {"text": label},
            }
        ],
        "seriesParams": [
            {
                "show": True,
                "type": kind,
                "mode": "normal",
                "data": {"label": label, "id": "1"},
                "valueAxis": "ValueAxis-1",
                "drawLinesBetweenPoints": True,
                "lineWidth": 2,
                "interpolate": "linear",
                "showCircles": True,
            }
        ],
    }


def visualizations() -> list[tuple[str, str, str, str, dict[str, Any], str]]:
    """(id, index pattern, title, vis type, params and aggs, kuery) of every visualization."""
    latency = [
        _agg(i, "percentiles", "metric", field=f"latency_ms.{stage}", percents=[50, 95])
        for i, stage in enumerate(STAGES, start=1)
    ]
    return [
        (
            f"{PREFIX}-searches-over-time",
            QUERIES,
            f"Searches over time by mode {TAG}",
            "line",
            {
                "params": _xy("line", "Searches"),
                "aggs": [
                    _agg(1, "count", "metric"),
                    _agg(
                        2,
                        "date_histogram",
                        "segment",
                        field="@timestamp",
                        interval="auto",
                        min_doc_count=1,
                        extended_bounds={},
                        useNormalizedEsInterval=True,
                        drop_partials=False,
                    ),
                    _terms(3, "mode", 10, schema="group"),
                ],
            },
            "",
        ),
        (
            f"{PREFIX}-latency",
            QUERIES,
            f"Latency p50 / p95 by mode and stage (ms) {TAG}",
            "table",
            {"params": _TABLE, "aggs": [*latency, _terms(len(latency) + 1, "mode", 10, order_by="_key")]},
            "",
        ),
        (
            f"{PREFIX}-zero-results",
            QUERIES,
            f"Zero-result rate by mode {TAG}",
            "table",
            {
                "params": _TABLE,
                "aggs": [
                    _agg(1, "avg", "metric", field="zero_result", customLabel="zero-result rate"),
                    _agg(2, "count", "metric"),
                    _terms(3, "mode", 10),
                ],
            },
            "",
        ),
        (
            f"{PREFIX}-top-queries",
            QUERIES,
            f"Top queries {TAG}",
            "table",
            {
                "params": {**_TABLE, "perPage": 20},
                "aggs": [
                    _agg(1, "count", "metric"),
                    _agg(2, "avg", "metric", field="latency_ms.total", customLabel="mean latency (ms)"),
                    _agg(3, "avg", "metric", field="zero_result", customLabel="zero-result rate"),
                    _terms(4, "query", 20),
                ],
            },
            "",
        ),
        (
            f"{PREFIX}-rank-changes",
            QUERIES,
            f"Reranker rank changes (positive: promoted) {TAG}",
            "histogram",
            {
                "params": _xy("histogram", "Returned hits"),
                "aggs": [
                    _agg(1, "count", "metric"),
                    _agg(
                        2,
                        "histogram",
                        "segment",
                        field="hits.rank_change",
                        interval=1,
                        min_doc_count=False,
                        has_extended_bounds=False,
                        extended_bounds={},
                    ),
                ],
            },
            "reranked:true",
        ),
        (
            f"{PREFIX}-rerank-movement",
            QUERIES,
            f"Reranker movement by mode {TAG}",
            "table",
            {
                "params": _TABLE,
                "aggs": [
                    _agg(1, "avg", "metric", field="rerank.moved", customLabel="hits moved per search"),
                    _agg(2, "avg", "metric", field="rerank.mean_abs_change", customLabel="mean |rank change|"),
                    _agg(3, "max", "metric", field="rerank.max_promotion", customLabel="largest promotion"),
                    _terms(4, "mode", 10),
                ],
            },
            "reranked:true",
        ),
    ]


SEARCHES = [
    (f"{PREFIX}-documents", CORPUS, f"Documents {TAG}", ["title", "text"], []),
    (
        f"{PREFIX}-search-log",
        QUERIES,
        f"Searches {TAG}",
        ["mode", "query", "latency_ms.total", "total_hits", "returned", "fusion_location"],
        [["@timestamp", "desc"]],
    ),
    (
        f"{PREFIX}-ingest-runs",
        INGEST,
        f"Ingest runs {TAG}",
        [
            "status",
            "source",
            "model",
            "read",
            "stored",
            "rejected",
            "truncated",
            "encode_docs_per_s",
            "bulk_docs_per_s",
            "duration_s",
            "physical",
        ],
        [["@timestamp", "desc"]],
    ),
]

PANELS = [  # (object id, saved-object type, x, y, w, h)
    (f"{PREFIX}-searches-over-time", "visualization", 0, 0, 32, 12),
    (f"{PREFIX}-zero-results", "visualization", 32, 0, 16, 12),
    (f"{PREFIX}-latency", "visualization", 0, 12, 48, 12),
    (f"{PREFIX}-top-queries", "visualization", 0, 24, 24, 16),
    (f"{PREFIX}-rank-changes", "visualization", 24, 24, 24, 16),
    (f"{PREFIX}-rerank-movement", "visualization", 24, 40, 24, 10),
    (f"{PREFIX}-ingest-runs", "search", 0, 50, 48, 14),
    (f"{PREFIX}-search-log", "search", 0, 64, 48, 16),
]


def objects(product: str) -> list[dict[str, Any]]:
    """Every saved object for ``product`` ("kibana" or "opensearch-dashboards"), dependencies first."""
    kibana = product == "kibana"
    engine = "elasticsearch" if kibana else "opensearch"
    maps = mappings()

    def envelope(obj_id: str, kind: str, attributes: dict[str, Any], refs: list[dict[str, str]]) -> dict[str, Any]:
        out = {"id": obj_id, "type": kind, "attributes": attributes, "references": refs}
        if kibana:
            out.update(coreMigrationVersion="8.8.0", typeMigrationVersion={"visualization": "8.5.0"}.get(kind, "8.0.0"))
        else:
            out["migrationVersion"] = {kind: "7.10.0"}
        return out

    def index_ref(pattern: str) -> list[dict[str, str]]:
        return [{"name": _SOURCE_REF, "type": "index-pattern", "id": pattern}]

    out = []
    for pattern, (title, time_field) in INDEX_PATTERNS.items():
        attrs: dict[str, Any] = {
            "title": title,
            "sourceFilters": json.dumps([{"value": "vector"}] if pattern == CORPUS else []),
            "fields": "[]" if kibana else json.dumps(_field_list(maps[pattern][engine])),
        }
        if time_field:
            attrs["timeFieldName"] = time_field
        out.append(envelope(pattern, "index-pattern", attrs, []))
    for obj_id, pattern, title, vis_type, body, kuery in visualizations():
        state = {"title": title, "type": vis_type, **body}
        out.append(
            envelope(
                obj_id,
                "visualization",
                {
                    "title": title,
                    "description": "",
                    "version": 1,
                    "uiStateJSON": "{}",
                    "visState": json.dumps(state),
                    "kibanaSavedObjectMeta": {"searchSourceJSON": _search_source(kuery)},
                },
                index_ref(pattern),
            )
        )
    for obj_id, pattern, title, columns, sort in SEARCHES:
        out.append(
            envelope(
                obj_id,
                "search",
                {
                    "title": title,
                    "description": "",
                    "version": 1,
                    "hits": 0,
                    "columns": columns,
                    "sort": sort,
                    "kibanaSavedObjectMeta": {"searchSourceJSON": _search_source()},
                },
                index_ref(pattern),
            )
        )
    panels, refs = [], []
    for n, (obj_id, kind, x, y, w, h) in enumerate(PANELS):
        panels.append(
            {
                "version": "8.0.0" if kibana else "7.10.0",
                "panelIndex": str(n + 1),
                "gridData": {"x": x, "y": y, "w": w, "h": h, "i": str(n + 1)},
                "embeddableConfig": {},
                "panelRefName": f"panel_{n}",
            }
        )
        refs.append({"name": f"panel_{n}", "type": kind, "id": obj_id})
    out.append(
        envelope(
            f"{PREFIX}-dashboard",
            "dashboard",
            {
                "title": f"hybrid-search {TAG}",
                "description": "Searches, latency by stage, zero results, reranker "
                "rank changes and ingest runs logged by hybrid-search",
                "version": 1,
                "timeRestore": False,
                "panelsJSON": json.dumps(panels),
                "optionsJSON": json.dumps({"useMargins": True, "hidePanelTitles": False}),
                "kibanaSavedObjectMeta": {
                    "searchSourceJSON": json.dumps({"query": {"query": "", "language": "kuery"}, "filter": []})
                },
            },
            refs,
        )
    )
    return out


def render(product: str) -> str:
    return "".join(json.dumps(obj, sort_keys=True) + "\n" for obj in objects(product))


def main() -> None:
    for product, path in FILES.items():
        path.write_text(render(product), encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
