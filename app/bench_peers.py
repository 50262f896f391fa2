"""``hybrid-search bench peers``: the same corpus and the same vectors through this project's embedded backend
and, when installed (the ``bench`` extra), LanceDB: ingest rate, p50 / p95 latency per mode and nDCG@10,
side by side, measured in one run.

The corpus and its queries are encoded once, by this project's bi-encoder, and both systems get those
vectors (so the comparison is storage and search, not encoding). Latencies are wall time per query with the
query vector given, the systems interleaved query by query so a busy machine slows both alike. LanceDB runs
with its defaults for a table of this size: a flat (exact) vector scan, its native full-text index, and
hybrid search fused by its ``RRFReranker``; this project runs its defaults (HNSW, tantivy BM25, its default
fusion). Nothing of LanceDB is imported unless it is installed.
"""

from __future__ import annotations

import importlib.util
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from hybrid_search.config.settings import Settings

__all__ = ["bench_peers"]

MODES = ("bm25", "knn", "hybrid")


def _corpus(source: str | None) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, dict[str, int]]]:
    from hybrid_search.ingest.sources import BeirFolder, open_source
    from hybrid_search.ingest.validate import Document, validate

    src = open_source(source or "sample")
    if not isinstance(src, BeirFolder):
        from hybrid_search.config.errors import ConfigError

        raise ConfigError("bench peers needs a BEIR folder (corpus, queries, qrels) to score nDCG@10")
    docs = [
        {"id": d.doc_id, "title": d.title, "text": d.text, "passage": d.passage}
        for d in validate(src.records(), src.fields)
        if isinstance(d, Document)
    ]
    judged = src.query_set()
    queries = {q: t for q, t in judged.queries.items() if judged.qrels.get(q)}
    return docs, queries, {q: dict(v) for q, v in judged.qrels.items()}


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _rate(rates: Sequence[float]) -> float:
    return round(statistics.median(rates), 1)


def _stats(seconds: Sequence[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 3), "p95_ms": round(p95 * 1000, 3)}


def bench_peers(settings: Settings, source: str | None, queries: int, rounds: int = 3) -> dict[str, Any]:
    """Ingest ``source`` (a BEIR folder; default the sample) ``rounds`` times into both systems (the median
    rate is reported: a single ingest of a few thousand documents is noisy) and search the last; see the
    module docstring."""
    from hybrid_search.app.client import HybridSearch
    from hybrid_search.app.evaluate import score_run
    from hybrid_search.encoding.encoder import Encoder
    from hybrid_search.ingest.sources import FieldMap

    docs, all_queries, qrels = _corpus(source)
    picked = dict(list(all_queries.items())[:queries])
    encoder = Encoder(settings.models.bi_encoder, settings=settings.models)
    vectors = encoder.encode_documents([d["passage"] for d in docs]).vectors
    qvecs = dict(zip(picked, encoder.encode_queries(list(picked.values())), strict=True))
    report: dict[str, Any] = {
        "bench": "peers",
        "source": source or "sample",
        "docs": len(docs),
        "queries": len(picked),
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "note": "same vectors to both; ingest: median of rounds, order alternating; wall ms per query, "
        "interleaved; LanceDB defaults (flat, native FTS, RRF); disk: every file each left in its folder",
        "settings": {"exact_below": settings.index.exact_below, "fusion": settings.search.fusion},
    }
    # each record's vector as a float32 array row, the form LanceDB is given (an Arrow column of float32)
    records = [{"id": d["id"], "title": d["title"], "text": d["text"], "vec": vectors[i]} for i, d in enumerate(docs)]
    with tempfile.TemporaryDirectory() as tmp:
        installed = importlib.util.find_spec("lancedb") is not None
        rates: dict[str, list[float]] = {"project": [], "lancedb": []}
        hs: HybridSearch | None = None
        peer = None
        for r in range(max(rounds, 1)):  # fresh folders each round, the order alternating; the last is searched
            if hs is not None:
                hs.close()
            for name in ("project", "lancedb") if r % 2 == 0 else ("lancedb", "project"):
                if name == "project":
                    hs = HybridSearch.from_settings(
                        settings.model_copy(update={"data_dir": Path(tmp) / f"ours{r}"}), index="peers"
                    )
                    t = time.perf_counter()
                    hs.ingest(records, fields=FieldMap(vector_field="vec"))
                    rates["project"].append(len(docs) / (time.perf_counter() - t))
                elif installed:
                    peer = _lancedb(Path(tmp) / f"lance{r}", docs, vectors, qvecs)
                    rates["lancedb"].append(peer[0])
        assert hs is not None
        searched = hs
        ours: dict[str, Any] = {"ingest_docs_per_s": _rate(rates["project"])}

        def ours_in(mode: str) -> Callable[[str, str], list[str]]:
            return lambda q, text: [h.doc_id for h in searched.search(text, mode=mode, top_k=10, vector=qvecs[q]).hits]

        searches: dict[str, dict[str, Callable[[str, str], list[str]]]] = {"project": {m: ours_in(m) for m in MODES}}
        if peer is not None:
            report["lancedb"] = {"ingest_docs_per_s": _rate(rates["lancedb"])}
            searches["lancedb"] = peer[1]
        else:
            report["lancedb"] = {"skipped": "lancedb is not installed: pip install 'hybrid-search[bench]'"}
        report["project"] = ours
        for mode in MODES:
            times: dict[str, list[float]] = {name: [] for name in searches}
            runs: dict[str, dict[str, list[str]]] = {name: {} for name in searches}
            for q, text in picked.items():
                for name, by_mode in searches.items():
                    start = time.perf_counter()
                    runs[name][q] = by_mode[mode](q, text)
                    times[name].append(time.perf_counter() - start)
            for name in searches:
                target = report["project" if name == "project" else "lancedb"]
                target[mode] = {**_stats(times[name]), "ndcg@10": round(score_run(qrels, runs[name])["ndcg@10"], 4)}
        searched.close()
        last = max(rounds, 1) - 1
        ours["disk_bytes"] = _disk_bytes(Path(tmp) / f"ours{last}")
        if peer is not None:
            report["lancedb"]["disk_bytes"] = _disk_bytes(Path(tmp) / f"lance{last}")
    if peer is not None:
        for mode in MODES:
            mine, theirs = report["project"][mode]["p50_ms"], report["lancedb"][mode]["p50_ms"]
            report[f"{mode}_p50_lancedb_over_project"] = round(theirs / mine, 2) if mine else None
        report["ingest_project_over_lancedb"] = round(
            report["project"]["ingest_docs_per_s"] / report["lancedb"]["ingest_docs_per_s"], 2
        )
        report["disk_project_over_lancedb"] = round(
            report["project"]["disk_bytes"] / max(report["lancedb"]["disk_bytes"], 1), 2
        )
    return report


def _lancedb(
    folder: Path, docs: Sequence[dict[str, Any]], vectors: np.ndarray, qvecs: dict[str, np.ndarray]
) -> tuple[float, dict[str, Callable[[str, str], list[str]]]]:
    import lancedb
    import pyarrow as pa
    from lancedb.rerankers import RRFReranker

    db = lancedb.connect(str(folder))
    table_data = pa.table(
        {
            "id": [d["id"] for d in docs],
            "text": [d["passage"] for d in docs],
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel()), vectors.shape[1]
            ),
        }
    )
    t = time.perf_counter()
    table: Any = db.create_table("peers", data=table_data)
    table.create_fts_index("text")
    rate = len(docs) / (time.perf_counter() - t)
    rrf = RRFReranker()

    def ids(rows: list[dict[str, Any]]) -> list[str]:
        return [str(r["id"]) for r in rows]

    def plain(text: str) -> str:  # LanceDB parses FTS text: a quote would start a phrase its index cannot answer
        return text.replace('"', " ")

    searches: dict[str, Callable[[str, str], list[str]]] = {
        "bm25": lambda q, text: ids(
            table.search(plain(text), query_type="fts").limit(10).select(["id", "_score"]).to_list()
        ),
        "knn": lambda q, text: ids(
            table.search(qvecs[q]).distance_type("dot").limit(10).select(["id", "_distance"]).to_list()
        ),
        "hybrid": lambda q, text: ids(
            table.search(query_type="hybrid").vector(qvecs[q]).text(plain(text)).rerank(rrf).limit(10).to_list()
        ),
    }
    return rate, searches
