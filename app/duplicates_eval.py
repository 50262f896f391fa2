"""``duplicates-eval``: mined pair scores against labelled duplicate pairs, beside sentence-transformers.

The questions of the labelled pairs are ingested into a fresh embedded index through the normal pipeline,
mined with :func:`mine_duplicates`, and each labelled pair takes the similarity the miner gave it (0 when it
was not among either question's neighbours). The same is done with sentence-transformers'
``paraphrase_mining`` on the same model as the reference. With cross-encoder confirmation, a mined labelled
pair takes the cross-encoder's probability instead. Each method is timed end to end, encoding included.
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_search.app.duplicates import PairScoring, average_precision, best_f1, mine_duplicates
from hybrid_search.config.errors import SourceError
from hybrid_search.config.extras import require
from hybrid_search.config.settings import Settings


def read_labelled_pairs(
    path: str | Path, max_pairs: int | None = None
) -> tuple[dict[str, str], list[tuple[str, str, int]]]:
    """(question id -> text, [(qid1, qid2, is_duplicate)]) from a Quora-style pairs CSV."""
    questions: dict[str, str] = {}
    pairs: list[tuple[str, str, int]] = []
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                a, b = row["qid1"], row["qid2"]
                questions.setdefault(a, row["question1"])
                questions.setdefault(b, row["question2"])
                pairs.append((a, b, int(row["is_duplicate"])))
                if max_pairs and len(pairs) >= max_pairs:
                    break
    except (OSError, KeyError, ValueError) as exc:
        raise SourceError(f"{path}: need a CSV with qid1, qid2, question1, question2, is_duplicate ({exc})") from exc
    return questions, pairs


def _scoring(
    name: str, pair_scores: dict[tuple[str, str], float], labelled: list[tuple[str, str, int]], seconds: float
) -> PairScoring:
    scores = [pair_scores.get((a, b) if a < b else (b, a), 0.0) for a, b, _ in labelled]
    labels = [y for _, _, y in labelled]
    f1, threshold = best_f1(scores, labels)
    return PairScoring(name, average_precision(scores, labels), f1, threshold, seconds)


def run_duplicates_eval(
    pairs_csv: str | Path, settings: Settings, *, top_k: int = 10, max_pairs: int | None = None, progress: bool = False
) -> dict[str, Any]:
    from hybrid_search.backends.embedded import EmbeddedBackend
    from hybrid_search.encoding.encoder import Encoder
    from hybrid_search.ingest.pipeline import run_ingest
    from hybrid_search.ingest.sources import open_source
    from hybrid_search.rerank.cross_encoder import CrossEncoderReranker

    questions, labelled = read_labelled_pairs(pairs_csv, max_pairs)
    encoder = Encoder(settings=settings.models)
    results: list[PairScoring] = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "questions.jsonl"
        corpus.write_text(
            "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in questions.items()), encoding="utf-8"
        )
        data = settings.model_copy(update={"data_dir": Path(tmp) / "data"})
        encoder.dims  # noqa: B018 - resolve the model before timing starts, as the reference's load is not timed
        start = time.perf_counter()
        with EmbeddedBackend(data_dir=data.data_dir) as backend:
            run_ingest(open_source(corpus), backend, encoder, data, alias="questions", progress=progress)
            mined = mine_duplicates(backend, "questions", threshold=-1.0, top_k=top_k)
            ours = {(a, b): score for a, b, score in mined.scores()}
            mined.close()
        results.append(_scoring("hybrid-search mine_duplicates", ours, labelled, time.perf_counter() - start))

        reranker = CrossEncoderReranker(settings=settings.models)
        labelled_keys = {(a, b) if a < b else (b, a) for a, b, _ in labelled}
        to_confirm = [k for k in ours if k in labelled_keys]
        start = time.perf_counter()
        logits = reranker.score_pairs([(questions[a], questions[b]) for a, b in to_confirm])
        confirmed = dict(zip(to_confirm, (1.0 / (1.0 + np.exp(-logits))).tolist(), strict=True))
        results.append(
            _scoring(
                "hybrid-search + cross-encoder confirmation",
                confirmed,
                labelled,
                results[0].seconds + time.perf_counter() - start,
            )
        )

    SentenceTransformer = _sentence_transformers().SentenceTransformer
    paraphrase_mining = _sentence_transformers().util.paraphrase_mining

    reference = SentenceTransformer(str(encoder.folder), device=encoder.device)
    ids = list(questions)
    start = time.perf_counter()
    found = paraphrase_mining(
        reference, [questions[q] for q in ids], top_k=top_k, max_pairs=10**9, show_progress_bar=False
    )
    ref_scores: dict[tuple[str, str], float] = {}
    for score, i, j in found:
        a, b = ids[int(i)], ids[int(j)]
        ref_scores[(a, b) if a < b else (b, a)] = float(score)
    results.append(
        _scoring("sentence-transformers paraphrase_mining", ref_scores, labelled, time.perf_counter() - start)
    )
    return {
        "pairs": len(labelled),
        "questions": len(questions),
        "duplicates": sum(y for *_, y in labelled),
        "top_k": top_k,
        "model": encoder.model_name,
        "device": encoder.device,
        "methods": {r.name: r.to_dict() for r in results},
    }


def _sentence_transformers() -> Any:
    """The reference implementation the comparison runs beside (in the ``dev`` extra)."""
    return require("sentence_transformers", extra="dev", purpose="the sentence-transformers reference")
