"""Before/after measurements of a trained model: exact kNN quality of a bi-encoder and rerank quality of a
cross-encoder on a judged BEIR folder (nDCG@10, Recall@100)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_search.app.training.pairs import read_passages
from hybrid_search.app.training.trainers import base_folder

__all__ = ["knn_quality", "rerank_quality", "sparse_quality"]

log = logging.getLogger(__name__)


def _exact_knn(
    model_folder: str | Path, source: str | Path, *, depth: int, max_queries: int | None, device: str
) -> tuple[Any, list[tuple[str, str]], dict[str, list[tuple[str, float]]], dict[str, str]]:
    """(query set, judged queries, exact kNN run with scores, doc id -> passage) of a bi-encoder on a BEIR
    folder, the corpus encoded in memory: a measurement that needs no index."""
    from hybrid_search.app.evaluate import select_queries
    from hybrid_search.config.settings import ModelSettings
    from hybrid_search.encoding.encoder import Encoder
    from hybrid_search.ingest.sources import open_query_set

    query_set = open_query_set(source)
    queries = select_queries(query_set.queries, query_set.qrels, max_queries)
    encoder = Encoder(str(model_folder), settings=ModelSettings(device=device))
    passages = read_passages(source)
    ids = list(passages)
    docs = np.asarray(encoder.encode_documents(list(passages.values())).vectors, dtype=np.float32)
    qvec = np.asarray(encoder.encode_queries([t for _, t in queries]), dtype=np.float32)
    run: dict[str, list[tuple[str, float]]] = {}
    for start in range(0, len(queries), 256):
        sims = qvec[start : start + 256] @ docs.T
        top = np.argsort(-sims, axis=1)[:, :depth]
        for (qid, _), row, srow in zip(queries[start : start + 256], top, sims, strict=True):
            run[qid] = [(ids[i], float(srow[i])) for i in row]
    return query_set, queries, run, passages


def _metrics(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Sequence[str]]) -> dict[str, float]:
    from hybrid_search.app.evaluate import score_run

    scores = score_run(qrels, run, ignore_identical_ids=True)
    return {k: round(float(v), 4) for k, v in scores.items() if k in ("ndcg@10", "recall@100", "mrr@10")}


def knn_quality(
    model_folder: str | Path, source: str | Path, *, max_queries: int | None = None, device: str = "auto"
) -> dict[str, float]:
    """Exact kNN nDCG@10, Recall@100 and MRR@10 of a bi-encoder on a BEIR folder (query ids equal to a
    document id are ignored, as BEIR-Quora needs)."""
    query_set, _, run, _ = _exact_knn(model_folder, source, depth=101, max_queries=max_queries, device=device)
    return _metrics(query_set.qrels, {q: [d for d, _ in hits] for q, hits in run.items()})


def rerank_quality(
    cross_encoder: str | Path,
    source: str | Path,
    *,
    bi_encoder: str,
    depth: int = 20,
    max_queries: int | None = None,
    device: str = "auto",
) -> dict[str, float]:
    """nDCG@10 of exact kNN with ``bi_encoder``, and of its top ``depth`` reranked by ``cross_encoder``
    alone (a = 1) and interpolated with the kNN score (a = 0.5), on a BEIR folder."""
    from hybrid_search.config.settings import ModelSettings
    from hybrid_search.rerank.cross_encoder import CrossEncoderReranker
    from hybrid_search.search.searcher import blend_rerank_scores

    query_set, queries, run, passages = _exact_knn(
        base_folder(bi_encoder), source, depth=101, max_queries=max_queries, device=device
    )
    reranker = CrossEncoderReranker(str(cross_encoder), settings=ModelSettings(device=device))
    out = {"knn_ndcg@10": _metrics(query_set.qrels, {q: [d for d, _ in h] for q, h in run.items()})["ndcg@10"]}
    reranked: dict[float, dict[str, list[str]]] = {1.0: {}, 0.5: {}}
    for qid, text in queries:
        head, tail = run[qid][:depth], run[qid][depth:]
        ce = reranker.score(text, [passages[d] for d, _ in head])
        for a in reranked:
            final = blend_rerank_scores([s for _, s in head], ce, a)
            order = sorted(range(len(head)), key=lambda i: (-final[i], i))
            reranked[a][qid] = [head[i][0] for i in order] + [d for d, _ in tail]
    out[f"rerank@{depth}_ndcg@10"] = _metrics(query_set.qrels, reranked[1.0])["ndcg@10"]
    out[f"rerank@{depth}_a0.5_ndcg@10"] = _metrics(query_set.qrels, reranked[0.5])["ndcg@10"]
    return out


def sparse_quality(
    model_folder: str | Path, source: str | Path, *, max_queries: int | None = None, device: str = "auto"
) -> dict[str, float]:
    """Exact learned-sparse (dot product) nDCG@10, Recall@100 and MRR@10 of a SPLADE model on a BEIR folder,
    the corpus encoded in memory into the embedded backend's exact postings."""
    import json

    from hybrid_search.app.evaluate import select_queries
    from hybrid_search.backends.embedded.sparse import SparsePostings
    from hybrid_search.config.settings import ModelSettings
    from hybrid_search.encoding.sparse import SparseEncoder
    from hybrid_search.ingest.sources import open_query_set

    query_set = open_query_set(source)
    queries = select_queries(query_set.queries, query_set.qrels, max_queries)
    encoder = SparseEncoder(str(model_folder), settings=ModelSettings(device=device))
    try:
        passages = read_passages(source)
        ids = list(passages)
        vectors = encoder.encode_documents(list(passages.values()))
        postings = SparsePostings((i, json.dumps(v)) for i, v in enumerate(vectors))
        encoded = encoder.encode_queries([t for _, t in queries])
    finally:
        encoder.close()
    run = {qid: [ids[i] for i, _ in postings.search(q, 101)] for (qid, _), q in zip(queries, encoded, strict=True)}
    return _metrics(query_set.qrels, run)
