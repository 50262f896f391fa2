"""``hybrid-search reindex``: re-encode an index's documents with another model, then swap the build in."""

from __future__ import annotations

import argparse

from hybrid_search.app.cli import options

HELP = "re-encode an index's documents with another model, then swap it in"


def add_arguments(p: argparse.ArgumentParser) -> None:
    options.index_flag(p)
    p.add_argument(
        "--sparse-model",
        dest="reindex_sparse_model",
        metavar="SPARSE_MODEL",
        help="re-encode the learned-sparse vectors with this model (a hub id, a folder, splade-tiny), or 'none' to "
        "drop the sparse field (default: keep the index's own sparse model)",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted reindex")
    options.force_unlock(p)
    options.batch_size(p)
    options.common(p)


def run(args: argparse.Namespace) -> int:
    from hybrid_search.config.errors import ConfigError

    sparse = args.reindex_sparse_model
    if not args.model and sparse is None:
        raise ConfigError(
            "reindex needs --model (the bi-encoder to re-encode with: a trained folder or hub id) or --sparse-model "
            "(the learned-sparse model, or none to drop the sparse field)"
        )
    if sparse is not None and sparse.strip().lower() == "none":
        sparse = ""
    settings = options.load(args)
    # the client reads the index with whatever model it holds; only the new build uses --model
    models = settings.models.model_copy(update={"bi_encoder": settings.models.model_fields["bi_encoder"].default})
    with options.client(settings.model_copy(update={"models": models})) as hs:
        hs.check_index()
        summary = hs.reindex(args.model, sparse_model=sparse, resume=args.resume, progress=not args.quiet)
        spec = hs.backend.index_spec(hs.index)
    used = spec.model if spec else str(args.model)
    if spec and spec.sparse_model:
        used += f" + sparse {spec.sparse_model}"
    print(
        f"reindexed {summary.alias} -> {summary.physical} with {used}: {summary.stored} documents "
        f"({summary.docs_per_s:.1f} docs/s); the previous build is kept as {summary.alias}-previous "
        "(hybrid-search rollback to serve it again)"
    )
    return 0
