"""A long-document evaluation built from a labelled set of short passages (BEIR layout), with no download:
the passages are shuffled and concatenated into synthetic documents of ``per_doc`` passages each, and the
qrels lifted to those documents (a document is as relevant as its most relevant passage).

The same pipeline is then measured three ways: on the passages themselves (the reference), on the long
documents with ``chunking none`` (one vector from each document's first max-length tokens: the truncated
baseline) and with ``chunking auto`` (passages at ingest, best-passage kNN, rerank on passages). Beside
nDCG@10 and Recall@100 per mode it reports how often the best passage of a relevant top hit overlaps a
gold passage, the ingest rate in documents and passages per second, and search p50 with and without
passages. It drives the public client and ``evaluate`` only; it never re-implements the pipeline.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybrid_search.config.errors import ConfigError
from hybrid_search.config.settings import Settings
from hybrid_search.config.text import passage_text

__all__ = ["LongCorpus", "bench_long_documents", "long_corpus"]

DEFAULT_MODES = ("bm25", "knn", "hybrid", "hybrid+rerank")
_JOIN = "\n\n"


@dataclass(frozen=True, slots=True)
class LongCorpus:
    """Synthetic long documents, their lifted qrels, and where each source passage lies in them."""

    passages: list[dict[str, Any]]  # the source passages as records (id, title, text)
    documents: list[dict[str, Any]]  # the long documents as records
    queries: dict[str, str]
    passage_qrels: dict[str, dict[str, int]]
    document_qrels: dict[str, dict[str, int]]
    spans: dict[str, tuple[str, int, int]]  # passage id -> (document id, start, end) in the document's text


def long_corpus(folder: str | Path, *, per_doc: int = 8, seed: int = 0, max_queries: int | None = None) -> LongCorpus:
    """Documents of ``per_doc`` shuffled passages of the BEIR folder (each passage's title, if any, leads its
    paragraph), the queries that have a relevant passage, and the qrels at both levels."""
    from hybrid_search.ingest.sources import BeirFolder, open_source
    from hybrid_search.ingest.validate import Document, validate

    src = open_source(str(folder))
    if not isinstance(src, BeirFolder):
        raise ConfigError(f"{folder}: the long-document evaluation needs a BEIR folder (corpus, queries, qrels)")
    passages = [
        {"id": d.doc_id, "title": d.title, "text": d.text}
        for d in validate(src.records(), src.fields)
        if isinstance(d, Document)
    ]
    order = list(range(len(passages)))
    random.Random(seed).shuffle(order)
    documents: list[dict[str, Any]] = []
    spans: dict[str, tuple[str, int, int]] = {}
    for n, first in enumerate(range(0, len(order), per_doc)):
        doc_id, text = f"long-{n}", ""
        for i in order[first : first + per_doc]:
            paragraph = passage_text(passages[i]["title"], passages[i]["text"])
            if text:
                text += _JOIN
            spans[passages[i]["id"]] = (doc_id, len(text), len(text) + len(paragraph))
            text += paragraph
        documents.append({"id": doc_id, "title": "", "text": text})
    judged = src.query_set()
    qrels = {q: {d: g for d, g in v.items() if g > 0 and d in spans} for q, v in judged.qrels.items()}
    queries = {q: t for q, t in judged.queries.items() if qrels.get(q)}
    if max_queries is not None:
        queries = dict(list(queries.items())[:max_queries])
    doc_qrels: dict[str, dict[str, int]] = {}
    for q in queries:
        lifted: dict[str, int] = {}
        for pid, grade in qrels[q].items():
            doc = spans[pid][0]
            lifted[doc] = max(lifted.get(doc, 0), grade)
        doc_qrels[q] = lifted
    return LongCorpus(passages, documents, queries, {q: qrels[q] for q in queries}, doc_qrels, spans)


def _passage_accuracy(hs: Any, corpus: LongCorpus, mode: str) -> dict[str, float]:
    """Of the queries whose top hit is a relevant document: how often its best passage overlaps a gold passage."""
    hits_right = overlaps = 0
    for qid, text in corpus.queries.items():
        found = hs.search(text, mode=mode, top_k=1).hits
        if not found or found[0].doc_id not in corpus.document_qrels[qid]:
            continue
        hits_right += 1
        best = found[0].passage
        gold = [corpus.spans[p] for p in corpus.passage_qrels[qid]]
        if best is not None and any(d == found[0].doc_id and best.start < e and s < best.end for d, s, e in gold):
            overlaps += 1
    return {"relevant_top1": hits_right, "best_passage_overlaps_gold": round(overlaps / max(hits_right, 1), 4)}


def _measure(
    settings: Settings,
    folder: Path,
    name: str,
    records: Sequence[Mapping[str, Any]],
    chunking: str,
    corpus: LongCorpus,
    qrels: Mapping[str, Mapping[str, int]],
    modes: Sequence[str],
) -> dict[str, Any]:
    from hybrid_search.app.client import HybridSearch
    from hybrid_search.app.evaluate import evaluate

    ingest = settings.ingest.model_copy(update={"chunking": chunking})
    run_settings = settings.model_copy(update={"data_dir": folder / name, "ingest": ingest})
    with HybridSearch.from_settings(run_settings, index=name) as hs:
        t = time.perf_counter()
        summary = hs.ingest(list(records))
        seconds = time.perf_counter() - t
        report = evaluate(hs.pipeline, list(corpus.queries.items()), qrels, modes)
        out: dict[str, Any] = {
            "chunking": chunking,
            "documents": summary.stored,
            "passages": summary.passages,
            "truncated": summary.truncated,
            "ingest_seconds": round(seconds, 2),
            "ingest_docs_per_s": round(summary.stored / seconds, 1),
            "ingest_passages_per_s": round(summary.passages / seconds, 1),
            "modes": {m: r.to_dict() for m, r in report.modes.items()},
        }
        if name == "long-auto":
            out["passage_hits"] = {m: _passage_accuracy(hs, corpus, m) for m in ("knn", "hybrid")}
    return out


def bench_long_documents(
    settings: Settings,
    source: str,
    *,
    per_doc: int = 8,
    queries: int | None = 200,
    modes: Sequence[str] = DEFAULT_MODES,
    seed: int = 0,
) -> dict[str, Any]:
    """The three measurements of the module docstring as one JSON-ready report."""
    corpus = long_corpus(source, per_doc=per_doc, seed=seed, max_queries=queries)
    report: dict[str, Any] = {
        "bench": "long-documents",
        "source": str(source),
        "per_doc": per_doc,
        "documents": len(corpus.documents),
        "source_passages": len(corpus.passages),
        "queries": len(corpus.queries),
        "model": settings.models.bi_encoder,
    }
    with tempfile.TemporaryDirectory() as tmp:
        runs = [
            ("passages", corpus.passages, "auto", corpus.passage_qrels),
            ("long-none", corpus.documents, "none", corpus.document_qrels),
            ("long-auto", corpus.documents, "auto", corpus.document_qrels),
        ]
        for name, records, chunking, qrels in runs:
            report[name] = _measure(settings, Path(tmp), name, records, chunking, corpus, qrels, modes)
    for mode in modes:
        ref = report["passages"]["modes"][mode]["ndcg@10"]
        report[f"{mode}_ndcg_gap_auto_vs_passages"] = round(report["long-auto"]["modes"][mode]["ndcg@10"] - ref, 4)
        report[f"{mode}_ndcg_gap_none_vs_passages"] = round(report["long-none"]["modes"][mode]["ndcg@10"] - ref, 4)
        p50_auto = report["long-auto"]["modes"][mode]["latency_ms"]["p50"]
        p50_none = report["long-none"]["modes"][mode]["latency_ms"]["p50"]
        report[f"{mode}_p50_auto_over_none"] = round(p50_auto / p50_none, 2) if p50_none else None
    return report
