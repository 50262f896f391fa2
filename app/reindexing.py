"""What a ``reindex`` build is made with: the index's own recorded choices, with the models the caller swaps."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hybrid_search.config.errors import ConfigError

if TYPE_CHECKING:
    from hybrid_search.backends.base import IndexSpec
    from hybrid_search.config.settings import Settings

__all__ = ["reindex_settings"]


def reindex_settings(s: Settings, spec: IndexSpec, *, model: str | None, sparse_model: str | None) -> Settings:
    """``s`` for a new build of an index recorded by ``spec``: its analyzer and HNSW options carried over, the
    bi-encoder ``model`` (default: the index's own) and the sparse model (``None``: the index's own, so a
    reindex never drops the sparse field unasked; ``""``: no sparse field; else the new one)."""
    model = model or spec.model
    if not model:
        raise ConfigError("the index records no model: name the bi-encoder to reindex with (--model)")
    sparse = spec.sparse_model if sparse_model is None else sparse_model.strip()
    return s.model_copy(
        update={
            "models": s.models.model_copy(update={"bi_encoder": model, "sparse_encoder": sparse}),
            "index": s.index.model_copy(
                update={
                    "analyzer": spec.analyzer,
                    "hnsw_m": spec.hnsw_m,
                    "hnsw_ef_construction": spec.hnsw_ef_construction,
                }
            ),
            # stored documents were validated when they were ingested: any refusal now is fatal, so the new
            # build holds exactly what the old one does or is never served
            "ingest": s.ingest.model_copy(update={"strict": True, "check_fields": False}),
        }
    )
