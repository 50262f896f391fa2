"""``hybrid-search indexes``: every index on the backend, with its build, size, model and last write."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from hybrid_search.app.cli import options

HELP = "list the indexes: serving build, documents, size, model, last write, previous build"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    options.common(p)


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MiB"


def _when(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def run(args: argparse.Namespace) -> int:
    with options.client(options.load(args)) as hs:
        listed = hs.indexes()
    if args.json:
        print(json.dumps([i.to_dict() for i in listed]))
        return 0
    if not listed:
        print("no indexes (build one with `hybrid-search ingest SOURCE --index NAME`)")
        return 0
    rows = [("index", "serving build", "docs", "size", "model", "last write (UTC)", "previous build")]
    for i in listed:
        deleted = f" (+{i.deleted_documents} deleted)" if i.deleted_documents else ""
        rows.append(
            (
                i.name,
                i.physical,
                f"{i.count}{deleted}",
                _mib(i.store_bytes),
                i.model or "-",
                _when(i.last_write),
                i.previous or "-",
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    orphans = [o for i in listed for o in i.orphans]
    if orphans:
        print(f"{len(orphans)} orphan builds ({', '.join(orphans)}): `hybrid-search prune` removes them")
    return 0
