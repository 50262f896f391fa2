"""``hybrid-search bench scale``: how each cost grows with corpus size, on a synthetic corpus.

The corpus is generated on the fly, so a million documents need no file: text drawn from a Zipf-distributed
vocabulary (as natural text is), vectors clustered around random unit centres (as embeddings are), and
metadata fields ``s1`` / ``s10`` / ``s50`` true for a known 1% / 10% / 50% of documents. It is streamed through
the real ingest path with precomputed vectors (``FieldMap.vector_field``), into the configured backend.

Each size runs in a fresh process (its peak resident memory is its own) and reports: upsert docs/s and each
ingest stage's own rate, peak RSS beside the size of the vectors and HNSW graph, bytes on disk, BM25 / kNN /
hybrid latency p50 and p95 (query vectors given: encoding a query is ``bench search``'s business), kNN
recall@10 against exact search, and filtered kNN at each selectivity (latency and recall against exact
filtered search). With ``--sparse`` each document also carries a synthetic learned-sparse vector (its words
plus Zipf-drawn expansion tokens, ~150 non-zeros, as SPLADE's passages have), ingested as precomputed
(``FieldMap.sparse_field``), and the ``sparse`` and ``hybrid3`` modes are timed too. Across sizes, each
cost's growth exponent is the slope of log(cost) on log(size).
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_search.config.errors import ConfigError
from hybrid_search.config.settings import Settings
from hybrid_search.ingest.sources import FieldMap, RawRecord

__all__ = ["SyntheticCorpus", "bench_scale", "growth_exponent"]

SELECTIVITIES = {"s1": 0.01, "s10": 0.10, "s50": 0.50}
_VOCAB = 50_000
_CLUSTERS = 256


def _word(i: int) -> str:
    """A pronounceable pseudo-word per vocabulary rank (stable, distinct, no stop words)."""
    consonants, vowels = "bcdfghjklmnprstvz", "aeiou"
    out = []
    i += 1
    while i:
        i, r = divmod(i, len(consonants) * len(vowels))
        out.append(consonants[r // len(vowels)] + vowels[r % len(vowels)])
    return "".join(out) + "x"


class SyntheticCorpus:
    """A corpus source of ``size`` generated documents (see the module docstring); deterministic per seed."""

    def __init__(
        self,
        size: int,
        dims: int = 384,
        *,
        seed: int = 0,
        words: int = 40,
        batch: int = 10_000,
        sparse: bool = False,
    ) -> None:
        if size < 1:
            raise ConfigError("corpus size must be at least 1")
        self.size, self.dims, self.seed, self.words, self.batch = size, dims, seed, words, batch
        self.sparse = sparse
        self.name = f"synthetic:{size}x{dims}:seed{seed}" + (":sparse" if sparse else "")
        self.fields = FieldMap(
            id_fields=("_id",),
            metadata_fields=tuple(SELECTIVITIES),
            vector_field="vector",
            sparse_field="sparse" if sparse else None,
        )
        self.vocab = [_word(i) for i in range(_VOCAB)]
        rng = np.random.default_rng(seed)
        centres = rng.standard_normal((_CLUSTERS, dims)).astype(np.float32)
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        ranks = np.arange(1, _VOCAB + 1, dtype=np.float64)
        self.word_p = (1.0 / ranks**1.07) / np.sum(1.0 / ranks**1.07)

    def count_hint(self) -> int:
        return self.size

    @staticmethod
    def member(i: np.ndarray | int, field: str) -> Any:
        """Whether document ``i`` has ``field`` true: a fixed hash of ``i``, so the share is known exactly."""
        bucket = (np.asarray(i, dtype=np.uint64) * np.uint64(2654435761) % np.uint64(2**32)) % np.uint64(1000)
        return bucket < np.uint64(int(SELECTIVITIES[field] * 1000))

    def vectors(self, start: int, stop: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, start))
        n = stop - start
        centres = self.centres[rng.integers(0, _CLUSTERS, n)]
        noisy = centres + 0.7 * rng.standard_normal((n, self.dims)).astype(np.float32) / math.sqrt(self.dims)
        return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)

    def records(self) -> Iterator[RawRecord]:
        for start in range(0, self.size, self.batch):
            stop = min(start + self.batch, self.size)
            rng = np.random.default_rng((self.seed, start, 1))
            words = rng.choice(_VOCAB, size=(stop - start, self.words), p=self.word_p)
            vectors = self.vectors(start, stop)
            ids = np.arange(start, stop)
            flags = {f: self.member(ids, f) for f in SELECTIVITIES}
            for j, i in enumerate(range(start, stop)):
                row = words[j]
                yield RawRecord(
                    i + 1,
                    {
                        "_id": f"d{i}",
                        "title": " ".join(self.vocab[w] for w in row[:4]),
                        "text": " ".join(self.vocab[w] for w in row[4:]),
                        "vector": vectors[j],
                        **({"sparse": self._sparse_vector(row, rng)} if self.sparse else {}),
                        **{f: "y" for f in SELECTIVITIES if flags[f][j]},
                    },
                )

    def _sparse_vector(self, words: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
        """A learned-sparse-like vector: the document's own words plus as many Zipf-drawn expansion tokens
        (SPLADE's passages hold ~130-180 non-zeros, its queries ~18), each with a weight in (0, 3]."""
        tokens = {*words.tolist(), *rng.choice(_VOCAB, size=3 * len(words), p=self.word_p).tolist()}
        weights = rng.uniform(0.05, 3.0, len(tokens))
        return {self.vocab[t]: float(w) for t, w in zip(tokens, weights, strict=True)}

    def queries(self, n: int) -> tuple[list[str], np.ndarray]:
        """``n`` query texts (three mid-frequency words) and query vectors (near a cluster centre)."""
        rng = np.random.default_rng((self.seed, 99))
        texts = [" ".join(self.vocab[w] for w in rng.integers(20, 2_000, 3)) for _ in range(n)]
        centres = self.centres[rng.integers(0, _CLUSTERS, n)]
        q = centres + 0.7 * rng.standard_normal((n, self.dims)).astype(np.float32) / math.sqrt(self.dims)
        return texts, (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)

    def sparse_queries(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Each query text's words plus 15 Zipf-drawn expansion tokens, weighted in (0, 3]."""
        rng = np.random.default_rng((self.seed, 98))
        index = {w: i for i, w in enumerate(self.vocab)}
        out = []
        for text in texts:
            tokens = {*(index[w] for w in text.split()), *rng.choice(_VOCAB, size=15, p=self.word_p).tolist()}
            out.append(
                {self.vocab[t]: float(w) for t, w in zip(tokens, rng.uniform(0.05, 3.0, len(tokens)), strict=True)}
            )
        return out


def _exact_top(corpus: SyntheticCorpus, queries: np.ndarray, k: int, field: str | None = None) -> list[list[str]]:
    """Exact top ``k`` ids of each query by inner product over the generated vectors, one generated batch at
    a time (memory stays flat at any size)."""
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, corpus.size, corpus.batch):
        stop = min(start + corpus.batch, corpus.size)
        ids, vectors = np.arange(start, stop), corpus.vectors(start, stop)
        if field is not None:
            keep = corpus.member(ids, field)
            ids, vectors = ids[keep], vectors[keep]
        if not len(ids):
            continue
        scores = queries @ vectors.T
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_ids = np.concatenate([best_ids, np.broadcast_to(ids, scores.shape)], axis=1)
        top = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(all_scores, top, axis=1)
        best_ids = np.take_along_axis(all_ids, top, axis=1)
    return [[f"d{i}" for i in row] for row in best_ids]


def _exact_sparse_top(corpus: SyntheticCorpus, queries: Sequence[dict[str, float]], k: int) -> list[list[str]]:
    """Brute-force top ``k`` by sparse dot product over the generated documents (ties by id order)."""
    from hybrid_search.encoding.sparse import sparse_dot

    scored: list[list[tuple[float, int, str]]] = [[] for _ in queries]
    for position, record in enumerate(corpus.records()):
        fields = record.fields or {}
        for i, q in enumerate(queries):
            score = sparse_dot(q, fields["sparse"])
            if score > 0:
                scored[i].append((-score, position, fields["_id"]))
    return [[doc_id for _, _, doc_id in sorted(s)[:k]] for s in scored]


def _pcts(ms: Sequence[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def _recall(found: Sequence[Sequence[str]], exact: Sequence[Sequence[str]], k: int = 10) -> float:
    return float(
        np.mean([len(set(f[:k]) & set(e[:k])) / max(1, min(k, len(e))) for f, e in zip(found, exact, strict=True)])
    )


def measure_one(
    settings: Settings, size: int, *, queries: int = 200, progress: bool = False, sparse: bool = False
) -> dict[str, Any]:
    """Ingest and measure one corpus size (see the module docstring), in this process; ``sparse`` adds a
    learned-sparse field (precomputed, synthetic) and times the ``sparse`` and ``hybrid3`` modes."""
    from hybrid_search.app.client import HybridSearch
    from hybrid_search.search.request import build_request
    from hybrid_search.search.searcher import RetrievalPipeline

    if sparse:  # the name the index records for its sparse vectors: they are given, so it never loads
        settings = settings.model_copy(
            update={"models": settings.models.model_copy(update={"sparse_encoder": "synthetic-sparse"})}
        )
    hs = HybridSearch.from_settings(settings)
    dims = hs.encoder.dims
    corpus = SyntheticCorpus(size, dims, sparse=sparse)
    out: dict[str, Any] = {"docs": size, "dims": dims, "backend": settings.backend.kind}
    rss_before = _peak_rss()
    summary = hs.ingest(corpus, fields=corpus.fields, progress=progress)
    out["ingest"] = {
        "docs_per_s": round(summary.docs_per_s, 1),
        "seconds": round(summary.seconds, 1),
        "stage_docs_per_s": summary.stage_rates(),
        "stored": summary.stored,
    }
    rates = summary.stage_rates()
    slowest = min(rates["read"], rates["write"], rates["encode"])
    out["ingest"]["end_to_end_over_slowest_stage"] = round(rates["end_to_end"] / slowest, 3)
    backend, index = hs.backend, hs.index
    stats = backend.stats(index)
    m = stats.spec.hnsw_m if stats.spec else 16
    out["bytes_on_disk"] = stats.store_bytes
    out["vectors_and_graph_bytes"] = size * dims * 4 + size * 2 * m * 4  # level-0 links dominate the graph
    texts, qvec = corpus.queries(queries)
    num_candidates = settings.search.num_candidates
    # each mode as it ships: the settings' default request (fusion, weights, depths), run by the real pipeline
    # with the query vector given (encoding a query is `bench search`'s business) and no reranker
    pipeline = RetrievalPipeline(backend, index=index, settings=settings.search.model_copy(update={"rerank": False}))
    modes = ("bm25", "knn", "hybrid", *(("sparse", "hybrid3") if sparse else ()))
    out["requests"] = {m: repr(build_request(pipeline.settings, "q", mode=m, top_k=10)) for m in modes}
    qsparse: list[dict[str, float] | None] = [*corpus.sparse_queries(texts)] if sparse else [None] * len(texts)
    for _ in range(3):  # warm caches
        for mode in modes:
            pipeline.search(texts[0], mode=mode, top_k=10, vector=qvec[0], sparse_vector=qsparse[0])
    lat: dict[str, list[float]] = {m: [] for m in modes}
    knn_found: list[list[str]] = []
    sparse_found: list[list[str]] = []
    for text, vec, sv in zip(texts, qvec, qsparse, strict=True):
        for mode in modes:
            t = time.perf_counter()
            result = pipeline.search(text, mode=mode, top_k=10, vector=vec, sparse_vector=sv)
            lat[mode].append((time.perf_counter() - t) * 1000)
            if mode == "knn":
                knn_found.append(result.doc_ids)
            elif mode == "sparse":
                sparse_found.append(result.doc_ids)
    out["latency"] = {mode: _pcts(v) for mode, v in lat.items()}
    exact = _exact_top(corpus, qvec, 10)
    out["knn_recall@10"] = round(_recall(knn_found, exact), 4)
    if sparse:  # the sparse leg is exact: its top 10 is brute force's (checked where brute force is affordable)
        checked = min(len(texts), 20) if size <= 50_000 else 0
        top = _exact_sparse_top(corpus, [q for q in qsparse[:checked] if q is not None], 10)
        out["sparse_exact@10"] = round(_recall(sparse_found[:checked], top), 4) if checked else None
    # the recall / latency trade-off: the HNSW candidate pool (efSearch) a query may use
    out["knn_by_num_candidates"] = {}
    for pool in (100, 200, 400, 800):
        found, ms = [], []
        for vec in qvec:
            t = time.perf_counter()
            found.append([h.doc_id for h in backend.search_knn(index, vec, 10, pool)])
            ms.append((time.perf_counter() - t) * 1000)
        out["knn_by_num_candidates"][str(pool)] = {**_pcts(ms), "recall@10": round(_recall(found, exact), 4)}
    out["filtered_knn"] = {}
    for field, share in SELECTIVITIES.items():
        found, ms = [], []
        for vec in qvec:
            t = time.perf_counter()
            hits = backend.search_knn(index, vec, 10, num_candidates, {field: "y"})
            ms.append((time.perf_counter() - t) * 1000)
            found.append([h.doc_id for h in hits])
        out["filtered_knn"][f"{share:.0%}"] = {
            **_pcts(ms),
            "recall@10": round(_recall(found, _exact_top(corpus, qvec, 10, field)), 4),
        }
    hs.delete()
    hs.close()
    out["peak_rss_bytes"] = _peak_rss()
    out["rss_before_ingest_bytes"] = rss_before
    out["peak_rss_over_vectors_and_graph"] = round(out["peak_rss_bytes"] / out["vectors_and_graph_bytes"], 2)
    return out


def _peak_rss() -> int:
    """This process's peak resident set size in bytes (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def growth_exponent(sizes: Sequence[float], costs: Sequence[float]) -> float | None:
    """Slope of log(cost) against log(size): 1 is linear growth, 0 flat; None with fewer than two points."""
    points = [(math.log(s), math.log(c)) for s, c in zip(sizes, costs, strict=True) if s > 0 and c and c > 0]
    if len(points) < 2 or len({x for x, _ in points}) < 2:
        return None
    xs, ys = np.asarray([p[0] for p in points]), np.asarray([p[1] for p in points])
    return round(float(np.polyfit(xs, ys, 1)[0]), 3)


def bench_scale(
    settings: Settings,
    sizes: Sequence[int],
    *,
    queries: int = 200,
    plot: str | None = None,
    progress: bool = False,
    sparse: bool = False,
) -> dict[str, Any]:
    """Every size in a fresh process with its own data directory; the report adds growth exponents."""
    if sorted(set(sizes)) != list(sizes):
        raise ConfigError("--docs for scale must be increasing sizes, e.g. 10000,100000,1000000")
    runs = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix=f"hs-scale-{size}-") as tmp:
            one = settings.model_copy(
                update={
                    "data_dir": Path(tmp) if settings.backend.kind == "embedded" else settings.data_dir,
                    "index": settings.index.model_copy(update={"name": f"scale-{size}"}),
                    "ingest": settings.ingest.model_copy(update={"batch_size": max(settings.ingest.batch_size, 2_000)}),
                }
            )
            cmd = [sys.executable, "-m", "hybrid_search.app.scale", str(size), str(queries), *(["sparse"] * sparse)]
            proc = subprocess.run(
                cmd,
                input=one.model_dump_json(),
                capture_output=True,
                text=True,
                env={**os.environ, "HYBRID_SEARCH_SCALE_PROGRESS": "1" if progress else "0"},
                check=False,
            )
            if proc.returncode != 0:
                raise ConfigError(f"bench scale at {size} documents failed: {proc.stderr.strip()[-2000:]}")
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    report: dict[str, Any] = {"bench": "scale", "sizes": list(sizes), "runs": runs}
    costs = {
        "upsert_seconds_per_doc": [1.0 / r["ingest"]["docs_per_s"] for r in runs],
        "peak_rss_bytes": [r["peak_rss_bytes"] for r in runs],
        "bytes_on_disk": [r["bytes_on_disk"] or 0 for r in runs],
        **{f"{m}_p50_ms": [r["latency"][m]["p50_ms"] for r in runs] for m in runs[0]["latency"]},
        **{f"filtered_knn_{s}_p50_ms": [r["filtered_knn"][s]["p50_ms"] for r in runs] for s in ("1%", "10%", "50%")},
    }
    report["growth_exponents"] = {name: growth_exponent(sizes, values) for name, values in costs.items()}
    if plot:
        _plot(report, costs, plot)
        report["plot"] = plot
    return report


def _plot(report: dict[str, Any], costs: dict[str, list[float]], path: str) -> None:
    from hybrid_search.config.extras import require

    require("matplotlib", extra="dev", purpose="bench scale --plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = report["sizes"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = [
        ("latency p50 (ms)", [k for k in costs if k.endswith("_p50_ms")]),
        ("memory and disk (MiB)", ["peak_rss_bytes", "bytes_on_disk"]),
        ("upsert (ms per document)", ["upsert_seconds_per_doc"]),
    ]
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            values = costs[key]
            scale = 1 / 2**20 if key.endswith("bytes") or key == "bytes_on_disk" else 1000 if "seconds" in key else 1
            exp = report["growth_exponents"].get(key)
            ax.plot(sizes, [v * scale for v in values], marker="o", label=f"{key} (slope {exp})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("documents")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.suptitle("hybrid-search bench scale: cost against corpus size (log-log)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":  # one size, in its own process: settings JSON on stdin, report JSON on stdout
    _settings = Settings.model_validate_json(sys.stdin.read())
    _report = measure_one(
        _settings,
        int(sys.argv[1]),
        queries=int(sys.argv[2]),
        progress=os.environ.get("HYBRID_SEARCH_SCALE_PROGRESS") == "1",
        sparse="sparse" in sys.argv[3:],
    )
    print(json.dumps(_report, default=float))
