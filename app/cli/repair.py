"""``hybrid-search repair``: rebuild an embedded index's vector graph from its stored vectors."""

from __future__ import annotations

import argparse

from hybrid_search.app.cli import options

HELP = "rebuild an embedded index's vector graph from its stored vectors"


def add_arguments(p: argparse.ArgumentParser) -> None:
    options.index_flag(p)
    options.common(p)


def run(args: argparse.Namespace) -> int:
    with options.client(options.load(args)) as hs:
        vectors = hs.repair()
    print(f"{hs.index}: rebuilt the vector graph from {vectors} stored vectors (checksum recorded)")
    return 0
