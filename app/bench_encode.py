"""``hybrid-search bench encode``: documents/s of our encoders beside sentence-transformers' on the same texts.

The bi-encoder runs in the precision and runtime the settings choose (``--dtypes`` / ``--runtimes`` run it once
per choice), the reference as sentence-transformers loads it (fp32 on a CPU, the same half precision as ours on
a GPU). With ``--quality`` on a BEIR folder, both also encode the whole corpus and its queries, and exact dense
retrieval over each side's vectors gives nDCG@10 and Recall@100 side by side: what a faster precision or
runtime costs in quality, measured rather than assumed.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hybrid_search.config.errors import ConfigError
from hybrid_search.config.extras import require
from hybrid_search.config.settings import Settings

__all__ = ["bench_encode", "bench_encode_sparse"]


def _texts(source: str | None, n: int) -> tuple[list[str], list[str]]:
    """Up to ``n`` passages and the queries of ``source`` (a BEIR folder or file; default the sample)."""
    from hybrid_search.ingest.sources import BeirFolder, open_source
    from hybrid_search.ingest.validate import Document, validate

    src = open_source(source or "sample")
    passages: list[str] = []
    for item in validate(src.records(), src.fields):
        if isinstance(item, Document):
            passages.append(item.passage)
        if len(passages) >= n:
            break
    queries = list(src.query_set().queries.values()) if isinstance(src, BeirFolder) else passages[:10]
    while passages and len(passages) < n:  # a small corpus is cycled so timings cover n texts
        passages += passages[: n - len(passages)]
    return passages, queries


def _time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: model load, allocator, kernels
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def _machine(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "device": device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def bench_encode(
    settings: Settings, source: str | None, docs: int, batch_size: int, repeats: int, *, quality: bool = False
) -> dict[str, Any]:
    SentenceTransformer = _sentence_transformers().SentenceTransformer

    from hybrid_search.encoding.encoder import Encoder

    passages, _ = _texts(source, docs)
    ours = Encoder(settings=settings.models)
    ours.load()
    reference = SentenceTransformer(str(ours.folder), device=ours.device)
    if ours.device.startswith("cuda") and ours.precision != str(reference.dtype).removeprefix("torch."):
        reference = reference.to(ours._model.dtype)
    t_ours = _time(lambda: ours.encode_documents(passages), repeats)
    t_ref = _time(
        lambda: reference.encode(passages, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False),
        repeats,
    )
    report = _encode_report("encode", ours, passages, t_ours, t_ref, "SentenceTransformer.encode", batch_size)
    report["ours"] |= {"runtime": ours.runtime, "precision": ours.precision, "query_precision": ours.query_precision}
    report["reference"]["precision"] = str(reference.dtype).removeprefix("torch.")
    if quality:
        report["quality"] = _quality(ours, reference, source, batch_size)
    return report


def _quality(ours: Any, reference: Any, source: str | None, batch_size: int) -> dict[str, Any]:
    """nDCG@10 / Recall@100 of exact dense retrieval over the whole corpus, with our vectors and with the
    reference's (each side applying the model's query and document prompts)."""
    from hybrid_search.app.evaluate import score_run
    from hybrid_search.ingest.sources import BeirFolder, open_source
    from hybrid_search.ingest.validate import Document, validate

    src = open_source(source or "sample")
    if not isinstance(src, BeirFolder):
        raise ConfigError("bench encode --quality needs --source: a BEIR folder (corpus, queries, qrels)")
    corpus = [d for d in validate(src.records(), src.fields) if isinstance(d, Document)]
    judged = src.query_set()
    ids = [d.doc_id for d in corpus]
    passages = [d.passage for d in corpus]
    qids = list(judged.queries)
    queries = [judged.queries[q] for q in qids]
    t = time.perf_counter()
    ours_docs = ours.encode_documents(passages).vectors
    t_ours = time.perf_counter() - t
    ours_queries = ours.encode_queries(queries)
    kw: dict[str, Any] = {"batch_size": batch_size, "normalize_embeddings": True, "show_progress_bar": False}
    t = time.perf_counter()
    ref_docs = reference.encode_document(passages, **kw)
    t_ref = time.perf_counter() - t
    ref_queries = reference.encode_query(queries, **kw)

    def scores(doc_vectors: np.ndarray, query_vectors: np.ndarray) -> dict[str, float]:
        run: dict[str, list[str]] = {}
        for start in range(0, len(qids), 256):  # 256 queries at a time: memory stays bounded
            block = np.asarray(query_vectors[start : start + 256]) @ np.asarray(doc_vectors).T
            k = min(100, block.shape[1])
            top = np.argpartition(-block, k - 1, axis=1)[:, :k]
            for row, qid in enumerate(qids[start : start + 256]):
                order = top[row][np.argsort(-block[row, top[row]], kind="stable")]
                run[qid] = [ids[i] for i in order]
        return score_run(judged.qrels, run)

    ours_scores, ref_scores = scores(ours_docs, ours_queries), scores(ref_docs, ref_queries)
    cosine = np.sum(ours_docs * ref_docs, axis=1)
    return {
        "source": str(source),
        "documents": len(ids),
        "queries": len(qids),
        "ours": ours_scores | {"docs_per_s": len(ids) / t_ours},
        "reference": ref_scores | {"docs_per_s": len(ids) / t_ref},
        "ndcg@10_difference": ours_scores["ndcg@10"] - ref_scores["ndcg@10"],
        "document_cosine_to_reference": {"min": float(cosine.min()), "mean": float(cosine.mean())},
    }


def _encode_report(
    bench: str, ours: Any, passages: Sequence[str], t_ours: float, t_ref: float, reference: str, batch_size: int
) -> dict[str, Any]:
    """Our encoder's rate beside the sentence-transformers reference's on the same texts, and their ratio."""
    return {
        "bench": bench,
        "model": ours.model_name,
        "texts": len(passages),
        "machine": _machine(ours.device),
        "ours": {"docs_per_s": len(passages) / t_ours, "batch_tokens": ours.batch_tokens},
        "reference": {
            "name": f"sentence_transformers.{reference}",
            "batch_size": batch_size,
            "docs_per_s": len(passages) / t_ref,
        },
        "ratio_ours_to_reference": t_ref / t_ours,
    }


def bench_encode_sparse(
    settings: Settings, source: str | None, docs: int, batch_size: int, repeats: int
) -> dict[str, Any]:
    """Our SPLADE encoder against sentence-transformers' ``SparseEncoder`` on the same passages and model."""
    SparseReference = _sentence_transformers().SparseEncoder

    from hybrid_search.encoding.sparse import SparseEncoder

    passages, _ = _texts(source, docs)
    ours = SparseEncoder(settings.models.sparse_encoder or "splade-tiny", settings=settings.models)
    ours.load()
    reference = SparseReference(str(ours.folder), device=ours.device)
    last: list[Any] = []

    def encode() -> None:
        last[:] = ours.encode_documents(passages)  # the vectors of the last timed pass, for their sizes

    t_ours = _time(encode, repeats)
    t_ref = _time(lambda: reference.encode(passages, batch_size=batch_size, show_progress_bar=False), repeats)
    report = _encode_report("encode-sparse", ours, passages, t_ours, t_ref, "SparseEncoder.encode", batch_size)
    report["mean_nonzero_tokens"] = sum(len(v) for v in last) / len(last) if last else 0.0
    return report


def _sentence_transformers() -> Any:
    """The reference implementation the comparison runs beside (in the ``dev`` extra)."""
    return require("sentence_transformers", extra="dev", purpose="the sentence-transformers reference")
