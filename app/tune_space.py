"""What ``tune`` and ``tune-defaults`` search over: one ``Pipeline`` value per candidate setting, and the grid.

A pipeline's first stage is one leg or a fusion of two or three (``bm25``, ``knn``, ``sparse``), named as a
search mode names them (``hybrid`` is bm25 + knn, ``hybrid3`` all three, ``bm25+sparse`` any other pair).
Linear fusions try every weighting on a 0.1 grid that gives each leg at least 0.1 (9 for two legs, 36 for
three), under each normaliser; RRF tries each k with the legs weighing the same (plain RRF). Each first stage
is tried alone and with every rerank depth and interpolation. The legs searched are those the index can
answer: the sparse ones only where it holds learned-sparse vectors.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import cast

from hybrid_search.config.errors import ConfigError
from hybrid_search.config.settings import LEG_NAMES, MODE_PRESETS, SearchSettings, mode_legs
from hybrid_search.search.request import FusionSpec, Normalizer

__all__ = [
    "FIRST_DEPTHS",
    "FIXED_MODES",
    "INTERPOLATIONS",
    "RERANK_DEPTHS",
    "Pipeline",
    "fixed_modes",
    "grid",
    "leg_sets",
    "mode_name",
]

FIXED_MODES = ("bm25", "knn", "hybrid", "hybrid+rerank")
SPARSE_FIXED_MODES = ("sparse", "hybrid3")
RRF_KS = (5, 10, 20, 40, 60, 100)
LINEAR_KNN_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
NORMALIZERS = ("minmax", "zscore", "l2")
RERANK_DEPTHS = (10, 20, 50)
INTERPOLATIONS = (0.25, 0.5, 0.75, 1.0)
FIRST_DEPTHS = (100, 200)
_WEIGHT_KEYS = {"bm25": "bm25_weight", "knn": "knn_weight", "sparse": "sparse_weight"}


def mode_name(legs: Sequence[str]) -> str:
    """The mode that names ``legs``: a preset's name where one matches (``hybrid``), else the legs joined by +."""
    ordered = tuple(leg for leg in LEG_NAMES if leg in legs)
    return next((name for name, preset in MODE_PRESETS.items() if preset == ordered), "+".join(ordered))


def leg_sets(available: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty combination of the ``available`` legs, in ``LEG_NAMES`` order, singles first."""
    legs = [leg for leg in LEG_NAMES if leg in available]
    return [combo for n in range(1, len(legs) + 1) for combo in itertools.combinations(legs, n)]


def fixed_modes(available: Sequence[str] = ("bm25", "knn")) -> tuple[str, ...]:
    """The shipped modes a tuned setting is compared with, those the index can answer."""
    extra = SPARSE_FIXED_MODES if "sparse" in available else ()
    return (*FIXED_MODES, *extra)


@dataclass(frozen=True, slots=True)
class Pipeline:
    """One candidate setting of the whole pipeline."""

    base: str  # a mode without +rerank: bm25, knn, sparse, hybrid, hybrid3 or legs joined by +
    rerank: bool = False
    fusion: str = "rrf"
    rrf_k: int = 60
    normalizer: str = "minmax"
    bm25_weight: float = 0.5
    knn_weight: float = 0.5
    depth: int = 100  # the depth of every leg of a fusion
    rerank_depth: int = 50
    interpolation: float = 1.0  # final = a * norm(cross-encoder) + (1 - a) * norm(first stage)
    sparse_weight: float = 0.5

    def __post_init__(self) -> None:
        legs = mode_legs(self.base)  # an unknown mode is a ConfigError here, not a KeyError mid-grid
        for leg, key in _WEIGHT_KEYS.items():
            if leg not in legs:  # a weight the setting never uses: one canonical value, so equal settings are equal
                object.__setattr__(self, key, 0.5)

    @property
    def legs(self) -> tuple[str, ...]:
        return mode_legs(self.base)

    @classmethod
    def from_settings(cls, s: SearchSettings, *, base: str | None = None, rerank: bool | None = None) -> Pipeline:
        mode = base or s.mode
        legs = mode_legs(mode)
        depths = {"bm25": s.bm25_depth, "knn": s.knn_depth, "sparse": s.sparse_depth}
        return cls(
            base=mode_name(legs),
            rerank=s.rerank if rerank is None else rerank,
            fusion=s.fusion,
            rrf_k=s.rrf_k,
            normalizer=s.normalizer,
            bm25_weight=s.bm25_weight,
            knn_weight=s.knn_weight,
            sparse_weight=s.sparse_weight,
            depth=max(depths[leg] for leg in legs),
            rerank_depth=s.rerank_depth,
            interpolation=s.rerank_interpolation,
        )

    def search_settings(self, base: SearchSettings) -> SearchSettings:
        """``base`` with this pipeline's values (what the profile file records)."""
        return base.model_copy(
            update={
                "mode": self.base,
                "rerank": self.rerank,
                "fusion": self.fusion,
                "rrf_k": self.rrf_k,
                "normalizer": self.normalizer,
                "bm25_weight": self.bm25_weight,
                "knn_weight": self.knn_weight,
                "sparse_weight": self.sparse_weight,
                "bm25_depth": self.depth,
                "knn_depth": self.depth,
                "sparse_depth": self.depth,
                "rerank_depth": self.rerank_depth,
                "rerank_interpolation": self.interpolation,
            }
        )

    def weight(self, leg: str) -> float:
        return float(getattr(self, _WEIGHT_KEYS[leg]))

    def fusion_spec(self) -> FusionSpec:
        """How this setting fuses its legs (the same rules a search's ``FusionSpec`` applies)."""
        return FusionSpec.of(
            "rrf" if self.fusion == "rrf" else "linear",
            weights={leg: self.weight(leg) for leg in self.legs},
            normalizer=cast(Normalizer, self.normalizer),
            k=self.rrf_k,
        )

    @property
    def label(self) -> str:
        out = self.base
        legs = self.legs
        if len(legs) > 1:
            if self.fusion == "rrf":
                out += f" rrf k={self.rrf_k}"
            elif legs == ("bm25", "knn"):
                out += f" linear {self.normalizer} knn={self.knn_weight:g}"  # bm25 weighs the rest
            else:
                out += f" linear {self.normalizer} " + " ".join(f"{leg}={self.weight(leg):g}" for leg in legs)
            out += f" depth={self.depth}"
        if self.rerank:
            out += f" +rerank@{self.rerank_depth} a={self.interpolation:g}"
        return out


def _weightings(legs: tuple[str, ...]) -> list[dict[str, float]]:
    """Linear weights on a 0.1 grid summing to 1, each leg at least 0.1."""
    if len(legs) == 2:
        return [{legs[0]: round(1 - w, 2), legs[1]: w} for w in LINEAR_KNN_WEIGHTS]
    steps = range(1, 10)
    out = []
    for parts in itertools.product(steps, repeat=len(legs)):
        if sum(parts) == 10:
            out.append({leg: part / 10 for leg, part in zip(legs, parts, strict=True)})
    return out


def _first_stages(legs: tuple[str, ...]) -> list[Pipeline]:
    base = mode_name(legs)
    if len(legs) == 1:
        return [Pipeline(base)]
    out = []
    for depth in FIRST_DEPTHS:
        # RRF: every leg weighs the same (0.5 each, the dataclass default), which is plain RRF
        out += [Pipeline(base, fusion="rrf", rrf_k=k, depth=depth) for k in RRF_KS]
        for normalizer, weights in itertools.product(NORMALIZERS, _weightings(legs)):
            out.append(
                Pipeline(
                    base,
                    fusion="linear",
                    normalizer=normalizer,
                    depth=depth,
                    bm25_weight=weights.get("bm25", 0.5),
                    knn_weight=weights.get("knn", 0.5),
                    sparse_weight=weights.get("sparse", 0.5),
                )
            )
    return out


def grid(available: Sequence[str] = ("bm25", "knn"), *, first_stage_only: bool = False) -> list[Pipeline]:
    """The search space over the ``available`` legs: every first stage, each alone and (unless
    ``first_stage_only``) with every rerank depth and interpolation."""
    unknown = [leg for leg in available if leg not in LEG_NAMES]
    if unknown or not available:
        raise ConfigError(f"legs to tune must be some of {', '.join(LEG_NAMES)}, got {list(available)}")
    firsts = [p for legs in leg_sets(available) for p in _first_stages(legs)]
    if first_stage_only:
        return firsts
    out = []
    for first in firsts:
        out.append(first)
        out += [
            replace(first, rerank=True, rerank_depth=d, interpolation=a)
            for d, a in itertools.product(RERANK_DEPTHS, INTERPOLATIONS)
        ]
    return out
