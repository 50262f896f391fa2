"""``hybrid-search inspect``: an index's alias, size, vector field, mapping, last ingest and query log."""

from __future__ import annotations

import argparse

from hybrid_search.app.cli import options

HELP = "show an index: alias, size, vector field, mapping, last ingest, query log"


def add_arguments(p: argparse.ArgumentParser) -> None:
    options.index_flag(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    options.common(p)


def run(args: argparse.Namespace) -> int:
    with options.client(options.load(args)) as hs:
        report = hs.inspect()
    print(report.to_json() if args.json else report.table())
    return 0
