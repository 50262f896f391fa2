"""Splitting long documents into passages at ingest: the ``--chunking`` modes, and the character spans each
passage covers in the document's text.

``auto`` (the default) leaves a document whole when the model reads all of it (title, prompt and text within
its max sequence length) and otherwise packs whole sentences into windows that fit the model, each window
repeating the previous one's last sentence; a window a quarter full or more ends at a line break rather than
run on into the next paragraph (paragraphs are a text's own units, as recursive splitters use them), and a
sentence longer than a window is cut on token boundaries.
``words:N:O``, ``sentences:N:O`` and ``tokens:N:O`` make fixed windows of N units overlapping by O; ``none``
keeps one passage per document (the model then reads the first max-length tokens only). Token counts come
from the model's own tokenizer. Spans are character offsets into the text, so a hit can show the passage
and point into the original. This module splits only: it never encodes or stores.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence

from hybrid_search.config.chunking import Chunking, ChunkKind
from hybrid_search.config.errors import ConfigError

__all__ = ["MAX_PASSAGES", "Chunker", "Chunking", "ChunkKind", "Span", "TokenOffsets", "sentence_spans", "word_spans"]

Span = tuple[int, int]  # [start, end) character offsets into a document's text
# (texts) -> each text's tokens as (start, end) character offsets, without special tokens or truncation
TokenOffsets = Callable[[Sequence[str]], list[list[Span]]]

MAX_PASSAGES = 1024  # passages one document may hold (indexes key a passage by document and position)
_AUTO_OVERLAP_FRACTION = 0.25  # auto repeats the previous window's last sentence when it is at most this long
_PARAGRAPH_FILL = 0.25  # auto ends a window at a paragraph break once it holds this fraction of its budget

# a sentence ends at . ! ? (and their CJK forms), with closing quotes or brackets, before white space; a line
# break ends one too (headings, list items)
_SENTENCE_END = re.compile(r"([.!?\u3002\uff01\uff1f]+[\"'\u201d\u2019)\]]*)\s+|\n\s*")
_WORD = re.compile(r"\S+")


def sentence_spans(text: str) -> list[Span]:
    """The sentences of ``text`` as spans, white space between them left out."""
    spans: list[Span] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end(1) if m.group(1) else m.start()
        _add_trimmed(text, start, end, spans)
        start = m.end()
    _add_trimmed(text, start, len(text), spans)
    return spans


def _add_trimmed(text: str, start: int, end: int, spans: list[Span]) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        spans.append((start, end))


def word_spans(text: str) -> list[Span]:
    return [m.span() for m in _WORD.finditer(text)]


def _windows(units: Sequence[Span], size: int, overlap: int) -> list[Span]:
    """Windows of ``size`` units, each starting ``size - overlap`` units after the previous one; the last
    window ends with the last unit (no window is a suffix of the one before)."""
    if not units:
        return []
    out: list[Span] = []
    step = size - overlap
    for first in range(0, len(units), step):
        last = min(first + size, len(units)) - 1
        out.append((units[first][0], units[last][1]))
        if last == len(units) - 1:
            break
    return out


class Chunker:
    """Passage spans of documents for one model. ``token_offsets`` is the model tokenizer's (needed by
    ``auto`` and ``tokens``); ``max_tokens`` is what the model reads of one passage, and ``overhead(title)``
    the tokens each passage spends before its text (special tokens, the document prompt, the title)."""

    def __init__(
        self,
        chunking: Chunking,
        *,
        token_offsets: TokenOffsets | None = None,
        max_tokens: int = 512,
        overhead: Callable[[str], int] = lambda title: 2,
    ) -> None:
        if chunking.kind in ("auto", "tokens") and token_offsets is None:
            raise ConfigError(f"chunking {chunking} counts tokens: it needs the model's tokenizer")
        self.chunking = chunking
        self.token_offsets = token_offsets
        self.max_tokens = max_tokens
        self.overhead = overhead

    def spans(self, title: str, text: str) -> list[Span]:
        """The passages of one document (at least one; an empty text is one empty passage)."""
        return self.spans_batch([(title, text)])[0]

    def spans_batch(self, docs: Sequence[tuple[str, str]]) -> list[list[Span]]:
        """``spans`` of many documents, tokenized in one call."""
        kind, size, overlap = self.chunking.kind, self.chunking.size, self.chunking.overlap
        if kind == "none":
            return [[(0, len(text))] for _, text in docs]
        if kind == "words":
            return [_windows(word_spans(text), size, overlap) or [(0, len(text))] for _, text in docs]
        if kind == "sentences":
            return [_windows(sentence_spans(text), size, overlap) or [(0, len(text))] for _, text in docs]
        assert self.token_offsets is not None
        tokens = self.token_offsets([text for _, text in docs])
        if kind == "tokens":
            return [_windows(t, size, overlap) or [(0, len(text))] for (_, text), t in zip(docs, tokens, strict=True)]
        return [self._auto(title, text, t) for (title, text), t in zip(docs, tokens, strict=True)]

    def _auto(self, title: str, text: str, tokens: list[Span]) -> list[Span]:
        budget = self.max_tokens - self.overhead(title)
        if len(tokens) <= budget:
            return [(0, len(text))]
        budget = max(budget, self.max_tokens // 2)  # a title too long to leave room is cut by the model instead
        starts = [s for s, _ in tokens]

        def count(span: Span) -> int:
            return bisect.bisect_left(starts, span[1]) - bisect.bisect_left(starts, span[0])

        units: list[Span] = []  # sentences, with any longer than a window cut into token windows
        for sentence in sentence_spans(text):
            if count(sentence) <= budget:
                units.append(sentence)
            else:
                lo, hi = bisect.bisect_left(starts, sentence[0]), bisect.bisect_left(starts, sentence[1])
                units += _windows(tokens[lo:hi], budget, budget // 8)
        breaks = ["\n" in text[a[1] : b[0]] for a, b in zip(units, units[1:], strict=False)]
        return _pack(units, [count(u) for u in units], budget, breaks)


def _pack(units: Sequence[Span], counts: Sequence[int], budget: int, breaks: Sequence[bool]) -> list[Span]:
    """Greedy windows of whole units within ``budget`` tokens, ending at a paragraph break (``breaks[i]``:
    one lies between unit i and i + 1) once ``_PARAGRAPH_FILL`` full; a window after the first starts with
    the previous window's last unit when that unit is short (``_AUTO_OVERLAP_FRACTION`` of the budget) and
    of the same paragraph."""
    out: list[Span] = []
    first = 0
    while first < len(units):
        used, last = counts[first], first
        while last + 1 < len(units) and used + counts[last + 1] <= budget:
            if breaks[last] and used >= _PARAGRAPH_FILL * budget:
                break
            last += 1
            used += counts[last]
        out.append((units[first][0], units[last][1]))
        if last == len(units) - 1:
            break
        short = counts[last] <= _AUTO_OVERLAP_FRACTION * budget and not breaks[last]
        first = last if last > first and short and counts[last] + counts[last + 1] <= budget else last + 1
    return out
