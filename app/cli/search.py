"""``hybrid-search search``: one query against an index, as a table or JSON."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hybrid_search.app.cli import options

if TYPE_CHECKING:
    from hybrid_search.search.hits import SearchResult

HELP = "search an index"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("query")
    options.index_flag(p)
    options.mode_flags(p)
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="metadata filter; repeat for AND, separate values by | for any-of; ranges as 'year>=2019' (>, <=, <)",
    )
    p.add_argument(
        "--from",
        dest="offset",
        type=int,
        default=0,
        metavar="N",
        help="skip the first N hits: a page further down the same ranking (JSON gives next_offset)",
    )
    p.add_argument(
        "--highlight", action="store_true", help="show the part of each hit's text that matches, terms in <em> tags"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    options.search_knobs(p)
    options.log_knobs(p)
    options.common(p)


_FILTER_ITEM = re.compile(r"^([^=<>]+)(>=|<=|>|<|=)(.*)$", re.DOTALL)
_RANGE_OPS = {">=": "gte", ">": "gt", "<=": "lte", "<": "lt"}


def parse_filters(items: Sequence[str]) -> dict[str, Any] | None:
    """``--filter FIELD=VALUE`` (``A|B`` for any of several) and ``FIELD>=VALUE`` (``>``, ``<=``, ``<``;
    repeat one field for both bounds) as filters of text values."""
    from hybrid_search.config.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items:
        match = _FILTER_ITEM.match(item)
        if match is None:
            raise ConfigError(
                f"--filter {item!r}: write FIELD=VALUE (FIELD=A|B for any of several) or a range such as "
                "'year>=2019' (quote it: > and < are redirections in a shell)"
            )
        name, op, value = match.groups()
        if op == "=":
            if name in out:
                raise ConfigError(f"--filter {item!r}: {name!r} is filtered twice; use {name}=A|B for any of several")
            out[name] = value.split("|") if "|" in value else value
            continue
        bounds = out.setdefault(name, {})
        if not isinstance(bounds, dict):
            raise ConfigError(f"--filter {item!r}: {name!r} has a value filter already; give a value or a range")
        bounds[_RANGE_OPS[op]] = value
    return out or None


def run(args: argparse.Namespace) -> int:
    from hybrid_search.search.request import build_request

    settings = options.load(args)
    # checked before anything connects or loads
    request = build_request(settings.search, args.query, offset=args.offset)
    text_filters = parse_filters(args.filter)
    hs = options.client(settings)
    try:
        hs.check_index()  # a missing index or an unreachable cluster is reported before any model loads
        if text_filters:
            from dataclasses import replace

            from hybrid_search.search.filters import coerce_text_filters

            filters = coerce_text_filters(text_filters, hs.field_types())  # "2019" -> 2019 for a numeric field
            hs.check_filters(filters)
            request = replace(request, filters=filters)
        # loading is not part of the search time; a model no leg needs is never loaded
        hs.warm_up(rerank=request.rerank is not None, dense=request.needs_vector)
        print_result(hs.search(request, highlight=args.highlight), settings.index.name, as_json=args.json)
    finally:
        options.close_client(hs)  # its query-log summary comes after the results
    return 0


def print_result(result: SearchResult, index: str, *, as_json: bool) -> None:
    if as_json:
        from dataclasses import asdict

        payload = {**asdict(result), "next_offset": result.next_offset}
        print(json.dumps(payload, default=str, ensure_ascii=False), flush=True)
        return
    print(
        f"{result.mode} on {index}: {len(result.hits)} hits in {result.timings_ms['total']:.1f} ms"
        + (f" (fusion: {result.fusion_location})" if result.fusion_location else "")
    )
    for hit in result.hits:
        stages = " ".join(
            f"{name}={value:.3f}"
            for name, value in (
                ("bm25", hit.bm25_score),
                ("knn", hit.knn_score),
                ("fused", hit.fusion_score),
                ("rerank", hit.rerank_score),
            )
            if value is not None
        )
        text = hit.highlight or (f"{hit.title}: {hit.text}" if hit.title else hit.text)
        print(f"{hit.rank:>3}. [{hit.doc_id}] {hit.score:.4f}  {stages}\n     {text[:160]}")
        if hit.passage is not None and (hit.passage.start, hit.passage.end) != (0, len(hit.text)):
            p = hit.passage
            score = f" {p.score:.3f}" if p.score is not None else ""
            print(f"     passage {p.index} [{p.start}:{p.end}]{score}: {' '.join(p.text.split())[:240]}")
    if result.next_offset is not None:
        print(f"next page: --from {result.next_offset}")
    sys.stdout.flush()
