"""``hybrid-search eval``: nDCG@10, Recall@100, MRR@10 and latency per mode on judged queries."""

from __future__ import annotations

import argparse

from hybrid_search.app.cli import options

HELP = "measure nDCG@10, Recall@100, MRR@10 and latency per mode"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="quora, nq or a BEIR folder (with queries and qrels)")
    options.index_flag(p)
    p.add_argument("--modes", default="bm25,knn,hybrid,hybrid+rerank")
    p.add_argument("--split", default="test")
    p.add_argument(
        "--max-queries", type=options.positive_int, metavar="N", help="evaluate only the first N judged queries"
    )
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the report as JSON here")
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
    from hybrid_search.search.request import parse_mode

    settings = options.load(args)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in modes:
        parse_mode(mode)
    if settings.profile and "tuned" not in modes:
        modes.append("tuned")  # a tune profile: its whole pipeline gets a row beside the fixed modes
    hs = options.client(settings)
    try:
        options.ingest_unless_indexed(hs, args)
        report = hs.evaluate(
            args.source,
            modes=modes,
            split=args.split,
            max_queries=args.max_queries,
            ignore_identical_ids=not args.keep_identical_ids,
            progress=not args.quiet,
        )
        backend_name = hs.backend.name
    finally:
        options.close_client(hs)
    print(report.table())
    if args.json_out:
        payload = report.to_dict()
        payload["settings"] = {
            "source": args.source,
            "index": settings.index.name,
            "backend": backend_name,
            "split": args.split,
            "queries": next(iter(report.modes.values())).queries if report.modes else 0,
            "search": settings.search.model_dump(),
            "models": settings.models.model_dump(),
        }
        options.write_json(payload, args.json_out)
    return 0
