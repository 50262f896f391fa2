"""Hard negatives for ranking losses, mined by kNN through the project's backend (any backend, at corpus
scale): for each anchor, the nearest document that is not its positive and not suspiciously close to it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hybrid_search.app.training.pairs import norm_text
from hybrid_search.config.errors import ConfigError

if TYPE_CHECKING:
    from hybrid_search.app.client import HybridSearch

__all__ = ["MiningReport", "mine_hard_negatives"]

log = logging.getLogger(__name__)


@dataclass
class MiningReport:
    anchors: int = 0
    mined: int = 0
    skipped_positive: int = 0  # candidates that were the anchor itself or one of its known positives
    skipped_margin: int = 0  # candidates scoring too close to the positive (likely unlabelled positives)
    none_found: int = 0  # anchors with no usable candidate: left out of the triplets

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def mine_hard_negatives(
    hs: HybridSearch,
    anchors: Sequence[str],
    positives: Sequence[str],
    *,
    depth: int = 20,
    margin: float = 0.05,
    batch: int = 256,
) -> tuple[list[tuple[str, str, str]], MiningReport]:
    """(anchor, positive, negative) triplets, the negative found by kNN over ``hs``'s index (one batched call
    per ``batch`` anchors: the HNSW graph on the embedded backend, ``_msearch`` on a cluster).

    A candidate is never the anchor or any positive the pairs give for it (compared by normalised text), and
    never scores above ``(1 - margin)`` times the positive's similarity to the anchor: a candidate that close
    is more likely an unlabelled duplicate than a negative. Anchors with no usable candidate are counted and
    left out."""
    if not 0.0 <= margin < 1.0:
        raise ConfigError(f"--margin must be in [0, 1), got {margin}")
    known: dict[str, set[str]] = {}
    for a, p in zip(anchors, positives, strict=True):
        known.setdefault(norm_text(a), {norm_text(a)}).add(norm_text(p))
    backend, index, encoder = hs.backend, hs.index, hs.query_encoder
    num_candidates = max(hs.settings.search.num_candidates, depth)
    report = MiningReport()
    out: list[tuple[str, str, str]] = []
    for start in range(0, len(anchors), batch):
        a_part, p_part = list(anchors[start : start + batch]), list(positives[start : start + batch])
        a_vec = encoder.encode_queries(a_part)
        p_vec = encoder.encode_documents(p_part).vectors
        pos_sim = np.sum(np.asarray(a_vec) * np.asarray(p_vec), axis=1)
        found = backend.knn_batch(index, np.asarray(a_vec, dtype=np.float32), depth, num_candidates)
        texts = backend.get_texts(index, sorted({d for hits in found for d, _ in hits}))
        for anchor, positive, sim, hits in zip(a_part, p_part, pos_sim, found, strict=True):
            report.anchors += 1
            exclude = known[norm_text(anchor)]
            negative = None
            for doc_id, score in hits:
                text = texts.get(doc_id, "")
                if not text or norm_text(text) in exclude:
                    report.skipped_positive += 1
                    continue
                if score > (1.0 - margin) * float(sim):
                    report.skipped_margin += 1
                    continue
                negative = text
                break
            if negative is None:
                report.none_found += 1
                continue
            out.append((anchor, positive, negative))
            report.mined += 1
    return out, report
