"""``hybrid-search delete-docs``: delete documents from the serving index by id and/or by filter."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hybrid_search.app.cli import options

HELP = "delete documents from an index by id (or a file of ids) and/or a --where filter"


def add_arguments(p: argparse.ArgumentParser) -> None:
    options.index_flag(p)
    p.add_argument(
        "--ids",
        nargs="+",
        default=[],
        metavar="ID|FILE",
        help="ids to delete, or files of ids (one per line, or JSON Lines with an id / _id field)",
    )
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="FILTER",
        help="delete every document this filter allows (as search --filter: FIELD=VALUE, 'year<2019'; repeat for AND)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    options.no_refresh(p)
    options.force_unlock(p)
    options.common(p)


def read_ids(items: list[str]) -> list[str]:
    """The ids given: each item is an id, or a file of ids (plain lines or JSON Lines with ``id`` / ``_id``)."""
    from hybrid_search.config.errors import ConfigError

    out: list[str] = []
    for item in items:
        path = Path(item)
        if not path.is_file():
            out.append(item)
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):
                record = json.loads(line)
                found = record.get("_id", record.get("id"))
                if found is None:
                    raise ConfigError(f"{path}:{n} has no id or _id field: give one id per line or per record")
                out.append(str(found))
            else:
                out.append(line)
    return out


def run(args: argparse.Namespace) -> int:
    from hybrid_search.app.cli.search import parse_filters
    from hybrid_search.search.filters import coerce_text_filters

    text_filters = parse_filters(args.where)
    with options.client(options.load(args)) as hs:
        hs.check_index()
        filters = None
        if text_filters:
            filters = coerce_text_filters(text_filters, hs.field_types())
            hs.check_filters(filters)
        result = hs.delete_documents(read_ids(args.ids), filters=filters, refresh=not args.no_refresh)
    print(result.line(), file=sys.stderr)
    if args.json or not sys.stdout.isatty():
        print(json.dumps(result.to_dict()))
    return 0
