"""Rerank: a cross-encoder scoring (query, passage) pairs, on transformers (GPU or CPU) or onnxruntime (CPU).

It satisfies ``hybrid_search.search.interfaces.Reranker``; applying its scores to hits is the searcher's job.
"""

from hybrid_search.rerank.cross_encoder import CrossEncoderReranker

__all__ = ["CrossEncoderReranker"]
