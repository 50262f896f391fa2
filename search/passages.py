"""Choosing a document's best passages for a query, where no passage vector chose them (a BM25 hit, a
server-fused hit): by the query's terms. Pure functions over the document's text and its passage spans."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from hybrid_search.search.hits import Hit, Passage

__all__ = ["choose_by_terms", "lexical_passages", "top_passages"]

_TERM = re.compile(r"\w+")


def _terms(text: str) -> set[str]:
    return {t.lower() for t in _TERM.findall(text)}


def lexical_passages(query: str, text: str, spans: Sequence[tuple[int, int]], n: int = 1) -> list[Passage]:
    """The ``n`` passages holding the most distinct query terms (earlier first on a tie), as ``Passage``
    values without a score. A document of one span is that span. A term is looked for as a substring of
    the lowered passage (C-speed; a choice among a document's passages needs no word boundaries)."""
    counts = [0] * len(spans)
    if len(spans) > 1:
        terms = [t for t in _terms(query) if len(t) > 1]
        lowered = text.lower()
        for i, (start, end) in enumerate(spans):
            window = lowered[start:end]
            counts[i] = sum(term in window for term in terms)
    scored = sorted(range(len(spans)), key=lambda i: (-counts[i], i))
    return [Passage(i, spans[i][0], spans[i][1], text[spans[i][0] : spans[i][1]]) for i in scored[:n]]


def choose_by_terms(hit: Hit, query: str, n: int = 1) -> Hit:
    """``hit`` with its best ``n`` passages chosen by ``query``'s terms among the unscored spans it carries
    (``Hit.passages`` without ``Hit.passage``); a hit that has its passage, or carries none, as it is."""
    if hit.passage is not None or not hit.passages:
        return hit
    chosen = lexical_passages(query, hit.text, [(p.start, p.end) for p in hit.passages], n)
    return replace(hit, passage=chosen[0], passages=tuple(chosen))


def top_passages(scores: Sequence[float], text: str, spans: Sequence[tuple[int, int]], n: int = 1) -> list[Passage]:
    """The ``n`` passages of highest score (the vector similarity of each span), best first."""
    order = sorted(range(len(spans)), key=lambda i: (-scores[i], i))[:n]
    return [Passage(i, spans[i][0], spans[i][1], text[spans[i][0] : spans[i][1]], float(scores[i])) for i in order]
