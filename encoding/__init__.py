"""Encoding: the bi-encoder that turns passages and queries into vectors, and where model files come from.

Both ingest (passages) and search (queries) depend on it. Importing this package loads no model and no
torch; the encoder loads its model on first use.
"""

from hybrid_search.encoding.encoder import Encoder, EncodeResult, PoolingConfig
from hybrid_search.encoding.models import OFFLINE_MODELS, resolve_model

__all__ = ["OFFLINE_MODELS", "EncodeResult", "Encoder", "PoolingConfig", "resolve_model"]
