"""Training: fine-tune the bi-encoder, a cross-encoder or a SPLADE sparse encoder on the user's pairs, or
adapt the bi-encoder to an index's documents without labels.

The training loops are sentence-transformers' own (``SentenceTransformerTrainer``, ``CrossEncoderTrainer``, in
the ``train`` extra); this module reads and checks the user's pairs, mines hard negatives through the
project's backend (any backend, at corpus scale), stages the output folder so an interrupted run leaves the
previous model untouched, and measures before and after. Output folders are ordinary sentence-transformers
folders: they load there, in our ``Encoder`` and in our ``CrossEncoderReranker``.

Pairs, from a CSV, JSONL or Parquet file:

- ``question1, question2[, is_duplicate]`` (Quora's columns) or ``sentence1, sentence2[, label]``: labelled
  pairs; the positives (label 1) are what ranking losses learn from.
- ``anchor, positive[, negative]``: positives, optionally with a negative each.
- a BEIR folder: each judged query with each of its relevant documents as a positive.
"""

from hybrid_search.app.training.mining import MiningReport, mine_hard_negatives
from hybrid_search.app.training.pairs import PairSet, index_passages, read_pairs
from hybrid_search.app.training.quality import knn_quality, rerank_quality, sparse_quality
from hybrid_search.app.training.trainers import (
    ADAPT_METHODS,
    LOSSES,
    TrainOptions,
    TrainSummary,
    adapt,
    staged_output,
    train_bi_encoder,
    train_cross_encoder,
    train_sparse_encoder,
)

__all__ = [
    "index_passages",
    "ADAPT_METHODS",
    "LOSSES",
    "MiningReport",
    "PairSet",
    "TrainOptions",
    "TrainSummary",
    "adapt",
    "knn_quality",
    "mine_hard_negatives",
    "read_pairs",
    "rerank_quality",
    "sparse_quality",
    "train_sparse_encoder",
    "staged_output",
    "train_bi_encoder",
    "train_cross_encoder",
]
