"""Rerank: a cross-encoder rescoring the top hits, on transformers (GPU or CPU) or onnxruntime (CPU)."""

from rerank.cross_encoder import CrossEncoderReranker, Reranker, rerank_hits

__all__ = ["CrossEncoderReranker", "Reranker", "rerank_hits"]
