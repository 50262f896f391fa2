"""``hybrid-search ingest``: read, encode and index a corpus."""

from __future__ import annotations

import argparse
import json
import sys

from hybrid_search.app.cli import options
from hybrid_search.config.errors import ConfigError

HELP = "read, encode and index a corpus"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="quora, nq, sample (bundled), a BEIR folder, or a .jsonl/.json/.csv/.parquet file")
    options.index_flag(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print the summary as JSON on stdout (the default when stdout is a pipe or file, not a terminal)",
    )
    p.add_argument(
        "--mode",
        choices=["build", "append", "upsert"],
        default="build",
        help="build (default): a new build swapped in behind the index; append: add new ids to the serving "
        "index; upsert: add new ids and replace changed ones (unchanged records are skipped, not encoded)",
    )
    options.no_refresh(p)
    options.ingest_knobs(p)
    options.common(p)


def run(args: argparse.Namespace) -> int:
    with options.client(options.load(args)) as hs:
        if args.mode == "build":
            summary = options.ingest(hs, args)
            payload = summary.to_dict()
        else:
            if args.resume:
                raise ConfigError("--resume continues a build; an append or upsert is finished by running it again")
            write = hs.upsert if args.mode == "upsert" else hs.add
            result = write(args.source, fields=options.field_map(args), refresh=not args.no_refresh)
            print(result.line(), file=sys.stderr)
            payload = result.to_dict()
    if args.json or not sys.stdout.isatty():  # a terminal has the one-line summary on stderr already
        print(json.dumps(payload))
    return 0
