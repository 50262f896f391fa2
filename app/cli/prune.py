"""``hybrid-search prune``: remove orphan builds, stale checkpoints and stale evaluation caches."""

from __future__ import annotations

import argparse
import json

from hybrid_search.app.cli import options

HELP = "remove orphan builds, stale checkpoints and stale evaluation caches; say what and how many bytes"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    options.common(p)


def run(args: argparse.Namespace) -> int:
    with options.client(options.load(args)) as hs:
        report = hs.prune(dry_run=args.dry_run)
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0
    verb = "would remove" if report.dry_run else "removed"
    for item in report.removed:
        print(f"{verb} {item}")
    for item in report.kept:
        print(f"kept {item}")
    print(f"{verb} {len(report.removed)} items, {report.bytes_freed / 2**20:.1f} MiB")
    return 0
