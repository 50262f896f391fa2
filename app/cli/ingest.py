"""``hybrid-search ingest``: read, encode and index a corpus."""

from __future__ import annotations

import argparse
import json
import sys

from hybrid_search.app.cli import options

HELP = "read, encode and index a corpus"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="quora, nq, sample (bundled), a BEIR folder, or a .jsonl/.json/.csv/.parquet file")
    options.index_flag(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print the summary as JSON on stdout (the default when stdout is a pipe or file, not a terminal)",
    )
    options.ingest_knobs(p)
    options.common(p)


def run(args: argparse.Namespace) -> int:
    with options.client(options.load(args)) as hs:
        summary = options.ingest(hs, args)
    if args.json or not sys.stdout.isatty():  # a terminal has the one-line summary on stderr already
        print(json.dumps(summary.to_dict()))
    return 0
