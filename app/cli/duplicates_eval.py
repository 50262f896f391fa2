"""``hybrid-search duplicates-eval``: average precision and best F1 of mined pairs on labelled pairs."""

from __future__ import annotations

import argparse

from hybrid_search.app.cli import options

NAME = "duplicates-eval"
HELP = "average precision and best F1 of mined pairs on labelled pairs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pairs", help="CSV with qid1, qid2, question1, question2, is_duplicate (Quora's pairs.csv)")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--max-pairs", type=int, help="use only the first N labelled pairs")
    p.add_argument("--json", dest="json_out", metavar="OUT")
    options.common(p)


def run(args: argparse.Namespace) -> int:
    from hybrid_search.app.duplicates_eval import run_duplicates_eval

    settings = options.load(args)
    options.quiet_model_loading()
    report = run_duplicates_eval(
        args.pairs, settings, top_k=args.top_k, max_pairs=args.max_pairs, progress=not args.quiet
    )
    options.emit_json(report, args.json_out)
    return 0
