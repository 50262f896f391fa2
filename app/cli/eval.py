"""``hybrid-search eval``: nDCG@10, Recall@100, MRR@10 and latency per mode on judged queries."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from hybrid_search.app.cli import options

if TYPE_CHECKING:
    from hybrid_search.app.evaluate import ModeReport
    from hybrid_search.config.settings import Settings

HELP = "measure nDCG@10, Recall@100, MRR@10 and latency per mode"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="quora, nq or a BEIR folder (with queries and qrels)")
    options.index_flag(p)
    p.add_argument("--modes", default="bm25,knn,hybrid,hybrid+rerank")
    p.add_argument("--split", default="test")
    p.add_argument(
        "--max-queries", type=options.positive_int, metavar="N", help="evaluate only the first N judged queries"
    )
    p.add_argument(
        "--json",
        dest="json_out",
        metavar="OUT",
        help="write the report as JSON here (rewritten as each mode completes)",
    )
    p.add_argument(
        "--runs", dest="runs_dir", metavar="DIR", help="write each mode's TREC run file and per-query metrics here"
    )
    p.add_argument(
        "--no-cache",
        dest="cache",
        action="store_false",
        help="run every query again (by default each query's run is kept under DATA_DIR/eval-cache, and a rerun "
        "of the same mode and build skips it)",
    )
    p.add_argument(
        "--keep-identical-ids",
        action="store_true",
        help="do not drop documents whose id equals the query id (BEIR drops them)",
    )
    options.search_knobs(p)
    options.ingest_knobs(p)
    options.log_knobs(p)
    options.common(p)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hybrid_search.app.evaluate import EvalOutputs, table_header, table_row
    from hybrid_search.search.request import parse_mode

    settings = options.load(args)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in modes:
        parse_mode(mode)
    if settings.profile and "tuned" not in modes:
        modes.append("tuned")  # a tune profile: its whole pipeline gets a row beside the fixed modes
    done: dict[str, ModeReport] = {}
    hs = options.client(settings)

    def on_mode(mode: str, report: ModeReport) -> None:
        # each mode's row and JSON the moment it is done: stopping a long mode keeps the finished ones
        if not done:
            print(table_header(), flush=True)
        done[mode] = report
        print(table_row(mode, report), flush=True)
        if args.json_out:
            _write_json(args, settings, hs.backend.name, done, complete=len(done) == len(modes))

    outputs = EvalOutputs(
        cache=args.cache,
        runs_dir=Path(args.runs_dir) if args.runs_dir else None,
        on_estimate=None if args.quiet else lambda seconds: _print_estimate(seconds, args.max_queries),
        on_mode=on_mode,
    )
    try:
        options.ingest_unless_indexed(hs, args)
        hs.evaluate(
            args.source,
            modes=modes,
            split=args.split,
            max_queries=args.max_queries,
            ignore_identical_ids=not args.keep_identical_ids,
            progress=not args.quiet,
            outputs=outputs,
        )
    finally:
        options.close_client(hs)
    return 0


def _print_estimate(seconds: Mapping[str, float], max_queries: int | None) -> None:
    from hybrid_search.app.eval_runs import format_seconds

    total = sum(seconds.values())
    parts = ", ".join(f"{mode} {format_seconds(s)}" for mode, s in seconds.items())
    print(f"estimated time left: {parts} (total {format_seconds(total)})", file=sys.stderr, flush=True)
    if total > 30 * 60:
        advice = "a smaller --max-queries" if max_queries else "--max-queries 200 (or another N)"
        print(
            f"that is {format_seconds(total)}: try {advice} for a quicker estimate; each finished query is cached, "
            "so stopping and rerunning loses nothing",
            file=sys.stderr,
            flush=True,
        )


def _write_json(
    args: argparse.Namespace, settings: Settings, backend: str, done: Mapping[str, ModeReport], *, complete: bool
) -> None:
    from hybrid_search.app.evaluate import EvalReport

    payload = EvalReport(modes=dict(done)).to_dict()
    payload["settings"] = {
        "source": args.source,
        "index": settings.index.name,
        "backend": backend,
        "split": args.split,
        "queries": next(iter(done.values())).queries if done else 0,
        "search": settings.search.model_dump(),
        "models": settings.models.model_dump(),
    }
    payload["complete"] = complete  # false while modes are still running (or after a stop)
    options.write_json(payload, args.json_out)
