"""``hybrid-search tune``: choose the pipeline's settings from judged queries, cross-validated."""

from __future__ import annotations

import argparse

from hybrid_search.app.cli import options

HELP = "choose the pipeline's settings from judged queries (cross-validated)"
METRICS = ["ndcg@10", "recall@100", "mrr@10"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="quora, nq, sample or a BEIR folder (with queries and qrels)")
    options.index_flag(p)
    p.add_argument("--split", default="test", help="qrels split to tune on (default: test)")
    p.add_argument("--metric", default="ndcg@10", choices=METRICS)
    p.add_argument("--folds", type=options.positive_int, default=5, help="cross-validation folds (default: 5)")
    p.add_argument(
        "--budget",
        type=_budget,
        default=DEFAULT_BUDGET,
        help=f"try a seeded sample of N settings, the fixed modes among them (default: {DEFAULT_BUDGET}, minutes on a "
        "CPU; 'all' for the whole grid, hours with reranking)",
    )
    p.add_argument(
        "--max-queries",
        type=options.positive_int,
        default=DEFAULT_MAX_QUERIES,
        metavar="N",
        help=f"use only the first N judged queries (default: {DEFAULT_MAX_QUERIES}; each one's cross-encoder pairs "
        "dominate the time)",
    )
    p.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        help="keep this fraction of queries out of tuning and report the profile on them (e.g. 0.5)",
    )
    p.add_argument(
        "--no-analyzer-check",
        dest="analyzer_check",
        action="store_false",
        help="skip measuring the other text analyzer (it streams the corpus into an in-memory BM25 index)",
    )
    p.add_argument(
        "--chunking-check",
        action="store_true",
        help="also measure chunking none and auto against the index's own (encodes the corpus once per "
        "chunking, cached; only where documents are longer than the model reads)",
    )
    legs_flag(p)
    p.add_argument("--out", default="profile.toml", help="the settings file to write (default: profile.toml)")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the report as JSON here")
    options.ingest_knobs(p)
    options.common(p)


DEFAULT_BUDGET = 120  # settings: with the cross-encoder's pairs cached, minutes on a 2-core CPU
DEFAULT_MAX_QUERIES = 300


def _budget(text: str) -> int | None:
    return None if text.strip().lower() == "all" else options.positive_int(text)


def legs_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--legs",
        type=options.comma_list,
        metavar="LEGS",
        help="search only settings over these legs, e.g. bm25,knn (default: every leg the index answers: "
        "bm25, knn, and sparse where it was ingested with --sparse-model)",
    )


def run(args: argparse.Namespace) -> int:
    from hybrid_search.app.evaluate import check_judged_documents, select_queries
    from hybrid_search.app.tune import tune, write_profile
    from hybrid_search.ingest.sources import open_query_set

    settings = options.load(args)
    query_set = open_query_set(args.source, args.split)
    queries = select_queries(query_set.queries, query_set.qrels, args.max_queries)
    with options.client(settings) as hs:
        options.ingest_unless_indexed(hs, args)
        check_judged_documents(hs, args.source, query_set.qrels, [q for q, _ in queries])
        report = tune(
            hs,
            queries,
            query_set.qrels,
            metric=args.metric,
            folds=args.folds,
            budget=args.budget,
            holdout=args.holdout,
            progress=not args.quiet,
            analyzer_check=args.analyzer_check,
            legs=args.legs,
            chunking_check=args.chunking_check,
        )
    write_profile(report, settings.search, args.out, source=args.source)
    print(report.table())
    print(
        f"profile written to {args.out}: use it with --config {args.out} (search, eval) or "
        "HybridSearch.from_settings(load_settings(...))"
    )
    options.write_json(report.to_dict(), args.json_out)
    return 0
