"""``hybrid-search bench``: throughput and latency, each beside a reference measured in the same run."""

from __future__ import annotations

import argparse

from hybrid_search.app.cli import options
from hybrid_search.config.errors import ConfigError

HELP = "throughput and latency, each beside a reference in the same run"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "what",
        choices=["encode", "rerank", "search", "querylog", "duplicates", "scale", "writes", "peers", "long-docs"],
    )
    p.add_argument("--source", help="corpus to draw texts from (default: the bundled sample)")
    p.add_argument(
        "--docs",
        type=options.int_list,
        default=None,
        help="texts (or pairs) to time; for scale, corpus sizes, e.g. 10000,100000,1000000; for writes, the corpus "
        "size and the records per incremental write, e.g. 20000,1000",
    )
    p.add_argument("--concurrency", type=options.int_list, help="search: searches in flight, e.g. 1,2,4,8")
    p.add_argument(
        "--modes", help="search --concurrency: modes to run (default: bm25,knn,hybrid); long-docs: modes to score"
    )
    p.add_argument("--per-doc", type=int, default=8, help="long-docs: source passages per synthetic document")
    p.add_argument("--neighbour", action="store_true", help="search --concurrency: also beside a CPU-bound process")
    options.setting(p, "--threads", path="search.threads", type=int, help="CPU threads per search (0: all cores)")
    p.add_argument("--dtypes", help="encode / rerank: run once per precision, e.g. float16,bfloat16 (CUDA) or float32")
    p.add_argument("--runtimes", help="encode: run once per bi-encoder runtime, e.g. torch,onnx,onnx-fp32 (CPU)")
    p.add_argument(
        "--quality",
        action="store_true",
        help="encode: also nDCG@10 / Recall@100 of exact dense search over the whole --source (a BEIR folder), "
        "ours beside the reference's vectors",
    )
    p.add_argument(
        "--sparse",
        action="store_true",
        help="encode: time the SPLADE encoder (--sparse-model, default splade-tiny); scale: add a learned-sparse "
        "field and time the sparse and three-leg modes",
    )
    options.setting(p, "--sparse-model", path="models.sparse_encoder", help="encode --sparse: the SPLADE model")
    p.add_argument("--plot", metavar="PNG", help="scale: draw each cost against corpus size (needs matplotlib)")
    p.add_argument("--batch-size", type=int, default=32, help="reference batch size")
    p.add_argument("--repeats", type=int, default=3)
    options.index_flag(p)
    p.add_argument("--queries", type=int, default=50, help="queries per mode (search bench)")
    p.add_argument("--json", dest="json_out", metavar="OUT")
    options.common(p)


def run(args: argparse.Namespace) -> int:
    from hybrid_search.app.bench import run_bench
    from hybrid_search.search.request import parse_mode

    settings = options.load(args)
    options.quiet_model_loading()
    if args.what == "scale":
        from hybrid_search.app.scale import bench_scale

        report = bench_scale(
            settings,
            args.docs or [10_000, 100_000],
            queries=args.queries,
            plot=args.plot,
            progress=not args.quiet,
            sparse=args.sparse,
        )
        options.emit_json(report, args.json_out)
        return 0
    if args.what == "peers":
        from hybrid_search.app.bench_peers import bench_peers

        options.emit_json(bench_peers(settings, args.source, args.queries, args.repeats), args.json_out)
        return 0
    if args.what == "long-docs":
        from hybrid_search.app.long_docs import DEFAULT_MODES, bench_long_documents

        if not args.source:
            raise ConfigError("bench long-docs needs --source: a BEIR folder of labelled passages")
        chosen = [m.strip() for m in args.modes.split(",") if m.strip()] if args.modes else list(DEFAULT_MODES)
        report = bench_long_documents(settings, args.source, per_doc=args.per_doc, queries=args.queries, modes=chosen)
        options.emit_json(report, args.json_out)
        return 0
    if args.what == "writes":
        from hybrid_search.app.bench_writes import bench_writes

        size, batch = (args.docs or [20_000, 1_000]) + [1_000] * (len(args.docs or [0, 0]) < 2)
        options.emit_json(bench_writes(settings, size, batch), args.json_out)
        return 0
    modes = _listed(args.modes)
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
        dtypes=_listed(args.dtypes),
        runtimes=_listed(args.runtimes),
        sparse=args.sparse,
        quality=args.quality,
    )
    options.emit_json(report, args.json_out)
    return 0


def _listed(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []
