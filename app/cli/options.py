"""What several commands share: flag groups whose settings overrides are declared beside the flags, the
settings they add up to, and the client and model helpers the commands open.

A flag that sets a setting is added with ``setting(...)``, which records its settings path on the parser,
so ``load(args)`` needs no table kept by hand elsewhere. Nothing heavy is imported at module level.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from hybrid_search.config.settings import IndexSettings, SearchSettings
from hybrid_search.config.text import ANALYZERS

if TYPE_CHECKING:
    from hybrid_search.app.client import HybridSearch
    from hybrid_search.config.settings import Settings
    from hybrid_search.ingest.pipeline import IngestSummary
    from hybrid_search.ingest.sources import FieldMap
    from hybrid_search.rerank.cross_encoder import CrossEncoderReranker

__all__ = [
    "INDEX_HELP",
    "client",
    "close_client",
    "common",
    "emit_json",
    "field_map",
    "force_unlock",
    "ingest",
    "ingest_knobs",
    "ingest_unless_indexed",
    "int_list",
    "load",
    "log_knobs",
    "positive_int",
    "quiet_model_loading",
    "reranker",
    "search_knobs",
    "setting",
]

SEARCH_DEFAULTS = SearchSettings()
DEFAULT_NOTE = f"(default: {IndexSettings().name})"
INDEX_HELP = f"index (alias) name {DEFAULT_NOTE}"

Convert = Callable[[Any], Mapping[str, Any]]
_PATHS = "_settings_paths"  # parser default: dest -> how its value becomes settings overrides


def setting(
    parser: argparse.ArgumentParser,
    *flags: str,
    path: str | None = None,
    convert: Convert | None = None,
    group: argparse._ArgumentGroup | None = None,
    **kwargs: Any,
) -> None:
    """Add a flag that overrides the setting at ``path`` (``search.fusion``), or the settings ``convert``
    returns for its value; unset (``None``), it overrides nothing."""
    if kwargs.get("action") in ("store_true", "store_false"):
        kwargs.setdefault("default", None)
    action = (group or parser).add_argument(*flags, **kwargs)
    paths: dict[str, Convert] = dict(parser.get_default(_PATHS) or {})
    paths[action.dest] = convert or _to(path or action.dest)
    parser.set_defaults(**{_PATHS: paths})


def _to(path: str) -> Convert:
    return lambda value: {path: value}


def load(args: argparse.Namespace) -> Settings:
    """The settings the flags, the ``--config`` file and the environment add up to."""
    from hybrid_search.config.settings import load_settings

    overrides: dict[str, Any] = {}
    for dest, convert in (getattr(args, _PATHS, None) or {}).items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        for path, v in convert(value).items():
            *parents, leaf = path.split(".")
            node = overrides
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = v
    return load_settings(getattr(args, "config", None), overrides)


def _mode(value: str) -> dict[str, Any]:
    from hybrid_search.search.request import parse_mode

    base, rerank = parse_mode(value)
    return {"search.mode": base, **({"search.rerank": True} if rerank else {})}


# --- flag groups ------------------------------------------------------------------------------------
def common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("common")
    g.add_argument("--config", help="settings file (.toml or .yaml); also HYBRID_SEARCH_CONFIG")
    setting(p, "--data-dir", path="data_dir", group=g, help="where the embedded backend, checkpoints and rejects live")
    setting(p, "--backend", path="backend.kind", group=g, choices=["embedded", "elasticsearch", "opensearch"])
    setting(p, "--url", path="backend.urls", group=g, help="cluster URL(s), comma-separated (credentials: environment)")
    setting(p, "--model", path="models.bi_encoder", group=g, help="bi-encoder: hub id or local folder")
    setting(p, "--cross-encoder", path="models.cross_encoder", group=g, help="cross-encoder: hub id or local folder")
    setting(p, "--device", path="models.device", group=g, help="auto, cpu, cuda or cuda:N")
    setting(
        p,
        "--encode-runtime",
        path="models.encode_runtime",
        group=g,
        choices=["auto", "torch", "onnx", "onnx-fp32"],
        help="bi-encoder runtime: torch, or ONNX Runtime on the CPU (onnx: int8 where the CPU supports it)",
    )
    setting(
        p,
        "--rerank-runtime",
        path="models.rerank_runtime",
        group=g,
        choices=["auto", "onnx", "torch"],
        help="cross-encoder runtime (auto: the model's own ONNX file on the CPU; onnx exports one if it has none)",
    )
    g.add_argument("-v", "--verbose", action="store_true", help="also show informational logs")
    g.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def index_flag(p: argparse.ArgumentParser, help: str = INDEX_HELP) -> None:
    setting(p, "--index", path="index.name", help=help)


def mode_flags(p: argparse.ArgumentParser) -> None:
    setting(
        p,
        "--mode",
        convert=_mode,
        help="bm25, knn, sparse, hybrid (bm25+knn), hybrid3 (+sparse) or legs such as bm25+sparse; "
        f"optionally +rerank (default: {SEARCH_DEFAULTS.mode})",
    )
    setting(p, "--rerank", path="search.rerank", action="store_true")
    setting(
        p, "--top-k", path="search.top_k", type=positive_int, help=f"hits to return (default: {SEARCH_DEFAULTS.top_k})"
    )


def search_knobs(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("retrieval")
    setting(p, "--fusion", path="search.fusion", group=g, choices=["rrf", "linear"])
    setting(p, "--rrf-k", path="search.rrf_k", group=g, type=int)
    setting(p, "--normalizer", path="search.normalizer", group=g, choices=["minmax", "zscore", "l2"])
    setting(p, "--bm25-weight", path="search.bm25_weight", group=g, type=float)
    setting(p, "--knn-weight", path="search.knn_weight", group=g, type=float)
    setting(p, "--sparse-weight", path="search.sparse_weight", group=g, type=float)
    setting(p, "--sparse-depth", path="search.sparse_depth", group=g, type=int, help="sparse hits fused (default 200)")
    setting(
        p, "--rerank-depth", path="search.rerank_depth", group=g, type=int, help="top hits the cross-encoder rescores"
    )
    setting(
        p, "--num-candidates", path="search.num_candidates", group=g, type=int, help="HNSW candidate pool per query"
    )
    switch_off(p, "--client-fusion", "search.server_fusion", group=g, help="fuse in the client even if the server can")


def switch_off(
    p: argparse.ArgumentParser, flag: str, path: str, *, help: str, group: argparse._ArgumentGroup | None = None
) -> None:
    """A ``--no-...`` flag that sets the boolean setting at ``path`` to False when given."""
    setting(p, flag, convert=lambda on: {path: False} if on else {}, group=group, action="store_true", help=help)


def force_unlock(p: argparse.ArgumentParser, group: argparse._ArgumentGroup | None = None) -> None:
    setting(
        p,
        "--force-unlock",
        path="ingest.force_unlock",
        group=group,
        action="store_true",
        help="break a cluster writer lock whose holder is gone (embedded locks end with their process)",
    )


def no_refresh(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-refresh",
        action="store_true",
        help="do not wait for the writes to become visible to searches (faster bulk writes; the next refresh, "
        "or the engine's refresh interval, shows them)",
    )


def batch_size(p: argparse.ArgumentParser, group: argparse._ArgumentGroup | None = None) -> None:
    setting(p, "--batch-size", path="ingest.batch_size", group=group, type=int, help="documents per encode + upsert")


def ingest_knobs(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ingest")
    g.add_argument("--resume", action="store_true", help="continue an interrupted ingest of this index")
    force_unlock(p, g)
    setting(p, "--strict", path="ingest.strict", group=g, action="store_true", help="the first bad record is fatal")
    switch_off(
        p,
        "--no-field-check",
        "ingest.check_fields",
        group=g,
        help="skip the check that --text-field and --metadata-fields appear among the first 1,000 records",
    )
    setting(
        p,
        "--allow-shrink",
        path="ingest.allow_shrink",
        group=g,
        action="store_true",
        help="serve a build even if it holds far fewer documents than the alias serves now",
    )
    batch_size(p, g)
    setting(
        p,
        "--chunking",
        path="ingest.chunking",
        group=g,
        help="passages of long documents: auto (default: split only texts longer than the model reads, on "
        "sentences, windows that fit it), none (one vector per document), or words|sentences|tokens:SIZE:OVERLAP",
    )
    setting(
        p,
        "--bulk-workers",
        path="backend.bulk_workers",
        group=g,
        type=positive_int,
        help="concurrent bulk requests to a cluster per upsert (default 2)",
    )
    setting(p, "--analyzer", path="index.analyzer", group=g, choices=list(ANALYZERS))
    setting(
        p,
        "--sparse-model",
        path="models.sparse_encoder",
        group=g,
        help="also index learned-sparse (SPLADE) vectors: a hub id, a folder, or splade-tiny (offline)",
    )
    g.add_argument("--id-field", help="id field of JSONL/CSV/Parquet records (default: _id, then id)")
    g.add_argument("--title-field", default="title")
    g.add_argument("--text-field", default="text")
    g.add_argument("--metadata-fields", default="", help="comma-separated fields kept as filterable metadata")
    g.add_argument(
        "--vector-field",
        help="a field holding each record's precomputed embedding (from --model): checked and stored, not encoded",
    )
    g.add_argument(
        "--sparse-field",
        help="a field holding each record's precomputed sparse vector (token -> weight, from --sparse-model): "
        "checked and stored, not encoded",
    )


def log_knobs(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("query log")
    setting(
        p,
        "--log-queries",
        path="logs.queries",
        group=g,
        action="store_true",
        help="record each search in <index>-queries (also HYBRID_SEARCH_LOGS__QUERIES=true)",
    )
    switch_off(p, "--no-query-text", "logs.query_text", group=g, help="log searches without their query text")


# --- argparse types ---------------------------------------------------------------------------------
def int_list(text: str) -> list[int]:
    """An argparse type: comma-separated whole numbers of at least 1, e.g. ``1,2,4,8``."""
    return [positive_int(part.strip()) for part in text.split(",") if part.strip()] or [positive_int(text)]


def comma_list(text: str) -> list[str]:
    """An argparse type: ``a, b,c`` -> ``["a", "b", "c"]`` (blank entries dropped)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (argparse turns the error into a usage line)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


# --- components ---------------------------------------------------------------------------------------
def field_map(args: argparse.Namespace) -> FieldMap:
    from hybrid_search.ingest.sources import FieldMap

    ids = (args.id_field,) if args.id_field else ("_id", "id")
    meta = tuple(f.strip() for f in args.metadata_fields.split(",") if f.strip())
    return FieldMap(
        id_fields=ids,
        title_field=args.title_field,
        text_field=args.text_field,
        metadata_fields=meta,
        vector_field=args.vector_field or None,
        sparse_field=getattr(args, "sparse_field", None) or None,
    )


def quiet_model_loading() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def client(settings: Settings, index: str | None = None) -> HybridSearch:
    from hybrid_search.app.client import HybridSearch

    quiet_model_loading()
    return HybridSearch.from_settings(settings, index=index)


def reranker(settings: Settings) -> CrossEncoderReranker:
    from hybrid_search.rerank.cross_encoder import CrossEncoderReranker

    quiet_model_loading()
    return CrossEncoderReranker(settings=settings.models)


def ingest(hs: HybridSearch, args: argparse.Namespace) -> IngestSummary:
    summary = hs.ingest(args.source, fields=field_map(args), resume=args.resume, progress=not args.quiet)
    print(
        f"ingested {summary.alias} -> {summary.physical}: read {summary.read}, stored {summary.stored}, "
        f"rejected {summary.rejected}, "
        + (f"{summary.passages} passages ({summary.chunking}), " if summary.passages > summary.stored else "")
        + f"truncated {summary.truncated}, {summary.docs_per_s:.1f} docs/s "
        + (
            f"({summary.run_seconds:.1f} s this run, {summary.seconds:.1f} s with the runs it resumed)"
            if summary.resumed
            else f"({summary.seconds:.1f} s)"
        )
        + (f"; rejects in {summary.rejects_path}" if summary.rejected else ""),
        file=sys.stderr,
    )
    return summary


def ingest_unless_indexed(hs: HybridSearch, args: argparse.Namespace) -> None:
    """``eval`` and ``tune`` ingest their source first when the index is missing (or ``--resume`` is given)."""
    if args.resume or not hs.exists():
        ingest(hs, args)


def close_client(hs: HybridSearch) -> None:
    """Close the client; say where the query log went and what it could not write."""
    hs.close()
    report = hs.query_log_report()
    if report is not None:
        print(report, file=sys.stderr)


def emit_json(report: Mapping[str, Any], path: str | None) -> None:
    """Print a JSON report, and write it to ``path`` when one is given."""
    import json

    text = json.dumps(report, indent=2)
    print(text)
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")


def write_json(payload: Any, path: str | None) -> None:
    """Write a report as JSON to ``path`` when one is given (``--json OUT``), whole or not at all (a stop
    mid-write leaves the previous version)."""
    if path:
        import json
        import os

        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, default=str)
        os.replace(tmp, path)
