"""``hybrid-search ingest``: read, encode and index a corpus."""

from __future__ import annotations

import argparse
import json

from hybrid_search.app.cli import options

HELP = "read, encode and index a corpus"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="quora, nq, sample (bundled), a BEIR folder, or a .jsonl/.csv/.parquet file")
    options.index_flag(p)
    options.ingest_knobs(p)
    options.common(p)


def run(args: argparse.Namespace) -> int:
    with options.client(options.load(args)) as hs:
        summary = options.ingest(hs, args)
    print(json.dumps(summary.to_dict()))
    return 0
