"""The embedded backend: a real BM25 inverted index (tantivy) and a real HNSW index (faiss) on local disk.

It is the default when no cluster is configured, and runs the same pipeline as the engine backends.

Layout under ``data_dir``::

    aliases.json                      alias -> physical index, replaced atomically
    indexes/<physical>/docs.sqlite    source of truth: id, title, text, metadata, vector (float32)
    indexes/<physical>/text/          tantivy index over title and text (keyed by doc id)
    indexes/<physical>/vectors-<N>.faiss   HNSW graph holding every row key up to N

SQLite commits each upsert batch first; tantivy and faiss are derived from it and each records how far it
got, so reopening after a crash replays what they missed and never duplicates a vector. Replaced and
deleted rows become tombstones that searches skip until the HNSW graph is compacted.
Modules: ``store`` (the backend: aliases, builds, locks), ``physical`` (one index on disk) and ``text``
(analyzers and BM25). It must never encode text or fuse rankings; it is one process's store, not a server.
"""

from hybrid_search.backends.embedded.store import EmbeddedBackend
from hybrid_search.backends.embedded.text import LexicalIndex

__all__ = ["EmbeddedBackend", "LexicalIndex"]
