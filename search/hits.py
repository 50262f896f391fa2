"""Typed, frozen search results. Every stage adds its score with ``dataclasses.replace``; nothing mutates."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import overload

__all__ = ["Hit", "Passage", "ScoredHits", "SearchResult"]


@dataclass(frozen=True, slots=True)
class Passage:
    """A passage of a hit's document: its position among the document's passages (0-based), its span in the
    hit's ``text`` (character offsets, ``text[start:end]``), that text, and the score that chose it (the kNN
    similarity of its vector; ``None`` when it was chosen by the query's terms)."""

    index: int
    start: int
    end: int
    text: str = ""
    score: float | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved document. ``score`` is the final score that decided ``rank`` (1-based).

    The per-stage scores are ``None`` where a stage did not see the document (a kNN-only hit has no
    ``bm25_score``) or did not run.
    """

    doc_id: str
    rank: int
    score: float
    title: str = ""
    text: str = ""
    metadata: Mapping[str, object] = field(default_factory=dict)
    bm25_score: float | None = None
    knn_score: float | None = None
    sparse_score: float | None = None  # the learned-sparse (SPLADE) dot product
    fusion_score: float | None = None
    rerank_score: float | None = None
    rank_before_rerank: int | None = None  # the rank the reranker started from, when it ran
    leg_scores: Mapping[str, float] = field(default_factory=dict)  # fused: each retrieval leg's score, by leg name
    highlight: str | None = None  # with highlight=True: the matching part of the text, terms in <em> tags
    # an index of passages (chunked long documents): the best passage, and with ``passages=N`` the top N
    passage: Passage | None = None
    passages: tuple[Passage, ...] = ()

    @property
    def reads(self) -> str:
        """What a cross-encoder reads of this hit: its best passage when it has one, else its whole text."""
        return self.passage.text if self.passage is not None else self.text

    @property
    def rank_change(self) -> int | None:
        """Places the reranker moved this hit: positive promoted, negative demoted, ``None`` if it did not run."""
        return None if self.rank_before_rerank is None else self.rank_before_rerank - self.rank


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Hits in rank order plus the time each stage took, in milliseconds."""

    query: str
    mode: str
    hits: tuple[Hit, ...]
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    fusion_location: str | None = None  # "server" or "client" for hybrid modes
    total_hits: int | None = None  # candidates the first stage returned (up to its depth), before the top-k cut
    offset: int = 0  # the hits skipped before this page (ranks stay those of the whole ranking)
    top_k: int | None = None  # the page size asked for

    @property
    def doc_ids(self) -> list[str]:
        return [h.doc_id for h in self.hits]

    @property
    def next_offset(self) -> int | None:
        """The ``offset`` of the next page, or ``None`` when the candidates ran out before this page ended (a
        full last page still gives one; the page after it is then empty)."""
        end = self.offset + len(self.hits)
        return end if self.hits and len(self.hits) == self.top_k else None


class ScoredHits(Sequence[Hit]):
    """One retrieval leg's candidates as ids and scores only, best first: what client-side fusion ranks
    before the fields of the few hits it keeps are read. ``pairs`` is the run fusion takes; a ``Hit`` (id,
    rank, score and the leg's own score field) is built only for an item read, so the hundreds of candidates
    fusion drops cost no objects."""

    __slots__ = ("ids", "scores", "score_field")

    def __init__(self, ids: Sequence[str], scores: Sequence[float], score_field: str | None) -> None:
        if len(ids) != len(scores):
            raise ValueError(f"{len(ids)} ids for {len(scores)} scores")
        self.ids = list(ids)
        self.scores = list(scores)
        self.score_field = score_field  # the Hit field the leg's score also goes in (bm25_score, knn_score, ...)

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> Hit: ...

    @overload
    def __getitem__(self, index: slice) -> list[Hit]: ...

    def __getitem__(self, index: int | slice) -> Hit | list[Hit]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self.ids))[index]]
        i = range(len(self.ids))[index]  # negative positions count from the end; IndexError past it
        score = self.scores[i]
        own = {self.score_field: score} if self.score_field else {}
        return Hit(doc_id=self.ids[i], rank=i + 1, score=score, **own)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Hit]:
        return (self[i] for i in range(len(self.ids)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # a sequence of hits, compared by its items, as a list is

    def pairs(self) -> list[tuple[str, float]]:
        """``(doc_id, score)`` best first: the run a fuser takes."""
        return list(zip(self.ids, self.scores, strict=True))
