"""``hybrid-search rollback``: serve the previous build of an index again (run twice to undo)."""

from __future__ import annotations

import argparse

from hybrid_search.app.cli import options

HELP = "serve the previous build of an index again (run twice to undo)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    options.index_flag(p)
    options.force_unlock(p)
    options.common(p)


def run(args: argparse.Namespace) -> int:
    from hybrid_search.config.names import previous_alias

    with options.client(options.load(args)) as hs:
        serving, previous = hs.rollback()
        count = hs.check_index()
    print(
        f"{hs.index} now serves {serving} ({count} documents); {previous} is kept as {previous_alias(hs.index)} "
        "(roll back again to undo)"
    )
    return 0
