"""``hybrid-search compact``: remove deleted and replaced documents of an index for good."""

from __future__ import annotations

import argparse
import json

from hybrid_search.app.cli import options

HELP = "remove deleted and replaced documents for good (graph, text segments, SQLite pages)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    options.index_flag(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    options.force_unlock(p)
    options.common(p)


def run(args: argparse.Namespace) -> int:
    with options.client(options.load(args)) as hs:
        hs.check_index()
        result = hs.compact()
    if args.json:
        print(json.dumps(result))
    else:
        before, after = result["bytes_before"], result["bytes_after"]
        print(
            f"{hs.index}: compacted {result['tombstones_removed']} deleted or replaced documents; "
            f"{before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB"
        )
    return 0
