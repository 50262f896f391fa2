"""``hybrid-search bench``: throughput and latency, each measured beside a reference in the same run.

- ``encode``: documents/s of our encoder vs sentence-transformers' ``encode`` on the same model folder, texts
  and device.
- ``rerank``: pairs/s of our cross-encoder vs ``CrossEncoder.predict``. Our torch runtime and the reference
  run the same transformers weights (the configured model's, or, when only an ONNX export is at hand, a
  randomly initialised model of the same architecture: same compute, meaningless scores). Our ONNX runtime,
  what CPUs get by default, is reported beside the same reference.
- ``search``: latency percentiles per mode over one index, with each mode's p50 as a ratio to BM25's; with
  ``--concurrency 1,2,4,8``, QPS and p50/p95 per level (results checked identical to serial), and with
  ``--neighbour`` the p50 beside a CPU-bound process.
- ``duplicates``: peak memory of duplicate mining at N, 2N and 4N documents (flat means bounded).

Ratios, not absolute numbers, are the claim: both sides run on the same machine in the same process.
Timings here are wall-clock medians of ``repeats`` runs after a warm-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybrid_search.app.bench_encode import (
    _machine,
    _sentence_transformers,
    _texts,
    _time,
    bench_encode,
    bench_encode_sparse,
)
from hybrid_search.config.errors import ConfigError
from hybrid_search.config.settings import Settings

if TYPE_CHECKING:
    from hybrid_search.app.client import HybridSearch

__all__ = ["random_cross_encoder", "run_bench"]


def random_cross_encoder(
    tokenizer_dir: Path, out: Path, *, layers: int = 12, hidden: int = 384, heads: int = 12, intermediate: int = 1536
) -> Path:
    """Save a randomly initialised BERT cross-encoder (default: ms-marco-MiniLM-L-12-v2's shape) with a tokenizer.

    Same architecture means the same compute, so throughput compares; its scores mean nothing.
    """
    import shutil

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    vocab = sum(1 for _ in (tokenizer_dir / "vocab.txt").open(encoding="utf-8"))
    shape: dict[str, Any] = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": intermediate,
        "num_labels": 1,
    }
    config = BertConfig(**shape)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, out / name)
    return out


def bench_rerank(settings: Settings, source: str | None, docs: int, batch_size: int, repeats: int) -> dict[str, Any]:
    CrossEncoder = _sentence_transformers().CrossEncoder

    from hybrid_search.rerank.cross_encoder import CrossEncoderReranker

    passages, queries = _texts(source, docs)
    query = queries[0] if queries else "what is this about"
    configured = CrossEncoderReranker(settings=settings.models)
    folder = configured.folder
    with tempfile.TemporaryDirectory() as tmp:
        has_torch = any((folder / f).exists() for f in ("model.safetensors", "pytorch_model.bin"))
        torch_dir = folder if has_torch else random_cross_encoder(folder, Path(tmp) / "ce")
        models = settings.models.model_copy(update={"rerank_batch_size": batch_size, "rerank_runtime": "torch"})
        ours_torch = CrossEncoderReranker(str(torch_dir), settings=models)
        reference = CrossEncoder(str(torch_dir), device=ours_torch.device, max_length=settings.models.rerank_max_length)
        if ours_torch.device.startswith("cuda") and ours_torch._torch_model.dtype != reference.model.dtype:
            reference.model.to(ours_torch._torch_model.dtype)
        pairs = [(query, p) for p in passages]
        t_ref = _time(lambda: reference.predict(pairs, batch_size=batch_size, show_progress_bar=False), repeats)
        t_torch = _time(lambda: ours_torch.score(query, passages), repeats)
        result: dict[str, Any] = {
            "bench": "rerank",
            "model": configured.model_name,
            "pairs": len(pairs),
            "machine": _machine(ours_torch.device),
            "weights": "configured model" if has_torch else "random init, same architecture (only ONNX at hand)",
            "reference": {
                "name": "sentence_transformers.CrossEncoder.predict",
                "batch_size": batch_size,
                "pairs_per_s": len(pairs) / t_ref,
            },
            "ours_torch": {"pairs_per_s": len(pairs) / t_torch, "ratio_to_reference": t_ref / t_torch},
        }
        onnx_models = settings.models.model_copy(update={"rerank_batch_size": batch_size, "rerank_runtime": "onnx"})
        if ours_torch.device == "cpu" and not (torch_dir / "model.onnx").exists():
            exported = CrossEncoderReranker(str(torch_dir), settings=onnx_models)
            exported.score(query, passages[:2])  # the export, once, outside the timing
            t_export = _time(lambda: exported.score(query, passages), repeats)
            result["ours_onnx_export"] = {
                "pairs_per_s": len(pairs) / t_export,
                "ratio_to_reference": t_ref / t_export,
                "note": f"the same weights exported to ONNX by --rerank-runtime onnx ({exported.onnx_path.name})",
            }
        if (folder / "model.onnx").exists():
            ours_onnx = CrossEncoderReranker(str(folder), settings=onnx_models)
            t_onnx = _time(lambda: ours_onnx.score(query, passages), repeats)
            result["ours_onnx"] = {
                "pairs_per_s": len(pairs) / t_onnx,
                "ratio_to_reference": t_ref / t_onnx,
                "note": "the model's ONNX export (int8 for the offline default) vs fp32 reference",
            }
        return result


def _queries(source: str | None, n: int) -> list[str]:
    """``n`` query texts from the source's queries, cycled when it has fewer."""
    _, texts = _texts(source, 1)
    return (texts * (n // max(len(texts), 1) + 1))[:n]


def _ensure_indexed(hs: HybridSearch, source: str | None) -> None:
    """Ingest the source (default: the bundled sample) into the client's index unless it exists."""
    if not hs.exists():
        hs.ingest(source or "sample")


def bench_search(settings: Settings, source: str | None, queries: int, repeats: int) -> dict[str, Any]:
    from hybrid_search.app.client import DEFAULT_MODES, HybridSearch

    query_texts = _queries(source, queries)
    out: dict[str, Any] = {
        "bench": "search",
        "index": settings.index.name,
        "queries": len(query_texts),
        "backend": settings.backend.kind,
        "modes": {},
    }
    with HybridSearch.from_settings(settings) as hs:
        _ensure_indexed(hs, source)
        for mode in DEFAULT_MODES:
            hs.search(query_texts[0], mode=mode)  # warm-up
            lat = sorted(hs.search(q, mode=mode).timings_ms["total"] for q in query_texts for _ in range(repeats))
            out["modes"][mode] = {"p50_ms": _pct(lat, 50), "p95_ms": _pct(lat, 95), "p99_ms": _pct(lat, 99)}
        out["machine"] = _machine(hs.encoder.device)
    base = out["modes"]["bm25"]["p50_ms"] or 1e-9
    for mode in DEFAULT_MODES:
        out["modes"][mode]["p50_ratio_to_bm25"] = out["modes"][mode]["p50_ms"] / base
    return out


def bench_search_concurrency(
    settings: Settings,
    source: str | None,
    queries: int,
    levels: Sequence[int],
    modes: Sequence[str],
    *,
    neighbour: bool = False,
) -> dict[str, Any]:
    """QPS and latency with ``c`` searches in flight at once, for each level and mode, on one client (one
    backend, one encoder), and whether every result equals the serial one. With ``neighbour``, each
    measurement is repeated beside a CPU-bound process (another job on the machine) for the latency it costs.
    The claim is the ratio to concurrency 1 in the same run."""
    from concurrent.futures import ThreadPoolExecutor

    from hybrid_search.app.client import HybridSearch

    query_texts = _queries(source, queries)
    out: dict[str, Any] = {
        "bench": "search-concurrency",
        "index": settings.index.name,
        "backend": settings.backend.kind,
        "queries": len(query_texts),
        "threads_per_search": settings.search.threads,
        "levels": {},
    }
    with HybridSearch.from_settings(settings) as hs:
        _ensure_indexed(hs, source)
        serial = {}
        for mode in modes:
            hs.search(query_texts[0], mode=mode)  # warm-up: models loaded, caches filled
            serial[mode] = [hs.search(q, mode=mode).doc_ids for q in query_texts]

        def one(mode: str, q: str) -> tuple[list[str], float]:
            t = time.perf_counter()
            ids = hs.search(q, mode=mode).doc_ids
            return ids, (time.perf_counter() - t) * 1000

        def measure(mode: str, level: int) -> dict[str, Any]:
            with ThreadPoolExecutor(max_workers=level) as pool:
                t = time.perf_counter()
                results = list(pool.map(lambda q: one(mode, q), query_texts))
                wall = time.perf_counter() - t
            lat = sorted(ms for _, ms in results)
            return {
                "qps": round(len(results) / wall, 1),
                "p50_ms": round(_pct(lat, 50), 2),
                "p95_ms": round(_pct(lat, 95), 2),
                "identical_to_serial": [ids for ids, _ in results] == serial[mode],
            }

        for mode in modes:
            rows = out["levels"].setdefault(mode, {})
            for level in levels:
                rows[str(level)] = measure(mode, level)
            base = rows[str(levels[0])]["qps"] or 1e-9
            for level in levels:
                rows[str(level)]["qps_ratio_to_first"] = round(rows[str(level)]["qps"] / base, 2)
            if neighbour:
                with _cpu_neighbour():
                    busy = measure(mode, levels[0])
                rows[f"{levels[0]}+neighbour"] = busy
                quiet = rows[str(levels[0])]["p50_ms"] or 1e-9
                rows[f"{levels[0]}+neighbour"]["p50_ratio_to_quiet"] = round(busy["p50_ms"] / quiet, 2)
        out["machine"] = _machine(hs.query_encoder.device)
    out["all_identical_to_serial"] = all(
        row["identical_to_serial"] for rows in out["levels"].values() for row in rows.values()
    )
    return out


@contextlib.contextmanager
def _cpu_neighbour() -> Iterator[None]:
    """Another job on the machine: one process spinning on a core for as long as the block runs."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let it get scheduled
        yield
    finally:
        proc.kill()
        proc.wait()


def bench_query_log(settings: Settings, source: str | None, queries: int, repeats: int) -> dict[str, Any]:
    """What the query log costs a search: wall-clock latency (the ``record`` call included) with and without
    it, query by query alternately on the same index, so both see the same caches and machine load.

    The log goes to a temporary JSONL sink on the embedded backend, and to ``<index>-bench-queries`` on a
    cluster (through the same bulk writer as the real log).
    """
    from hybrid_search.app.client import HybridSearch
    from hybrid_search.app.logs import QueryLog
    from hybrid_search.backends.logsinks import JsonlLogSink
    from hybrid_search.search.searcher import RetrievalPipeline

    query_texts = _queries(source, queries)
    out: dict[str, Any] = {
        "bench": "querylog",
        "index": settings.index.name,
        "queries": len(query_texts),
        "backend": settings.backend.kind,
        "modes": {},
    }
    with HybridSearch.from_settings(settings) as hs, tempfile.TemporaryDirectory() as tmp:
        _ensure_indexed(hs, source)
        backend, encoder = hs.backend, hs.query_encoder
        sink = JsonlLogSink(tmp) if backend.name == "embedded" else backend.log_sink()
        qlog = QueryLog(sink, index=f"{settings.index.name}-bench", backend=backend.name, settings=settings.logs)
        plain = RetrievalPipeline(
            backend, index=settings.index.name, encoder=encoder, settings=settings.search, owns_parts=False
        )
        logged = RetrievalPipeline(
            backend,
            index=settings.index.name,
            encoder=encoder,
            settings=settings.search,
            query_log=qlog,
            owns_parts=False,
        )
        for mode in ("bm25", "hybrid"):
            plain.search(query_texts[0], mode=mode)  # warm-up (the writer thread starts here too)
            logged.search(query_texts[0], mode=mode)
            times: dict[str, list[float]] = {"plain": [], "logged": []}
            for q in query_texts * repeats:
                for name, searcher in (("plain", plain), ("logged", logged)):
                    t = time.perf_counter()
                    searcher.search(q, mode=mode)
                    times[name].append((time.perf_counter() - t) * 1000.0)
            p50 = {name: _pct(sorted(v), 50) for name, v in times.items()}
            out["modes"][mode] = {
                "plain_p50_ms": p50["plain"],
                "logged_p50_ms": p50["logged"],
                "logged_p95_ms": _pct(sorted(times["logged"]), 95),
                "plain_p95_ms": _pct(sorted(times["plain"]), 95),
                "p50_ratio_logged_to_plain": p50["logged"] / (p50["plain"] or 1e-9),
            }
        stats = qlog.close()
        out["log"] = {
            "recorded": stats.recorded,
            "written": stats.written,
            "dropped": stats.dropped,
            "failed": stats.failed,
        }
        out["machine"] = _machine(encoder.device)
    return out


def bench_duplicates(settings: Settings, docs: int) -> dict[str, Any]:
    """Memory and time of duplicate mining at N, 2N and 4N documents, each size in a fresh process.

    Resident memory (RSS: faiss, SQLite and numpy included) is sampled every few milliseconds while mining;
    the figure is its peak minus the RSS just before mining (the index already open), beside the Python
    heap's peak (tracemalloc) and the all-pairs similarity matrix such a corpus would need. Random unit
    vectors stand in for a corpus (mining cost does not depend on what the vectors mean), and every pair
    found is kept (threshold -1), the worst case for memory.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # a clean process: earlier sizes leave no memory behind
    runs = []
    for size in (docs, 2 * docs, 4 * docs):
        with ctx.Pool(1) as pool:
            runs.append(pool.apply(_mine_random_corpus, (size,)))
    return {
        "bench": "duplicates",
        "runs": runs,
        "rss_growth_ratio_4n_to_n": runs[-1]["rss_growth_mib"] / max(runs[0]["rss_growth_mib"], 1e-9),
        "machine": _machine("cpu"),
    }


def _rss_bytes() -> int:
    """This process's resident set size (Linux /proc; 0 where it is not available)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _mine_random_corpus(size: int, dims: int = 384) -> dict[str, Any]:
    import threading
    import tracemalloc

    import numpy as np

    from hybrid_search.app.duplicates import mine_duplicates
    from hybrid_search.backends.base import IndexedDocument, IndexSpec
    from hybrid_search.backends.embedded import EmbeddedBackend

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBackend(data_dir=tmp, flush_seconds=3600) as backend:
        backend.ensure_index("dups", IndexSpec(dims=dims))
        for start in range(0, size, 5_000):
            n = min(5_000, size - start)
            vectors = rng.normal(size=(n, dims)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            backend.upsert("dups", [IndexedDocument(f"r{start + i}", "", "x", vectors[i]) for i in range(n)])
        backend.refresh("dups")
        backend.count("dups")
        before = peak = _rss_bytes()
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.005):
                peak = max(peak, _rss_bytes())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        tracemalloc.start()
        t = time.perf_counter()
        pairs = mine_duplicates(backend, "dups", threshold=-1.0, top_k=10)  # keep every pair found: worst case
        kept = len(pairs)
        pairs.close()
        seconds = time.perf_counter() - t
        heap_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        done.set()
        sampler.join()
        peak = max(peak, _rss_bytes())
    return {
        "docs": size,
        "rss_before_mib": before / 2**20,
        "rss_peak_mib": peak / 2**20,
        "rss_growth_mib": (peak - before) / 2**20,
        "python_heap_peak_mib": heap_peak / 2**20,
        "vectors_mib": size * dims * 4 / 2**20,
        "seconds": seconds,
        "pairs": kept,
        "all_pairs_matrix_mib": size * size * 4 / 2**20,
    }


def _pct(sorted_values: Sequence[float], pct: float) -> float:
    import numpy as np

    return float(np.percentile(sorted_values, pct)) if sorted_values else 0.0


def _checked_models(models: Any) -> Any:
    """``models`` validated again (a ``model_copy`` update skips pydantic's checks): a bad choice fails here,
    naming the flag and the choices."""
    from pydantic import ValidationError

    from hybrid_search.config.settings import ModelSettings

    try:
        return ModelSettings.model_validate(models.model_dump())
    except ValidationError as exc:
        first = exc.errors()[0]
        field = {"dtype": "--dtypes", "encode_runtime": "--runtimes"}.get(str(first["loc"][0]), str(first["loc"][0]))
        raise ConfigError(f"{field}: {first['msg']}") from None


def run_bench(
    what: str,
    settings: Settings,
    *,
    source: str | None = None,
    docs: int = 512,
    batch_size: int = 32,
    repeats: int = 3,
    queries: int = 50,
    concurrency: Sequence[int] = (),
    modes: Sequence[str] = (),
    neighbour: bool = False,
    dtypes: Sequence[str] = (),
    runtimes: Sequence[str] = (),
    sparse: bool = False,
    quality: bool = False,
) -> dict[str, Any]:
    """Run one benchmark and return its JSON-ready report (``sparse``: ``encode`` times the SPLADE encoder)."""
    if runtimes and (what != "encode" or sparse):
        raise ConfigError("--runtimes chooses the bi-encoder's runtime: only for bench encode (without --sparse)")
    if what in ("encode", "rerank") and (dtypes or runtimes):
        # the same bench once per precision and runtime (fp16 vs bf16 on a GPU, torch vs ONNX on a CPU), each
        # beside its reference in that run
        variants = {}
        for runtime in runtimes or [""]:
            for dtype in dtypes or [""]:
                update = {k: v for k, v in (("encode_runtime", runtime), ("dtype", dtype)) if v}
                models = _checked_models(settings.models.model_copy(update=update))
                chosen = settings.model_copy(update={"models": models})
                key = "/".join(v for v in (runtime, dtype) if v)
                if what == "rerank":
                    variants[key] = bench_rerank(chosen, source, docs, batch_size, repeats)
                elif sparse:
                    variants[key] = bench_encode_sparse(chosen, source, docs, batch_size, repeats)
                else:
                    variants[key] = bench_encode(chosen, source, docs, batch_size, repeats, quality=quality)
        report = {"bench": what, "dtypes": list(dtypes), "runtimes": list(runtimes), "variants": variants}
    elif what == "encode" and sparse:
        report = bench_encode_sparse(settings, source, docs, batch_size, repeats)
    elif what == "encode":
        report = bench_encode(settings, source, docs, batch_size, repeats, quality=quality)
    elif what == "rerank":
        report = bench_rerank(settings, source, docs, batch_size, repeats)
    elif what == "search" and concurrency:
        report = bench_search_concurrency(
            settings, source, queries, concurrency, modes or ("bm25", "knn", "hybrid"), neighbour=neighbour
        )
    elif what == "search":
        report = bench_search(settings, source, queries, repeats)
    elif what == "duplicates":
        report = bench_duplicates(settings, docs)
    elif what == "querylog":
        report = bench_query_log(settings, source, queries, repeats)
    else:
        raise ConfigError(f"unknown benchmark {what!r}: choose encode, rerank, search, querylog or duplicates")
    return json.loads(json.dumps(report, default=float))
