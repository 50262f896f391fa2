"""Ingest: read a corpus, reject bad records with reasons, encode, and bulk-store into a backend.

It depends on ``config``, ``encoding`` and ``backends`` (through the small ``IndexBuilder`` protocol), never
on the application layer. Importing this package loads no model and no torch.
"""

from hybrid_search.ingest.pipeline import Checkpoint, IngestSummary, index_spec_for, run_ingest
from hybrid_search.ingest.sources import (
    HUB_DATASETS,
    BeirFolder,
    CorpusSource,
    CsvFile,
    FieldMap,
    HubBeir,
    JsonlFile,
    ParquetFile,
    QuerySet,
    RawRecord,
    open_query_set,
    open_source,
    sample_path,
)
from hybrid_search.ingest.validate import Document, Reject, RejectsFile, validate

__all__ = [
    "HUB_DATASETS",
    "BeirFolder",
    "Checkpoint",
    "CorpusSource",
    "CsvFile",
    "Document",
    "FieldMap",
    "HubBeir",
    "IngestSummary",
    "JsonlFile",
    "ParquetFile",
    "QuerySet",
    "RawRecord",
    "Reject",
    "RejectsFile",
    "index_spec_for",
    "open_query_set",
    "open_source",
    "sample_path",
    "run_ingest",
    "validate",
]
