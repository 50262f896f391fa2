"""``hybrid-search train``: fine-tune the bi-encoder or a cross-encoder, or adapt the bi-encoder to a corpus."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hybrid_search.app.cli import options

if TYPE_CHECKING:
    from hybrid_search.config.settings import Settings

HELP = "fine-tune the bi-encoder, a cross-encoder or a sparse encoder, or adapt to a corpus"


def _train_knobs(p: argparse.ArgumentParser, *, base_help: str) -> None:
    p.add_argument("--out", required=True, help="folder to write the model to (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace --out when training succeeds")
    p.add_argument("--base", help=base_help)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=options.positive_int, default=64)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--max-steps", type=options.positive_int, help="stop after N optimiser steps")
    p.add_argument("--max-pairs", type=options.positive_int, metavar="N", help="read only the first N pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--eval", dest="eval_source", metavar="SOURCE", help="BEIR folder: kNN (or rerank) quality before/after"
    )
    p.add_argument("--eval-max-queries", type=options.positive_int, metavar="N", help="judged queries --eval uses")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the summary as JSON here")
    options.common(p)


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_subparsers(dest="train_command", required=True, metavar="WHAT")
    t = what.add_parser("bi-encoder", help="fine-tune the bi-encoder on pairs (CSV / JSONL / Parquet / BEIR)")
    t.add_argument("pairs", help="question1,question2[,is_duplicate] | anchor,positive[,negative] | BEIR folder")
    t.add_argument("--loss", default="mnrl", choices=["mnrl", "online-contrastive", "multi-task"])
    t.add_argument("--hard-negatives", metavar="INDEX", help="mine a negative per anchor by kNN over this index")
    t.add_argument("--margin", type=float, default=None, help="mining: skip candidates above (1 - m) x positive")
    _train_knobs(t, base_help="model to start from (default: --model or the configured bi-encoder)")
    t = what.add_parser("cross-encoder", help="train a duplicate / not cross-encoder on labelled pairs")
    t.add_argument("pairs", help="question1,question2,is_duplicate or sentence1,sentence2,label")
    _train_knobs(t, base_help="model to start from (default: the configured bi-encoder's weights, new head)")
    t = what.add_parser("sparse", help="fine-tune a SPLADE sparse encoder on pairs (SpladeLoss, in-batch negatives)")
    t.add_argument("pairs", help="question1,question2[,is_duplicate] | anchor,positive[,negative] | BEIR folder")
    t.add_argument(
        "--query-regularizer", type=float, default=5e-5, help="FLOPS weight on query vectors (higher: sparser)"
    )
    t.add_argument(
        "--document-regularizer", type=float, default=3e-5, help="FLOPS weight on document vectors (higher: sparser)"
    )
    _train_knobs(t, base_help="SPLADE model to start from (default: --sparse-model setting, else splade-tiny)")
    t = what.add_parser("adapt", help="adapt the bi-encoder to an index's documents without labels")
    options.index_flag(t)
    t.add_argument("--method", default="simcse", choices=["simcse", "tsdae"])
    t.add_argument("--max-docs", type=options.positive_int, metavar="N", help="train on the first N stored documents")
    _train_knobs(t, base_help="model to start from (default: the model the index was built with)")


def run(args: argparse.Namespace) -> int:
    from hybrid_search.app import training as train

    settings = options.load(args)
    opts = train.TrainOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        max_steps=args.max_steps,
        seed=args.seed,
        device=settings.models.device,
        progress=not args.quiet,
    )
    options.quiet_model_loading()
    commands = {"bi-encoder": _bi_encoder, "cross-encoder": _cross_encoder, "sparse": _sparse, "adapt": _adapt}
    summary = commands[args.train_command](args, settings, opts)
    print(summary.text())
    options.write_json(summary.to_dict(), args.json_out)
    return 0


def _bi_encoder(args: argparse.Namespace, settings: Settings, opts: Any) -> Any:
    from hybrid_search.app import training as train
    from hybrid_search.config.errors import ConfigError

    pairs = train.read_pairs(args.pairs, max_pairs=args.max_pairs)
    triplets, mining = None, None
    if args.hard_negatives:
        if args.loss == "online-contrastive":
            raise ConfigError("--hard-negatives feeds the ranking loss: use --loss mnrl or multi-task")
        with options.client(settings, index=args.hard_negatives) as hs:
            hs.check_index()
            anchors, positives, _ = pairs.positives()
            margin = 0.05 if args.margin is None else args.margin
            triplets, report = train.mine_hard_negatives(hs, anchors, positives, margin=margin)
            mining = report.to_dict()
        if not triplets:
            raise ConfigError(f"no hard negative found in {args.hard_negatives} for any anchor: check the index")
    summary = train.train_bi_encoder(
        pairs,
        args.out,
        base=args.base or settings.models.bi_encoder,
        loss=args.loss,
        options=opts,
        triplets=triplets,
        overwrite=args.overwrite,
        evaluate=_knn_evaluator(args, settings),
    )
    summary.mining = mining
    return summary


def _cross_encoder(args: argparse.Namespace, settings: Settings, opts: Any) -> Any:
    from hybrid_search.app import training as train

    return train.train_cross_encoder(
        train.read_pairs(args.pairs, max_pairs=args.max_pairs),
        args.out,
        base=args.base or settings.models.bi_encoder,
        options=opts,
        overwrite=args.overwrite,
        evaluate=_rerank_evaluator(args, settings),
        reference=settings.models.cross_encoder,
    )


def _sparse(args: argparse.Namespace, settings: Settings, opts: Any) -> Any:
    from hybrid_search.app import training as train

    evaluate = None
    if args.eval_source:
        evaluate = lambda folder: train.sparse_quality(
            folder, args.eval_source, max_queries=args.eval_max_queries, device=settings.models.device
        )
    return train.train_sparse_encoder(
        train.read_pairs(args.pairs, max_pairs=args.max_pairs),
        args.out,
        base=args.base or settings.models.sparse_encoder or "splade-tiny",
        options=opts,
        overwrite=args.overwrite,
        evaluate=evaluate,
        query_regularizer=args.query_regularizer,
        document_regularizer=args.document_regularizer,
    )


def _adapt(args: argparse.Namespace, settings: Settings, opts: Any) -> Any:
    from hybrid_search.app import training as train

    with options.client(settings) as hs:
        hs.check_index()
        base = args.base or hs.index_model() or settings.models.bi_encoder
        texts = train.index_passages(hs, limit=args.max_docs)
    return train.adapt(
        texts,
        args.out,
        base=base,
        method=args.method,
        options=opts,
        overwrite=args.overwrite,
        evaluate=_knn_evaluator(args, settings),
    )


def _knn_evaluator(args: argparse.Namespace, settings: Settings) -> Callable[[str], Any] | None:
    if not args.eval_source:
        return None
    from hybrid_search.app.training import knn_quality

    return lambda folder: knn_quality(
        folder, args.eval_source, max_queries=args.eval_max_queries, device=settings.models.device
    )


def _rerank_evaluator(args: argparse.Namespace, settings: Settings) -> Callable[[str], Any] | None:
    if not args.eval_source:
        return None
    from hybrid_search.app.training import rerank_quality

    return lambda folder: rerank_quality(
        folder,
        args.eval_source,
        bi_encoder=settings.models.bi_encoder,
        max_queries=args.eval_max_queries,
        device=settings.models.device,
    )
