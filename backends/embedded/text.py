"""Text analysis and BM25 for the embedded backend: the analyzers (close to Elasticsearch's ``standard``,
language, ``cjk`` and a standard + ``asciifolding`` one; the mapping is in README "Text analysis"), filters
as tantivy term queries, the best-fields BM25 query, and ``LexicalIndex``, an in-memory BM25 index for
measuring another analyzer before anyone reindexes. Nothing here touches disk.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import tantivy

from hybrid_search.backends.base import (
    StoredDocument,
)
from hybrid_search.config.errors import ConfigError
from hybrid_search.config.text import ANALYZERS, LANGUAGES, cjk_bigrams
from hybrid_search.search.filters import METADATA_FIELD, Filter, clauses

__all__ = ["LexicalIndex", "analyzer", "bm25_query", "prepare", "tantivy_filter"]


def open_text_index(folder: Path, text_analyzer: tantivy.TextAnalyzer) -> tantivy.Index:
    """The tantivy index of a physical index: the id (stored), title and text (analysed), the metadata."""
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("doc_id", stored=True, tokenizer_name="raw")
    builder.add_text_field("title", tokenizer_name="hs_text", index_option="freq")
    builder.add_text_field("text", tokenizer_name="hs_text", index_option="freq")
    builder.add_json_field(METADATA_FIELD, tokenizer_name="raw")
    index = tantivy.Index(builder.build(), path=str(folder))
    index.register_tokenizer("hs_text", text_analyzer)
    return index


def analyzer(kind: str) -> tantivy.TextAnalyzer:
    """Close to Elasticsearch's analyzer of the same name: ``standard`` (lowercased words), a language
    (its stop words and Snowball stemmer), ``folding`` (standard, then ASCII folding: ``naïve`` -> ``naive``)
    or ``cjk`` (English stop words; the bigrams come from ``prepare``, before tokenising)."""
    if kind not in ANALYZERS:
        raise ConfigError(f"unknown analyzer {kind!r}: use one of {', '.join(ANALYZERS)}")
    builder = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple()).filter(tantivy.Filter.remove_long(255))
    builder = builder.filter(tantivy.Filter.lowercase())
    if kind in LANGUAGES:
        builder = builder.filter(tantivy.Filter.stopword(kind)).filter(tantivy.Filter.stemmer(kind))
    elif kind == "folding":
        builder = builder.filter(tantivy.Filter.ascii_fold())
    elif kind == "cjk":
        builder = builder.filter(tantivy.Filter.stopword("english"))
    return builder.build()


def prepare(kind: str, text: str) -> str:
    """The text as the analyzer's tokenizer should see it: CJK runs as bigrams for ``cjk``, else unchanged
    (applied alike to stored text and to queries)."""
    return cjk_bigrams(text) if kind == "cjk" else text


def tantivy_filter(schema: tantivy.Schema, filters: Filter | None) -> list[tantivy.Query]:
    field = METADATA_FIELD
    ops = {
        "eq": lambda name, v: tantivy.Query.term_query(schema, f"{field}.{name}", v),
        "in": lambda name, vs: tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(schema, f"{field}.{name}", v)) for v in vs]
        ),
    }
    return [ops[op](name, value) for op, name, value in clauses(filters)]


def bm25_query(schema: tantivy.Schema, analyzer: tantivy.TextAnalyzer, query: str) -> tantivy.Query | None:
    """Every analysed term in title or text; ``None`` when the analyzer leaves no term."""
    terms = list(analyzer.analyze(query))
    if not terms:
        return None
    per_field = [
        tantivy.Query.boolean_query([(tantivy.Occur.Should, tantivy.Query.term_query(schema, f, t)) for t in terms])
        for f in ("title", "text")
    ]
    # best_fields, as Elasticsearch's multi_match: the better field's score counts
    return tantivy.Query.disjunction_max_query(per_field, tie_breaker=0.0)


class LexicalIndex:
    """A BM25-only index in memory with a chosen analyzer, scored as the embedded backend scores: for
    measuring what another analyzer would do to a corpus before anyone reindexes it."""

    def __init__(self, analyzer_kind: str) -> None:
        builder = tantivy.SchemaBuilder()
        builder.add_text_field("doc_id", stored=True, tokenizer_name="raw")
        builder.add_text_field("title", tokenizer_name="hs_text", index_option="freq")
        builder.add_text_field("text", tokenizer_name="hs_text", index_option="freq")
        self.kind = analyzer_kind
        self.analyzer = analyzer(analyzer_kind)
        self.index = tantivy.Index(builder.build())
        self.index.register_tokenizer("hs_text", self.analyzer)
        self._writer: tantivy.IndexWriter | None = self.index.writer(heap_size=64_000_000, num_threads=1)
        self.count = 0

    def add(self, docs: Iterable[StoredDocument]) -> None:
        if self._writer is None:
            raise RuntimeError("LexicalIndex.add after the first search")
        for doc in docs:
            title, text = prepare(self.kind, doc.title), prepare(self.kind, doc.text)
            self._writer.add_document(tantivy.Document(doc_id=doc.doc_id, title=title, text=text))
            self.count += 1

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        if self._writer is not None:
            self._writer.commit()
            self._writer = None
            self.index.reload()
        scored = bm25_query(self.index.schema, self.analyzer, prepare(self.kind, query))
        if scored is None:
            return []
        searcher = self.index.searcher()
        return [
            (searcher.doc(addr)["doc_id"][0], float(score))
            for score, addr in searcher.search(scored, limit=k, count=False).hits
        ]
