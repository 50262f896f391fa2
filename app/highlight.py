"""Highlighted snippets: the part of a hit's text where the query's terms match, the terms wrapped in
``<em>`` / ``</em>`` (Elasticsearch's default tags).

Terms match as BM25 matched them: each word of the text and the query goes through the index's own
analyzer (the same names on every backend, ``backends.embedded.text``), so ``running`` lights up for the
query ``run`` under ``english`` and ``résumé`` for ``resume`` under ``folding``; CJK text matches by the
query's bigrams. It never changes which hits there are or their order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from hybrid_search.backends.embedded.text import analyzer, prepare
from hybrid_search.config.text import has_cjk
from hybrid_search.search.hits import Hit

__all__ = ["PRE", "POST", "highlight", "highlight_hits"]

PRE, POST = "<em>", "</em>"
SNIPPET_CHARS = 200
_WORD = re.compile(r"\w+")


class _Terms:
    """The query's analysed terms, and a word's analysed form, under one analyzer."""

    def __init__(self, kind: str, query: str) -> None:
        self.kind = kind
        self.analyzer = analyzer(kind)
        self.terms = set(self.analyzer.analyze(prepare(kind, query)))
        self.cjk = [t for t in self.terms if has_cjk(t)]

    def matches(self, word: str) -> bool:
        return any(t in self.terms for t in self.analyzer.analyze(word))


def highlight(text: str, terms: _Terms, width: int = SNIPPET_CHARS) -> str | None:
    """A window of about ``width`` characters around the first match, matches tagged; ``None`` if none."""
    spans = [(m.start(), m.end()) for m in _WORD.finditer(text) if not has_cjk(m.group()) and terms.matches(m.group())]
    for gram in terms.cjk:
        spans += [(m.start(), m.start() + len(gram)) for m in re.finditer(re.escape(gram), text)]
    if not spans:
        return None
    spans = _merge(sorted(spans))
    start = max(0, spans[0][0] - width // 4)
    if start:
        start = _word_start(text, start)
    end = min(len(text), start + width)
    end = _word_end(text, end)
    out, at = [], start
    for a, b in spans:
        if a >= end:
            break
        out += [text[at:a], PRE, text[a:b], POST]
        at = b
    out.append(text[at:end])
    return ("…" if start else "") + "".join(out) + ("…" if end < len(text) else "")


def highlight_hits(hits: Sequence[Hit], query: str, analyzer_kind: str) -> tuple[Hit, ...]:
    """``hits`` with ``highlight`` set from their title and text (the text's window when both match)."""
    terms = _Terms(analyzer_kind, query)
    out = []
    for hit in hits:
        snippet = highlight(hit.text, terms) or (highlight(hit.title, terms) if hit.title else None)
        out.append(replace(hit, highlight=snippet))
    return tuple(out)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def _word_start(text: str, i: int, reach: int = 20) -> int:
    # back to a word's start, within ``reach`` (text without spaces, such as CJK, is cut where it stands)
    j = i
    while 0 < j < len(text) and i - j < reach and not text[j - 1].isspace():
        j -= 1
    return j if j == 0 or text[j - 1].isspace() else i


def _word_end(text: str, i: int, reach: int = 20) -> int:
    j = i
    while j < len(text) and j - i < reach and not text[j].isspace():
        j += 1
    return j if j == len(text) or text[j].isspace() else i
