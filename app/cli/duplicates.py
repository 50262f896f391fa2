"""``hybrid-search duplicates``: mine near-duplicate document pairs from an index's vectors."""

from __future__ import annotations

import argparse
import sys

from hybrid_search.app.cli import options

HELP = "mine near-duplicate document pairs from an index's vectors"


def add_arguments(p: argparse.ArgumentParser) -> None:
    options.index_flag(p)
    p.add_argument("--threshold", type=float, default=0.8, help="minimum cosine similarity of a pair")
    p.add_argument("--top-k", type=int, default=10, help="neighbours looked at per document")
    p.add_argument("--confirm", action="store_true", help="score each kept pair with the cross-encoder too")
    p.add_argument("--out", default="pairs.csv", help="CSV of pairs with both texts")
    options.common(p)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from hybrid_search.app.duplicates import mine_duplicates, write_pairs

    with options.client(options.load(args)) as hs:
        total = hs.backend.count(hs.index)
        confirm = hs.reranker.score_pairs if args.confirm else None
        with tqdm(total=total, unit="doc", desc="duplicates", disable=args.quiet) as bar:
            pairs = mine_duplicates(
                hs.backend, hs.index, threshold=args.threshold, top_k=args.top_k, confirm=confirm, progress=bar.update
            )
        written = write_pairs(pairs, args.out)  # streamed from disk while the backend still serves the texts
        pairs.close()
    print(f"{written} pairs with similarity >= {args.threshold} among {total} documents -> {args.out}", file=sys.stderr)
    return 0
