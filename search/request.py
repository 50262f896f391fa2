"""A search request as one value: the query, the retrieval legs, how they fuse, and whether to rerank.

``SearchRequest`` is built and checked once, at the edge (the client, the CLI, ``tune``), and passed down
whole: the pipeline, the backends and the request bodies all read it. Each retrieval leg is a small frozen
value that knows which backend call answers it (``Lexical`` -> BM25, ``Dense`` -> kNN); a new leg is a new
class here plus its backend call, and fusion, the pipeline and the CLI plumbing stay as they are. Modes
(``bm25``, ``knn``, ``hybrid``, each optionally ``+rerank``) are named presets that build a request from the
settings. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, TypedDict, Unpack

from hybrid_search.config.errors import ConfigError, QueryError
from hybrid_search.config.settings import MODE_PRESETS, mode_legs
from hybrid_search.search.fusion import Run, fuse
from hybrid_search.search.hits import Hit

if TYPE_CHECKING:
    import numpy as np

    from hybrid_search.config.settings import SearchSettings
    from hybrid_search.search.filters import Filter
    from hybrid_search.search.interfaces import SearchableIndex

__all__ = [
    "MODES",
    "Dense",
    "Sparse",
    "Preset",
    "FusionSpec",
    "Leg",
    "Lexical",
    "RerankSpec",
    "SearchRequest",
    "build_request",
    "check_limits",
    "check_query",
    "mode_legs",
    "parse_mode",
]

FusionMethod = Literal["rrf", "linear"]
Normalizer = Literal["minmax", "zscore", "l2"]


class Leg(Protocol):
    """One first-stage retriever of a request: its name (the fusion weight's key), how deep it goes, which
    ``Hit`` field carries its score, and the backend call that answers it."""

    name: ClassVar[str]
    score_field: ClassVar[str | None]  # a ``Hit`` field of its own (``bm25_score``), or None: ``leg_scores`` only
    needs_vector: ClassVar[bool]

    @property
    def depth(self) -> int: ...

    def retrieve(self, index: SearchableIndex, request: SearchRequest) -> Sequence[Hit]: ...


@dataclass(frozen=True, slots=True)
class Lexical:
    """BM25 over title and text."""

    depth: int = 200
    name: ClassVar[str] = "bm25"
    score_field: ClassVar[str | None] = "bm25_score"
    needs_vector: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_depth(self.depth, "bm25 depth")

    def retrieve(self, index: SearchableIndex, request: SearchRequest) -> Sequence[Hit]:
        return index.search_bm25(request.query, self.depth, request.filters)


@dataclass(frozen=True, slots=True)
class Dense:
    """Approximate nearest neighbours of the query's embedding; ``num_candidates`` is the HNSW pool (never
    below ``depth``)."""

    depth: int = 200
    num_candidates: int = 400
    name: ClassVar[str] = "knn"
    score_field: ClassVar[str | None] = "knn_score"
    needs_vector: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_depth(self.depth, "knn depth")
        _check_depth(self.num_candidates, "num_candidates")
        if self.num_candidates < self.depth:
            object.__setattr__(self, "num_candidates", self.depth)

    def retrieve(self, index: SearchableIndex, request: SearchRequest) -> Sequence[Hit]:
        if request.vector is None:
            raise ConfigError("the kNN leg needs the query's vector: give an encoder or vector=")
        return index.search_knn(request.vector, self.depth, self.num_candidates, request.filters)


@dataclass(frozen=True, slots=True)
class Sparse:
    """Learned-sparse (SPLADE) retrieval: the dot product of the query's token weights with each document's."""

    depth: int = 200
    name: ClassVar[str] = "sparse"
    score_field: ClassVar[str | None] = "sparse_score"
    needs_vector: ClassVar[bool] = False
    needs_sparse: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_depth(self.depth, "sparse depth")

    def retrieve(self, index: SearchableIndex, request: SearchRequest) -> Sequence[Hit]:
        if request.sparse_vector is None:
            raise ConfigError("the sparse leg needs the query's sparse vector: give a sparse encoder or sparse_vector=")
        return index.search_sparse(request.sparse_vector, self.depth, request.filters)


def _check_depth(value: int, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise QueryError(f"{what} must be a positive whole number, got {value!r}")


@dataclass(frozen=True, slots=True)
class FusionSpec:
    """How legs fuse: RRF (Cormack et al. 2009) or a weighted sum of normalised scores, with a weight per leg
    name (a leg not named weighs 1). This is the one place the rules live: equal weights make plain,
    unweighted RRF (what every engine's RRF computes); linear weights are used as given."""

    method: FusionMethod = "linear"
    normalizer: Normalizer = "l2"
    weights: tuple[tuple[str, float], ...] = ()
    k: int = 60

    def __post_init__(self) -> None:
        if self.method not in ("rrf", "linear"):
            raise ConfigError(f"unknown fusion {self.method!r}: use rrf or linear")
        if self.normalizer not in ("minmax", "zscore", "l2"):
            raise ConfigError(f"unknown normalizer {self.normalizer!r}: use minmax, zscore or l2")
        if self.k < 1:
            raise ConfigError(f"RRF constant k must be at least 1, got {self.k}")

    @classmethod
    def of(
        cls,
        method: FusionMethod,
        *,
        weights: Mapping[str, float] | None = None,
        normalizer: Normalizer = "l2",
        k: int = 60,
    ) -> FusionSpec:
        return cls(method=method, normalizer=normalizer, weights=tuple((weights or {}).items()), k=k)

    @classmethod
    def from_settings(cls, s: SearchSettings, legs: Sequence[str] = ("bm25", "knn")) -> FusionSpec:
        """The settings' fusion over ``legs`` (each leg's weight from ``search.<leg>_weight``)."""
        weights = {Lexical.name: s.bm25_weight, Dense.name: s.knn_weight, Sparse.name: s.sparse_weight}
        return cls.of(s.fusion, weights={leg: weights[leg] for leg in legs}, normalizer=s.normalizer, k=s.rrf_k)

    def weight(self, leg: str) -> float:
        return dict(self.weights).get(leg, 1.0)

    def leg_weights(self, legs: Sequence[str]) -> list[float] | None:
        """The weight of each leg in order; ``None`` for RRF whose legs all weigh the same (plain RRF)."""
        weights = [self.weight(name) for name in legs]
        if self.method == "rrf" and len(set(weights)) <= 1:
            return None
        return weights

    def fuse(self, runs: Mapping[str, Run], *, limit: int | None = None) -> list[tuple[str, float]]:
        """One fused run from each leg's run (keyed by leg name), best first; its first ``limit`` when given."""
        legs = list(runs)
        weights = self.leg_weights(legs)
        params: dict[str, object] = {"weights": weights, "limit": limit}
        if self.method == "rrf":
            params["k"] = self.k
        else:
            params["normalizer"] = self.normalizer
        return fuse(self.method, [runs[name] for name in legs], **params)


@dataclass(frozen=True, slots=True)
class RerankSpec:
    """Rerank the first ``depth`` candidates; ``interpolation`` mixes the cross-encoder with the first stage
    (1: the cross-encoder alone decides)."""

    depth: int = 50
    interpolation: float = 1.0
    passages: int = 1  # an index of passages: the best passages of each hit the cross-encoder reads (max wins)

    def __post_init__(self) -> None:
        _check_depth(self.depth, "rerank depth")
        _check_depth(self.passages, "rerank passages")
        if not 0.0 <= self.interpolation <= 1.0:
            raise ConfigError(f"rerank interpolation must be in [0, 1], got {self.interpolation}")


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """Everything one search asks for. ``vector`` is the query's embedding when the caller has it (the
    pipeline fills it in otherwise, for legs that need it). Checked when built."""

    query: str
    legs: tuple[Leg, ...]
    top_k: int = 10
    fusion: FusionSpec | None = None
    rerank: RerankSpec | None = None
    filters: Filter | None = None
    offset: int = 0  # a page: the hits ranked offset+1 .. offset+top_k of the same ranking
    passages: int = 1  # an index of passages: the best passages each hit carries (``Hit.passages``)
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)
    sparse_vector: Mapping[str, float] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if (self.vector is None and self.sparse_vector is None) or self.query:
            check_query(self.query)
        _check_depth(self.top_k, "top_k")
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or self.offset < 0:
            raise ConfigError(f"offset must be a whole number >= 0 (the hits to skip), got {self.offset!r}")
        if isinstance(self.passages, bool) or not isinstance(self.passages, int) or not 1 <= self.passages <= 32:
            raise ConfigError(f"passages must be a whole number from 1 to 32 (per hit), got {self.passages!r}")
        if not self.legs:
            raise ConfigError("a search needs at least one retrieval leg")
        names = [leg.name for leg in self.legs]
        if len(set(names)) != len(names):
            raise ConfigError(f"each retrieval leg may appear once, got {names}")
        if len(self.legs) > 1 and self.fusion is None:
            raise ConfigError(f"legs {names} need a FusionSpec to fuse them")

    @property
    def leg_names(self) -> tuple[str, ...]:
        return tuple(leg.name for leg in self.legs)

    @property
    def needs_vector(self) -> bool:
        return any(leg.needs_vector for leg in self.legs)

    @property
    def needs_sparse(self) -> bool:
        return any(getattr(leg, "needs_sparse", False) for leg in self.legs)

    @property
    def candidates(self) -> int:
        """How many first-stage hits the request keeps: through the page's end, or the rerank depth when
        deeper."""
        end = self.offset + self.top_k
        return max(end, self.rerank.depth) if self.rerank else end

    @property
    def passage_split(self) -> tuple[int, int, int]:
        """How many passages each hit needs, as (the leading hits that need more, how many they need, how
        many every other hit needs): as many as shown, or as the reranker reads of the hits it reranks."""
        if self.rerank is None or self.rerank.passages <= self.passages:
            return 0, self.passages, self.passages
        return self.rerank.depth, self.rerank.passages, self.passages

    @property
    def mode(self) -> str:
        """The preset's name (``hybrid+rerank``), or the legs joined by ``+`` for a request no preset makes."""
        names = self.leg_names
        base = next((mode for mode, legs in MODE_LEGS.items() if legs == names), "+".join(names))
        return base + ("+rerank" if self.rerank else "")

    def leg(self, name: str) -> Leg | None:
        return next((leg for leg in self.legs if leg.name == name), None)


def check_query(query: str, max_chars: int | None = None) -> None:
    """An empty, blank, oversized or non-UTF-8 query is an error: kNN would otherwise return arbitrary
    nearest neighbours, a huge one would hold a core for seconds, and lone surrogates cannot be encoded."""
    if not isinstance(query, str):
        raise QueryError(f"the query must be text, not {type(query).__name__}")
    if not query.strip():
        raise QueryError("the query is empty: give some words to search for")
    if max_chars is not None and len(query) > max_chars:
        raise QueryError(
            f"the query has {len(query):,} characters, over search.max_query_chars = {max_chars:,}: shorten it"
        )
    try:
        query.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryError("the query is not valid UTF-8 text (undecodable bytes): give it as UTF-8") from None


def check_limits(settings: SearchSettings, request: SearchRequest) -> None:
    """``QueryError`` when one request asks for more than the settings' hard bounds allow."""
    if len(request.query) > settings.max_query_chars:
        check_query(request.query, settings.max_query_chars)  # raises, naming the limit
    if request.top_k > settings.max_top_k:
        raise QueryError(
            f"top_k {request.top_k:,} is over search.max_top_k = {settings.max_top_k:,}: page through results "
            "instead, or raise the limit in the settings"
        )
    if request.offset + request.top_k > settings.max_top_k:
        raise QueryError(
            f"offset {request.offset:,} + top_k {request.top_k:,} pages past search.max_top_k = "
            f"{settings.max_top_k:,} (every page re-ranks from the top): narrow the query with filters, or raise "
            "the limit in the settings"
        )
    if request.rerank is not None and request.candidates > settings.max_rerank_depth:
        raise QueryError(
            f"rerank depth {request.candidates:,} is over search.max_rerank_depth = {settings.max_rerank_depth:,} "
            "(each reranked hit is a cross-encoder pass): lower it or raise the limit"
        )


# --- presets: a mode names the legs; the settings give their depths ------------------------------------
MODE_LEGS = MODE_PRESETS
MODES = tuple(MODE_LEGS)

# each leg from the settings at a candidate depth: alone it retrieves exactly the candidates; fused, at least
# its configured depth so fusion sees enough of each run
_LEG_FROM_SETTINGS: dict[str, Callable[[SearchSettings, int, bool], Leg]] = {
    "bm25": lambda s, depth, fused: Lexical(max(s.bm25_depth, depth) if fused else depth),
    "knn": lambda s, depth, fused: Dense(max(s.knn_depth, depth) if fused else depth, s.num_candidates),
    "sparse": lambda s, depth, fused: Sparse(max(s.sparse_depth, depth) if fused else depth),
}


def parse_mode(mode: str) -> tuple[str, bool]:
    """``"hybrid+rerank"`` -> ``("hybrid", True)``; ``"bm25+sparse"`` -> ``("bm25+sparse", False)``; raises
    ``ConfigError`` for anything unknown."""
    text = mode.strip().lower().replace(" ", "")
    base, rerank = (text[: -len("+rerank")], True) if text.endswith("+rerank") else (text, False)
    mode_legs(base)  # ConfigError naming the modes and legs there are
    return base, rerank


class Preset(TypedDict, total=False):
    """What a caller may say of a mode preset (every key optional; the settings give the rest): ``mode``
    (``bm25``, ``knn`` or ``hybrid``, optionally ``+rerank``), ``top_k``, ``offset`` (a page further down),
    ``rerank`` (overrides the settings' default), ``filters``, and ``vector`` / ``sparse_vector``, the
    query's embedding / learned-sparse vector when the caller already has it, and ``passages``, the best
    passages each hit of an index of passages carries."""

    mode: str | None
    top_k: int | None
    offset: int | None
    rerank: bool | None
    filters: Filter | None
    vector: np.ndarray | None
    sparse_vector: Mapping[str, float] | None
    passages: int | None


def build_request(settings: SearchSettings, query: str, **preset: Unpack[Preset]) -> SearchRequest:
    """The request a mode preset makes from the settings (see ``Preset``), checked against the settings'
    hard limits."""
    base, rerank_in_mode = parse_mode(preset.get("mode") or settings.mode)
    rerank, top_k = preset.get("rerank"), preset.get("top_k")
    do_rerank = rerank_in_mode or (settings.rerank if rerank is None else rerank)
    top_k = settings.top_k if top_k is None else top_k
    _check_depth(top_k, "top_k")
    offset = preset.get("offset") or 0
    rerank_spec = (
        RerankSpec(settings.rerank_depth, settings.rerank_interpolation, settings.rerank_passages)
        if do_rerank
        else None
    )
    depth = max(offset + top_k, rerank_spec.depth) if rerank_spec else offset + top_k
    names = mode_legs(base)
    fused = len(names) > 1
    request = SearchRequest(
        query=query,
        legs=tuple(_LEG_FROM_SETTINGS[name](settings, depth, fused) for name in names),
        top_k=top_k,
        fusion=FusionSpec.from_settings(settings, names) if fused else None,
        rerank=rerank_spec,
        filters=preset.get("filters"),
        offset=offset,
        passages=preset.get("passages") or settings.passages,
        vector=preset.get("vector"),
        sparse_vector=preset.get("sparse_vector"),
    )
    check_limits(settings, request)
    return request


def two_leg_request(
    query: str,
    vector: np.ndarray,
    k: int,
    *,
    bm25_depth: int,
    knn_depth: int,
    num_candidates: int,
    fusion: FusionSpec,
    filters: Filter | None = None,
) -> SearchRequest:
    """Deprecated: the request behind the old nine-parameter ``search_hybrid`` signature (kept so callers of
    that API keep working); build a ``SearchRequest`` instead."""
    return SearchRequest(
        query=query,
        legs=(Lexical(bm25_depth), Dense(knn_depth, num_candidates)),
        top_k=k,
        fusion=fusion,
        filters=filters,
        vector=vector,
    )
