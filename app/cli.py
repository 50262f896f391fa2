"""The ``hybrid-search`` command line.

Each subcommand imports what it needs when it runs, so ``hybrid-search --help`` loads no torch, no
transformers and no engine client. Errors reach the user as one line saying what to do; ``--debug`` shows
the traceback. This module owns logging configuration; library modules never set log levels.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hybrid_search.config.settings import IndexSettings, SearchSettings
from hybrid_search.search.searcher import check_query, parse_mode

__all__ = ["build_parser", "main"]

log = logging.getLogger("hybrid-search")

_SEARCH = SearchSettings()
DEFAULT_NOTE = f"(default: {IndexSettings().name})"
INDEX_HELP = f"index (alias) name {DEFAULT_NOTE}"


# --- parser ---------------------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("common")
    g.add_argument("--config", help="settings file (.toml or .yaml); also HYBRID_SEARCH_CONFIG")
    g.add_argument("--data-dir", help="where the embedded backend, checkpoints and rejects live")
    g.add_argument("--backend", choices=["embedded", "elasticsearch", "opensearch"])
    g.add_argument("--url", help="cluster URL(s), comma-separated (credentials come from the environment)")
    g.add_argument("--model", help="bi-encoder: hub id or local folder")
    g.add_argument("--cross-encoder", help="cross-encoder: hub id or local folder")
    g.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    g.add_argument("-v", "--verbose", action="store_true", help="also show informational logs")
    g.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _search_knobs(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("retrieval")
    g.add_argument("--fusion", choices=["rrf", "linear"])
    g.add_argument("--rrf-k", type=int)
    g.add_argument("--normalizer", choices=["minmax", "zscore", "l2"])
    g.add_argument("--bm25-weight", type=float)
    g.add_argument("--knn-weight", type=float)
    g.add_argument("--rerank-depth", type=int, help="how many top hits the cross-encoder rescores")
    g.add_argument("--num-candidates", type=int, help="HNSW candidate pool per kNN query")
    g.add_argument("--client-fusion", action="store_true", help="fuse in the client even if the server can")


def _force_unlock(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--force-unlock",
        action="store_true",
        default=None,
        help="break a cluster writer lock whose holder is gone (embedded locks end with their process)",
    )


def _ingest_knobs(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ingest")
    g.add_argument("--resume", action="store_true", help="continue an interrupted ingest of this index")
    _force_unlock(g)
    g.add_argument("--strict", action="store_true", default=None, help="the first bad record is fatal")
    g.add_argument(
        "--no-field-check",
        action="store_true",
        help="skip the check that --text-field and --metadata-fields appear among the first 1,000 records",
    )
    g.add_argument(
        "--allow-shrink",
        action="store_true",
        default=None,
        help="serve a build even if it holds far fewer documents than the alias serves now",
    )
    g.add_argument("--batch-size", type=int, help="documents per encode + upsert step")
    g.add_argument(
        "--bulk-workers", type=_positive_int, help="concurrent bulk requests to a cluster per upsert (default 2)"
    )
    g.add_argument("--analyzer", choices=["standard", "english"])
    g.add_argument("--id-field", help="id field of JSONL/CSV/Parquet records (default: _id, then id)")
    g.add_argument("--title-field", default="title")
    g.add_argument("--text-field", default="text")
    g.add_argument("--metadata-fields", default="", help="comma-separated fields kept as filterable metadata")
    g.add_argument(
        "--vector-field",
        help="a field holding each record's precomputed embedding (from --model): checked and stored, not encoded",
    )


def _log_knobs(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("query log")
    g.add_argument(
        "--log-queries",
        action="store_true",
        default=None,
        help="record each search in <index>-queries (also HYBRID_SEARCH_LOGS__QUERIES=true)",
    )
    g.add_argument("--no-query-text", action="store_true", help="log searches without their query text")


def _train_knobs(p: argparse.ArgumentParser, *, base_help: str) -> None:
    p.add_argument("--out", required=True, help="folder to write the model to (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace --out when training succeeds")
    p.add_argument("--base", help=base_help)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--max-steps", type=_positive_int, help="stop after N optimiser steps")
    p.add_argument("--max-pairs", type=_positive_int, metavar="N", help="read only the first N pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--eval", dest="eval_source", metavar="SOURCE", help="BEIR folder: kNN (or rerank) quality before/after"
    )
    p.add_argument("--eval-max-queries", type=_positive_int, metavar="N", help="judged queries --eval uses")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the summary as JSON here")
    _common(p)


def _int_list(text: str) -> list[int]:
    """An argparse type: comma-separated whole numbers of at least 1, e.g. ``1,2,4,8``."""
    return [_positive_int(part.strip()) for part in text.split(",") if part.strip()] or [_positive_int(text)]


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (argparse turns the error into a usage line)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybrid-search",
        description="Hybrid BM25 + dense search with fusion and cross-encoder reranking.",
    )
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("hybrid-search")
    except PackageNotFoundError:
        installed = "unknown"
    parser.add_argument("--version", action="version", version=f"hybrid-search {installed}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("ingest", help="read, encode and index a corpus")
    p.add_argument("source", help="quora, nq, sample (bundled), a BEIR folder, or a .jsonl/.csv/.parquet file")
    p.add_argument("--index", help=INDEX_HELP)
    _ingest_knobs(p)
    _common(p)

    p = sub.add_parser("search", help="search an index")
    p.add_argument("query")
    p.add_argument("--index", help=INDEX_HELP)
    p.add_argument("--mode", help=f"bm25, knn or hybrid, optionally +rerank (default: {_SEARCH.mode})")
    p.add_argument("--rerank", action="store_true", default=None)
    p.add_argument("--top-k", type=_positive_int, help=f"hits to return (default: {_SEARCH.top_k})")
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="metadata filter; repeat for AND, separate values by | for any-of",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _search_knobs(p)
    _log_knobs(p)
    _common(p)

    p = sub.add_parser("eval", help="measure nDCG@10, Recall@100, MRR@10 and latency per mode")
    p.add_argument("source", help="quora, nq or a BEIR folder (with queries and qrels)")
    p.add_argument("--index", help=INDEX_HELP)
    p.add_argument("--modes", default="bm25,knn,hybrid,hybrid+rerank")
    p.add_argument("--split", default="test")
    p.add_argument("--max-queries", type=_positive_int, metavar="N", help="evaluate only the first N judged queries")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the report as JSON here")
    p.add_argument(
        "--keep-identical-ids",
        action="store_true",
        help="do not drop documents whose id equals the query id (BEIR drops them)",
    )
    _search_knobs(p)
    _ingest_knobs(p)
    _log_knobs(p)
    _common(p)

    p = sub.add_parser("tune", help="choose the pipeline's settings from judged queries (cross-validated)")
    p.add_argument("source", help="quora, nq, sample or a BEIR folder (with queries and qrels)")
    p.add_argument("--index", help=INDEX_HELP)
    p.add_argument("--split", default="test", help="qrels split to tune on (default: test)")
    p.add_argument("--metric", default="ndcg@10", choices=["ndcg@10", "recall@100", "mrr@10"])
    p.add_argument("--folds", type=_positive_int, default=5, help="cross-validation folds (default: 5)")
    p.add_argument("--budget", type=_positive_int, help="try a seeded sample of N settings (default: all)")
    p.add_argument("--max-queries", type=_positive_int, metavar="N", help="use only the first N judged queries")
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
    p.add_argument("--out", default="profile.toml", help="the settings file to write (default: profile.toml)")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the report as JSON here")
    _ingest_knobs(p)
    _common(p)

    p = sub.add_parser(
        "tune-defaults", help="choose default settings across several judged corpora (leave-one-set-out)"
    )
    p.add_argument("sources", nargs="+", help="two or more BEIR folders (or quora, nq, sample); each its own index")
    p.add_argument("--split", default="test", help="qrels split (default: test)")
    p.add_argument("--metric", default="ndcg@10", choices=["ndcg@10", "recall@100", "mrr@10"])
    p.add_argument("--max-queries", type=_positive_int, metavar="N", help="the first N judged queries of each set")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the report as JSON here")
    _ingest_knobs(p)
    _common(p)

    p = sub.add_parser("inspect", help="show an index: alias, size, vector field, mapping, last ingest, query log")
    p.add_argument("--index", help=INDEX_HELP)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    _common(p)

    p = sub.add_parser("rollback", help="serve the previous build of an index again (run twice to undo)")
    p.add_argument("--index", help=INDEX_HELP)
    _force_unlock(p)
    _common(p)

    p = sub.add_parser("repair", help="rebuild an embedded index's vector graph from its stored vectors")
    p.add_argument("--index", help=INDEX_HELP)
    _common(p)

    p = sub.add_parser("reindex", help="re-encode an index's documents with another model, then swap it in")
    p.add_argument("--index", help=INDEX_HELP)
    p.add_argument("--resume", action="store_true", help="continue an interrupted reindex")
    _force_unlock(p)
    p.add_argument("--batch-size", type=int, help="documents per encode + upsert step")
    _common(p)

    p = sub.add_parser("train", help="fine-tune the bi-encoder or a cross-encoder, or adapt to a corpus")
    tsub = p.add_subparsers(dest="train_command", required=True, metavar="WHAT")
    t = tsub.add_parser("bi-encoder", help="fine-tune the bi-encoder on pairs (CSV / JSONL / Parquet / BEIR)")
    t.add_argument("pairs", help="question1,question2[,is_duplicate] | anchor,positive[,negative] | BEIR folder")
    t.add_argument("--loss", default="mnrl", choices=["mnrl", "online-contrastive", "multi-task"])
    t.add_argument("--hard-negatives", metavar="INDEX", help="mine a negative per anchor by kNN over this index")
    t.add_argument("--margin", type=float, default=None, help="mining: skip candidates above (1 - m) x positive")
    _train_knobs(t, base_help="model to start from (default: --model or the configured bi-encoder)")
    t = tsub.add_parser("cross-encoder", help="train a duplicate / not cross-encoder on labelled pairs")
    t.add_argument("pairs", help="question1,question2,is_duplicate or sentence1,sentence2,label")
    _train_knobs(t, base_help="model to start from (default: the configured bi-encoder's weights, new head)")
    t = tsub.add_parser("adapt", help="adapt the bi-encoder to an index's documents without labels")
    t.add_argument("--index", help=INDEX_HELP)
    t.add_argument("--method", default="simcse", choices=["simcse", "tsdae"])
    t.add_argument("--max-docs", type=_positive_int, metavar="N", help="train on the first N stored documents")
    _train_knobs(t, base_help="model to start from (default: the model the index was built with)")

    p = sub.add_parser("dashboards", help="Kibana / OpenSearch Dashboards saved objects")
    dsub = p.add_subparsers(dest="dashboards_command", required=True, metavar="ACTION")
    d = dsub.add_parser("install", help="import the data views, visualizations and dashboard (overwrites)")
    where = d.add_mutually_exclusive_group(required=True)
    where.add_argument("--kibana-url", help="Kibana, e.g. http://localhost:5601")
    where.add_argument("--dashboards-url", help="OpenSearch Dashboards, e.g. http://localhost:5602")
    d.add_argument(
        "--index", help=f"corpus alias the objects are for, and its -queries and -ingest logs {DEFAULT_NOTE}"
    )
    d.add_argument("--space", help="Kibana space (default: the default space)")
    d.add_argument("--username", help="user for basic auth; the password comes from HYBRID_SEARCH_PASSWORD")
    d.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep trying a product that does not answer yet for this long (default: fail at once)",
    )
    _common(d)

    p = sub.add_parser("duplicates", help="mine near-duplicate document pairs from an index's vectors")
    p.add_argument("--index", help=INDEX_HELP)
    p.add_argument("--threshold", type=float, default=0.8, help="minimum cosine similarity of a pair")
    p.add_argument("--top-k", type=int, default=10, help="neighbours looked at per document")
    p.add_argument("--confirm", action="store_true", help="score each kept pair with the cross-encoder too")
    p.add_argument("--out", default="pairs.csv", help="CSV of pairs with both texts")
    _common(p)

    p = sub.add_parser("duplicates-eval", help="average precision and best F1 of mined pairs on labelled pairs")
    p.add_argument("pairs", help="CSV with qid1, qid2, question1, question2, is_duplicate (Quora's pairs.csv)")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--max-pairs", type=int, help="use only the first N labelled pairs")
    p.add_argument("--json", dest="json_out", metavar="OUT")
    _common(p)

    p = sub.add_parser("bench", help="throughput and latency, each beside a reference in the same run")
    p.add_argument("what", choices=["encode", "rerank", "search", "querylog", "duplicates", "scale"])
    p.add_argument("--source", help="corpus to draw texts from (default: the bundled sample)")
    p.add_argument(
        "--docs",
        type=_int_list,
        default=None,
        help="texts (or pairs) to time; for scale, corpus sizes, e.g. 10000,100000,1000000",
    )
    p.add_argument("--concurrency", type=_int_list, help="search: searches in flight, e.g. 1,2,4,8")
    p.add_argument("--modes", help="search --concurrency: modes to run (default: bm25,knn,hybrid)")
    p.add_argument("--neighbour", action="store_true", help="search --concurrency: also beside a CPU-bound process")
    p.add_argument("--threads", type=int, help="CPU threads per search (search.threads; 0: all cores)")
    p.add_argument("--dtypes", help="encode / rerank: run once per precision, e.g. float16,bfloat16 (CUDA) or float32")
    p.add_argument("--plot", metavar="PNG", help="scale: draw each cost against corpus size (needs matplotlib)")
    p.add_argument("--batch-size", type=int, default=32, help="reference batch size")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--index", help=INDEX_HELP)
    p.add_argument("--queries", type=int, default=50, help="queries per mode (search bench)")
    p.add_argument("--json", dest="json_out", metavar="OUT")
    _common(p)
    return parser


# --- settings and components ----------------------------------------------------------------------
def _settings(args: argparse.Namespace) -> Any:
    from hybrid_search.config.settings import load_settings

    g = vars(args)
    mode, rerank = g.get("mode"), g.get("rerank")
    if mode:
        mode, in_mode = parse_mode(mode)
        rerank = True if in_mode else rerank
    overrides = {
        "data_dir": g.get("data_dir"),
        "backend": {
            "kind": g.get("backend"),
            "urls": g.get("url"),
            "username": g.get("username"),
            "bulk_workers": g.get("bulk_workers"),
        },
        "models": {"bi_encoder": g.get("model"), "cross_encoder": g.get("cross_encoder"), "device": g.get("device")},
        "index": {"name": g.get("index"), "analyzer": g.get("analyzer")},
        "logs": {"queries": g.get("log_queries"), "query_text": False if g.get("no_query_text") else None},
        "ingest": {
            "batch_size": g.get("batch_size") if args.command != "bench" else None,
            "strict": g.get("strict"),
            "allow_shrink": g.get("allow_shrink"),
            "check_fields": False if g.get("no_field_check") else None,
            "force_unlock": g.get("force_unlock"),
        },
        "search": {
            "fusion": g.get("fusion"),
            "rrf_k": g.get("rrf_k"),
            "normalizer": g.get("normalizer"),
            "bm25_weight": g.get("bm25_weight"),
            "knn_weight": g.get("knn_weight"),
            "rerank_depth": g.get("rerank_depth"),
            "num_candidates": g.get("num_candidates"),
            "top_k": g.get("top_k"),
            "mode": mode,
            "rerank": rerank,
            "server_fusion": False if g.get("client_fusion") else None,
        },
    }
    return load_settings(g.get("config"), overrides)


def _field_map(args: argparse.Namespace) -> Any:
    from hybrid_search.ingest.sources import FieldMap

    ids = (args.id_field,) if args.id_field else ("_id", "id")
    meta = tuple(f.strip() for f in args.metadata_fields.split(",") if f.strip())
    return FieldMap(
        id_fields=ids,
        title_field=args.title_field,
        text_field=args.text_field,
        metadata_fields=meta,
        vector_field=args.vector_field or None,
    )


def _quiet_model_loading() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _client(settings: Any, index: str | None = None) -> Any:
    from hybrid_search.app.client import HybridSearch

    _quiet_model_loading()
    return HybridSearch.from_settings(settings, index=index)


def _reranker(settings: Any) -> Any:
    from hybrid_search.rerank.cross_encoder import CrossEncoderReranker

    _quiet_model_loading()
    return CrossEncoderReranker(settings=settings.models)


def _ingest(hs: Any, args: argparse.Namespace) -> Any:
    summary = hs.ingest(args.source, fields=_field_map(args), resume=args.resume, progress=not args.quiet)
    print(
        f"ingested {summary.alias} -> {summary.physical}: read {summary.read}, stored {summary.stored}, "
        f"rejected {summary.rejected}, truncated {summary.truncated}, {summary.docs_per_s:.1f} docs/s "
        f"({summary.seconds:.1f} s)" + (f"; rejects in {summary.rejects_path}" if summary.rejected else ""),
        file=sys.stderr,
    )
    return summary


def _ingest_unless_indexed(hs: Any, args: argparse.Namespace) -> None:
    """``eval`` and ``tune`` ingest their source first when the index is missing (or ``--resume`` is given)."""
    if args.resume or not hs.exists():
        _ingest(hs, args)


def _close_client(hs: Any) -> None:
    """Close the client; say where the query log went and what it could not write."""
    query_log = hs._query_log
    hs.close()
    if query_log is not None:
        s = query_log.stats
        print(
            f"query log {query_log.name} at {query_log.sink.location}: {s.written} written, {s.dropped} dropped, "
            f"{s.failed} failed of {s.recorded}",
            file=sys.stderr,
        )


# --- commands -------------------------------------------------------------------------------------
def cmd_ingest(args: argparse.Namespace) -> int:
    with _client(_settings(args)) as hs:
        summary = _ingest(hs, args)
    print(json.dumps(summary.to_dict()))
    return 0


def _parse_filters(items: Sequence[str]) -> dict[str, Any] | None:
    from hybrid_search.config.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--filter {item!r}: write FIELD=VALUE (or FIELD=A|B for any of several)")
        out[name] = value.split("|") if "|" in value else value
    return out or None


def cmd_search(args: argparse.Namespace) -> int:
    settings = _settings(args)
    base, rerank_in_mode = parse_mode(settings.search.mode)
    check_query(args.query, settings.search.max_query_chars)
    text_filters = _parse_filters(args.filter)
    hs = _client(settings)
    try:
        hs.check_index()  # a missing index or an unreachable cluster is reported before any model loads
        filters = None
        if text_filters:
            from hybrid_search.search.filters import coerce_text_filters

            filters = coerce_text_filters(text_filters, hs.field_types())  # "2019" -> 2019 for a numeric field
            hs.check_filters(filters)
        hs.warm_up(rerank=rerank_in_mode or settings.search.rerank)  # loading is not part of the search time
        result = hs.search(args.query, filters=filters)
        _print_result(result, settings.index.name, as_json=args.json)
    finally:
        _close_client(hs)  # its query-log summary comes after the results
    return 0


def _print_result(result: Any, index: str, *, as_json: bool) -> None:
    if as_json:
        from dataclasses import asdict

        print(json.dumps(asdict(result), default=str, ensure_ascii=False), flush=True)
        return
    print(
        f"{result.mode} on {index}: {len(result.hits)} hits in {result.timings_ms['total']:.1f} ms"
        + (f" (fusion: {result.fusion_location})" if result.fusion_location else "")
    )
    for hit in result.hits:
        stages = " ".join(
            f"{name}={value:.3f}"
            for name, value in (
                ("bm25", hit.bm25_score),
                ("knn", hit.knn_score),
                ("fused", hit.fusion_score),
                ("rerank", hit.rerank_score),
            )
            if value is not None
        )
        text = f"{hit.title}: {hit.text}" if hit.title else hit.text
        print(f"{hit.rank:>3}. [{hit.doc_id}] {hit.score:.4f}  {stages}\n     {text[:160]}")
    sys.stdout.flush()


def cmd_eval(args: argparse.Namespace) -> int:
    settings = _settings(args)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in modes:
        parse_mode(mode)
    if settings.profile and "tuned" not in modes:
        modes.append("tuned")  # a tune profile: its whole pipeline gets a row beside the fixed modes
    hs = _client(settings)
    try:
        _ingest_unless_indexed(hs, args)
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
        _close_client(hs)
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
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, default=str)
    return 0


def _emit_json(report: dict[str, Any], path: str | None) -> None:
    """Print a JSON report, and write it to ``path`` when one is given."""
    text = json.dumps(report, indent=2)
    print(text)
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")


def cmd_bench(args: argparse.Namespace) -> int:
    from hybrid_search.app.bench import run_bench

    settings = _settings(args)
    _quiet_model_loading()
    if args.threads is not None:
        settings = settings.model_copy(update={"search": settings.search.model_copy(update={"threads": args.threads})})
    if args.what == "scale":
        from hybrid_search.app.scale import bench_scale

        report = bench_scale(
            settings, args.docs or [10_000, 100_000], queries=args.queries, plot=args.plot, progress=not args.quiet
        )
        _emit_json(report, args.json_out)
        return 0
    modes = [m.strip() for m in args.modes.split(",") if m.strip()] if args.modes else []
    for mode in modes:
        parse_mode(mode)
    report = run_bench(
        args.what,
        settings,
        source=args.source,
        docs=(args.docs or [512])[0],
        batch_size=args.batch_size,
        repeats=args.repeats,
        queries=args.queries,
        concurrency=args.concurrency or (),
        modes=modes,
        neighbour=args.neighbour,
        dtypes=[d.strip() for d in args.dtypes.split(",") if d.strip()] if args.dtypes else (),
    )
    _emit_json(report, args.json_out)
    return 0


def cmd_duplicates(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from hybrid_search.app.duplicates import mine_duplicates, write_pairs

    with _client(_settings(args)) as hs:
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


def cmd_duplicates_eval(args: argparse.Namespace) -> int:
    from hybrid_search.app.duplicates_eval import run_duplicates_eval

    settings = _settings(args)
    _quiet_model_loading()
    report = run_duplicates_eval(
        args.pairs, settings, top_k=args.top_k, max_pairs=args.max_pairs, progress=not args.quiet
    )
    _emit_json(report, args.json_out)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from hybrid_search.app.evaluate import select_queries
    from hybrid_search.app.tune import tune, write_profile
    from hybrid_search.ingest.sources import open_query_set

    settings = _settings(args)
    query_set = open_query_set(args.source, args.split)
    queries = select_queries(query_set.queries, query_set.qrels, args.max_queries)
    with _client(settings) as hs:
        _ingest_unless_indexed(hs, args)
        hs.check_judged_documents(args.source, query_set.qrels, [q for q, _ in queries])
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
        )
    write_profile(report, settings.search, args.out, source=args.source)
    print(report.table())
    print(
        f"profile written to {args.out}: use it with --config {args.out} (search, eval) or "
        "HybridSearch.from_settings(load_settings(...))"
    )
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump(report.to_dict(), fh, indent=2, default=str)
    return 0


def cmd_tune_defaults(args: argparse.Namespace) -> int:
    from hybrid_search.app.evaluate import select_queries
    from hybrid_search.app.tune import tune_defaults
    from hybrid_search.ingest.sources import open_query_set

    settings = _settings(args)
    clients, sets = [], {}
    try:
        for source in args.sources:
            name = Path(source.rstrip("/")).name
            query_set = open_query_set(source, args.split)
            queries = select_queries(query_set.queries, query_set.qrels, args.max_queries)
            hs = _client(settings, index=name)
            clients.append(hs)
            args.source = source
            _ingest_unless_indexed(hs, args)
            hs.check_judged_documents(source, query_set.qrels, [q for q, _ in queries])
            sets[name] = (hs, queries, query_set.qrels)
        report = tune_defaults(sets, metric=args.metric, progress=not args.quiet)
    finally:
        for hs in clients:
            hs.close()
    print(f"{report['metric']}: chosen {report['chosen_labels'][0]} / {report['chosen_labels'][1]}")
    print(f"{'set':<28} {'default':>8} {'chosen':>8} {'l-o-o':>8} {'def+rr':>8} {'ch+rr':>8} {'l-o-o+rr':>8}")
    keys = ("current_default", "chosen", "leave_one_out", "current_default_rerank", "chosen_rerank")
    for name, row in report["sets"].items():
        print(f"{name:<28} " + " ".join(f"{row[k]:>8.4f}" for k in (*keys, "leave_one_out_rerank")))
    print(f"{'mean':<28} " + " ".join(f"{report['mean'][k]:>8.4f}" for k in keys))
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2, default=str)
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    from hybrid_search.config.errors import ConfigError

    if not args.model:
        raise ConfigError("reindex needs --model: the bi-encoder (a trained folder or hub id) to re-encode with")
    settings = _settings(args)
    # the client reads the index with whatever model it holds; only the new build uses --model
    models = settings.models.model_copy(update={"bi_encoder": settings.models.model_fields["bi_encoder"].default})
    with _client(settings.model_copy(update={"models": models})) as hs:
        hs.check_index()
        summary = hs.reindex(args.model, resume=args.resume, progress=not args.quiet)
    print(
        f"reindexed {summary.alias} -> {summary.physical} with {args.model}: {summary.stored} documents "
        f"({summary.docs_per_s:.1f} docs/s); the previous build is kept as {summary.alias}-previous "
        "(hybrid-search rollback to serve it again)"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from hybrid_search.app import train
    from hybrid_search.config.errors import ConfigError

    settings = _settings(args)
    options = train.TrainOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        max_steps=args.max_steps,
        seed=args.seed,
        device=settings.models.device,
        progress=not args.quiet,
    )
    _quiet_model_loading()
    what = args.train_command
    if what == "bi-encoder":
        pairs = train.read_pairs(args.pairs, max_pairs=args.max_pairs)
        evaluate = _knn_evaluator(args, settings)
        triplets, mining = None, None
        base = args.base or settings.models.bi_encoder
        if args.hard_negatives:
            if args.loss == "online-contrastive":
                raise ConfigError("--hard-negatives feeds the ranking loss: use --loss mnrl or multi-task")
            with _client(settings, index=args.hard_negatives) as hs:
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
            base=base,
            loss=args.loss,
            options=options,
            triplets=triplets,
            overwrite=args.overwrite,
            evaluate=evaluate,
        )
        summary.mining = mining
    elif what == "cross-encoder":
        pairs = train.read_pairs(args.pairs, max_pairs=args.max_pairs)
        summary = train.train_cross_encoder(
            pairs,
            args.out,
            base=args.base or settings.models.bi_encoder,
            options=options,
            overwrite=args.overwrite,
            evaluate=_rerank_evaluator(args, settings),
            reference=settings.models.cross_encoder,
        )
    else:
        with _client(settings) as hs:
            hs.check_index()
            spec = hs.backend.index_spec(hs.index)
            base = args.base or (spec.model if spec is not None and spec.model else settings.models.bi_encoder)
            texts = []
            for batch in hs.backend.iter_documents(hs.index):
                texts += [f"{d.title} {d.text}".strip() for d in batch]
                if args.max_docs and len(texts) >= args.max_docs:
                    break
        summary = train.adapt(
            texts[: args.max_docs] if args.max_docs else texts,
            args.out,
            base=base,
            method=args.method,
            options=options,
            overwrite=args.overwrite,
            evaluate=_knn_evaluator(args, settings),
        )
    print(summary.text())
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump(summary.to_dict(), fh, indent=2, default=str)
    return 0


def _knn_evaluator(args: argparse.Namespace, settings: Any) -> Any:
    if not args.eval_source:
        return None
    from hybrid_search.app.train import knn_quality

    return lambda folder: knn_quality(
        folder, args.eval_source, max_queries=args.eval_max_queries, device=settings.models.device
    )


def _rerank_evaluator(args: argparse.Namespace, settings: Any) -> Any:
    if not args.eval_source:
        return None
    from hybrid_search.app.train import rerank_quality

    return lambda folder: rerank_quality(
        folder,
        args.eval_source,
        bi_encoder=settings.models.bi_encoder,
        max_queries=args.eval_max_queries,
        device=settings.models.device,
    )


def cmd_inspect(args: argparse.Namespace) -> int:
    with _client(_settings(args)) as hs:
        report = hs.inspect()
    print(report.to_json() if args.json else report.table())
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from hybrid_search.backends.base import previous_alias

    with _client(_settings(args)) as hs:
        serving, previous = hs.rollback()
        count = hs.backend.count(hs.index)
    print(
        f"{hs.index} now serves {serving} ({count} documents); {previous} is kept as {previous_alias(hs.index)} "
        "(roll back again to undo)"
    )
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    with _client(_settings(args)) as hs:
        vectors = hs.repair()
    print(f"{hs.index}: rebuilt the vector graph from {vectors} stored vectors (checksum recorded)")
    return 0


def cmd_dashboards(args: argparse.Namespace) -> int:
    from hybrid_search.app.dashboards import PRODUCTS, install_saved_objects

    settings = _settings(args)
    product, url = ("kibana", args.kibana_url) if args.kibana_url else ("opensearch-dashboards", args.dashboards_url)
    result = install_saved_objects(
        url, product, settings.index.name, settings=settings.backend, space=args.space, wait=args.wait
    )
    base = url.rstrip("/") + (f"/s/{args.space}" if args.space else "")  # the space id was checked on install
    print(
        f"imported {len(result.objects)} saved objects into {PRODUCTS[product].title} for {result.alias} "
        f"(and {result.alias}-queries, {result.alias}-ingest); open {base}/app/dashboards#/view/{result.dashboard_id}"
    )
    return 0


COMMANDS = {
    "ingest": cmd_ingest,
    "search": cmd_search,
    "eval": cmd_eval,
    "bench": cmd_bench,
    "duplicates": cmd_duplicates,
    "duplicates-eval": cmd_duplicates_eval,
    "inspect": cmd_inspect,
    "tune": cmd_tune,
    "tune-defaults": cmd_tune_defaults,
    "rollback": cmd_rollback,
    "repair": cmd_repair,
    "reindex": cmd_reindex,
    "train": cmd_train,
    "dashboards": cmd_dashboards,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub", "faiss"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    for chatty in ("elastic_transport", "opensearch"):  # per-retry warnings with tracebacks; our errors say it
        logging.getLogger(chatty).setLevel(logging.DEBUG if args.debug else logging.ERROR)
    from hybrid_search.config.errors import HybridSearchError

    try:
        return COMMANDS[args.command](args)
    except HybridSearchError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted" + (": rerun with --resume to continue" if args.command == "ingest" else ""), file=sys.stderr
        )
        return 130
    except Exception as exc:  # anything unplanned still reaches the user as one line
        if args.debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
