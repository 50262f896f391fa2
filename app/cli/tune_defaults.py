"""``hybrid-search tune-defaults``: choose default settings across several judged corpora (leave-one-out)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from hybrid_search.app.cli import options
from hybrid_search.app.cli.tune import METRICS, legs_flag

if TYPE_CHECKING:
    from hybrid_search.app.client import HybridSearch

NAME = "tune-defaults"
HELP = "choose default settings across several judged corpora (leave-one-set-out)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="+", help="two or more BEIR folders (or quora, nq, sample); each its own index")
    p.add_argument("--split", default="test", help="qrels split (default: test)")
    p.add_argument("--metric", default="ndcg@10", choices=METRICS)
    p.add_argument("--max-queries", type=options.positive_int, metavar="N", help="the first N judged queries of each")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the report as JSON here")
    legs_flag(p)
    p.add_argument(
        "--no-rerank",
        dest="rerank",
        action="store_false",
        help="choose the first stage only (no cross-encoder: minutes instead of tens of minutes on a CPU)",
    )
    p.add_argument(
        "--analyzers",
        type=options.comma_list,
        metavar="LIST",
        help="also compare these text analyzers on bm25, hybrid and hybrid+rerank at today's defaults, e.g. "
        "standard,english,folding (each set's corpus is streamed into an in-memory BM25 index per analyzer)",
    )
    options.ingest_knobs(p)
    options.common(p)


def run(args: argparse.Namespace) -> int:
    from hybrid_search.app.evaluate import check_judged_documents, select_queries
    from hybrid_search.app.tune_defaults import tune_defaults
    from hybrid_search.config.errors import ConfigError
    from hybrid_search.ingest.sources import open_query_set

    settings = options.load(args)
    clients: list[HybridSearch] = []
    sets = {}
    try:
        names = [Path(source.rstrip("/")).name for source in args.sources]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(
                f"set {', '.join(twice)} is named twice: each set is its own index, named by its folder, and "
                "weighs once in the mean; give each corpus once"
            )
        for source, name in zip(args.sources, names, strict=True):
            query_set = open_query_set(source, args.split)
            queries = select_queries(query_set.queries, query_set.qrels, args.max_queries)
            hs = options.client(settings, index=name)
            clients.append(hs)
            args.source = source
            options.ingest_unless_indexed(hs, args)
            check_judged_documents(hs, source, query_set.qrels, [q for q, _ in queries])
            sets[name] = (hs, queries, query_set.qrels)
        if args.analyzers:
            from hybrid_search.config.text import ANALYZERS

            unknown = [a for a in args.analyzers if a not in ANALYZERS]
            if unknown:
                raise ConfigError(f"--analyzers: unknown {', '.join(unknown)}; use some of {', '.join(ANALYZERS)}")
        report = tune_defaults(
            sets,
            metric=args.metric,
            progress=not args.quiet,
            legs=args.legs,
            rerank=args.rerank,
            analyzers=args.analyzers,
        )
    finally:
        for hs in clients:
            hs.close()
    print(f"{report['metric']}: chosen {report['chosen_labels'][0]} / {report['chosen_labels'][1]}")
    print(f"{'set':<28} {'default':>8} {'chosen':>8} {'l-o-o':>8} {'def+rr':>8} {'ch+rr':>8} {'l-o-o+rr':>8}")
    keys = ("current_default", "chosen", "leave_one_out", "current_default_rerank", "chosen_rerank")
    for name, row in report["sets"].items():
        print(f"{name:<28} " + " ".join(f"{row[k]:>8.4f}" for k in (*keys, "leave_one_out_rerank")))
    print(f"{'mean':<28} " + " ".join(f"{report['mean'][k]:>8.4f}" for k in keys))
    print(f"\nbest first stage within each mode ({report['metric']}, mean over the sets; l-o-o: leave-one-set-out)")
    for mode, row in report["by_mode"].items():
        print(f"  {mode:<16} {row['mean']:.4f}  l-o-o {row['leave_one_out']:.4f}  {row['chosen']}")
    for count, row in report["by_leg_count"].items():
        print(f"  best of {count} leg(s)   {row['mean']:.4f}  l-o-o {row['leave_one_out']:.4f}  {row['chosen']}")
    if report["analyzers"]:
        _print_analyzers(report["analyzers"], report["metric"])
    options.write_json(report, args.json_out)
    return 0


def _print_analyzers(a: dict, metric: str) -> None:
    labels = list(a["pipelines"])
    print(f"\nanalyzers ({metric}, mean over the sets at today's defaults; l-o-o: chosen on the others)")
    print(f"  {'analyzer':<12}" + "".join(f"{label:>16}" for label in labels))
    for analyzer, row in a["mean"].items():
        print(f"  {analyzer:<12}" + "".join(f"{row[label]:>16.4f}" for label in labels))
    print(f"  {'chosen':<12}" + "".join(f"{a['chosen'][label]:>16}" for label in labels))
    print(f"  {'l-o-o':<12}" + "".join(f"{a['leave_one_out'][label]['mean']:>16.4f}" for label in labels))
