"""``hybrid-search reindex``: re-encode an index's documents with another model, then swap the build in."""

from __future__ import annotations

import argparse

from hybrid_search.app.cli import options

HELP = "re-encode an index's documents with another model, then swap it in"


def add_arguments(p: argparse.ArgumentParser) -> None:
    options.index_flag(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted reindex")
    options.force_unlock(p)
    options.batch_size(p)
    options.common(p)


def run(args: argparse.Namespace) -> int:
    from hybrid_search.config.errors import ConfigError

    if not args.model:
        raise ConfigError("reindex needs --model: the bi-encoder (a trained folder or hub id) to re-encode with")
    settings = options.load(args)
    # the client reads the index with whatever model it holds; only the new build uses --model
    models = settings.models.model_copy(update={"bi_encoder": settings.models.model_fields["bi_encoder"].default})
    with options.client(settings.model_copy(update={"models": models})) as hs:
        hs.check_index()
        summary = hs.reindex(args.model, resume=args.resume, progress=not args.quiet)
    print(
        f"reindexed {summary.alias} -> {summary.physical} with {args.model}: {summary.stored} documents "
        f"({summary.docs_per_s:.1f} docs/s); the previous build is kept as {summary.alias}-previous "
        "(hybrid-search rollback to serve it again)"
    )
    return 0
