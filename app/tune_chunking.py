"""Chunking measured by ``tune``, never applied (changing it needs a re-ingest): the stored documents are
encoded again with each chunking (``none``: one vector from the first max-length tokens; the index's own;
``auto``), their passage vectors kept on disk per build, write generation, model and chunking (a rerun of
``tune`` reads them back instead of encoding again), and each chunking's exact max-sim kNN runs replace the
cached kNN runs; the whole grid is then cross-validated again, so tuned pipeline is compared with tuned
pipeline. The cross-encoder reads each document's best passage where the chunking has passages and the
index holds them, the whole document otherwise. Skipped, with the reason, when every document fits the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hybrid_search.app.tune_stats import mean_over, measured_alternative
from hybrid_search.ingest.chunking import Chunking

if TYPE_CHECKING:
    from hybrid_search.app.client import HybridSearch
    from hybrid_search.app.tune import RunCache

__all__ = ["CHUNKINGS", "chunking_effect", "passage_vectors"]

CHUNKINGS = ("none", "auto")  # measured beside the index's own chunking


def passage_vectors(hs: HybridSearch, chunking: Chunking, cache_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(doc ids, the document each passage vector belongs to, the passage vectors) of every stored document
    chunked with ``chunking`` by the index's model; cached in ``cache_dir``."""
    from hybrid_search.encoding.models import model_identity
    from hybrid_search.ingest.passages import DocumentEncoder
    from hybrid_search.ingest.validate import Document

    encoder = hs.query_encoder  # the index's own model
    name = f"{model_identity(encoder.model_name)}-{chunking}".replace("/", "_").replace(":", "_")
    path = cache_dir / f"{name}.npz"
    if path.exists():
        saved = np.load(path, allow_pickle=False)
        return [str(i) for i in saved["ids"]], saved["owner"], saved["vectors"]
    coder = DocumentEncoder(encoder, chunking=chunking)
    ids: list[str] = []
    owner: list[int] = []
    vectors: list[np.ndarray] = []
    for batch in hs.backend.iter_documents(hs.index):
        docs = [Document(d.doc_id, d.title, d.text, position=i) for i, d in enumerate(batch)]
        for doc in coder.encode(docs).docs:
            found = [p.vector for p in doc.passages] or [doc.vector]
            owner += [len(ids)] * len(found)
            vectors += found
            ids.append(doc.doc_id)
    matrix = np.stack(vectors).astype(np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, ids=np.asarray(ids), owner=np.asarray(owner, np.int64), vectors=matrix)
    tmp.replace(path)
    return ids, np.asarray(owner, np.int64), matrix


def _max_sim_runs(
    ids: Sequence[str], owner: np.ndarray, matrix: np.ndarray, queries: Mapping[str, np.ndarray], depth: int
) -> dict[str, list[tuple[str, float]]]:
    """Exact kNN runs: each document at its best passage's inner product with the query."""
    runs: dict[str, list[tuple[str, float]]] = {}
    for qid, vector in queries.items():
        best = np.full(len(ids), -np.inf, dtype=np.float32)
        np.maximum.at(best, owner, matrix @ np.asarray(vector, dtype=np.float32))
        top = np.argsort(-best, kind="stable")[:depth]
        runs[qid] = [(ids[i], float(best[i])) for i in top]
    return runs


def _long_documents(hs: HybridSearch) -> int:
    """How many stored documents the model reads only part of."""
    encoder = hs.query_encoder
    long = 0
    for batch in hs.backend.iter_documents(hs.index):
        for doc, tokens in zip(batch, encoder.token_offsets([d.text for d in batch]), strict=True):
            long += len(tokens) + encoder.passage_overhead(doc.title) > encoder.max_length
    return long


PerQuery = Mapping[str, float]


def chunking_effect(
    cache: RunCache,
    qids: Sequence[str],
    *,
    metric: str,
    cross_validate: Callable[[RunCache], PerQuery],
    knn_alone: Callable[[RunCache], PerQuery],
) -> dict[str, Any]:
    """Each chunking's cross-validated score with the grid tuned on its kNN runs (``cross_validate``: per
    query, held out), the kNN leg's own score (``knn_alone``), and the advice. ``tune`` gives the two
    scorers, so this module needs nothing of it at run time."""

    hs = cache.hs
    spec = hs.backend.index_spec(hs.index)
    current = (spec.chunking or ("auto" if spec.passages else "none")) if spec is not None else "none"
    long = _long_documents(hs)
    if not long:
        return {"current": current, "skipped": "every document fits the model: chunking changes nothing"}
    stats = hs.stats()
    cache_dir = Path(hs.settings.data_dir) / "tune-cache" / hs.index / f"{stats.physical}-g{stats.write_generation}"
    scores: dict[str, dict[str, float]] = {}
    knn: dict[str, float] = {}  # the kNN leg at the default settings, untuned: the chunking's own effect

    for name in dict.fromkeys([current, *CHUNKINGS]):
        chunking = Chunking.parse(name)
        ids, owner, matrix = passage_vectors(hs, chunking, cache_dir)
        runs = _max_sim_runs(ids, owner, matrix, cache.vectors, cache.depth)
        trial = cache.with_leg("knn", runs, passages=cache.passages and chunking.splits)
        scores[name] = dict(cross_validate(trial))
        knn[name] = mean_over(knn_alone(trial), qids)
    alternative, gain, p, recommend = measured_alternative(scores, current, qids)
    return {
        "current": current,
        "alternative": alternative,
        "long_documents": long,
        "cross_validated": {c: mean_over(v, qids) for c, v in scores.items()},
        "knn": knn,
        "gain": gain,
        "p": p,
        "recommend": recommend,
        "advice": (
            f"ingest again with --chunking {alternative}: {metric} {gain:+.4f} cross-validated (p = {p:.3f}); the "
            "profile does not change it"
            if recommend
            else f"keep chunking {current}: {alternative} measured {gain:+.4f} (p = {p:.3f})"
        ),
    }
