"""``hybrid-search drop``: remove an index with its previous build, checkpoint, rejects, logs and caches."""

from __future__ import annotations

import argparse
import sys

from hybrid_search.app.cli import options

HELP = "remove an index and everything kept for it (previous build, checkpoint, rejects, logs, eval cache)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    options.index_flag(p)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    options.force_unlock(p)
    options.common(p)


def run(args: argparse.Namespace) -> int:
    settings = options.load(args)
    name = settings.index.name
    if not args.yes:
        if not sys.stdin.isatty():
            print(f"error: drop {name!r} removes it for good: confirm with --yes", file=sys.stderr)
            return 2
        answer = input(f"remove index {name!r} and everything kept for it? type its name to confirm: ")
        if answer.strip() != name:
            print("not dropped", file=sys.stderr)
            return 1
    with options.client(settings) as hs:
        removed = hs.drop()
    print(f"dropped {name}: " + "; ".join(removed))
    return 0
