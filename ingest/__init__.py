"""Ingest: read a corpus, reject bad records with reasons, encode, and bulk-store into a backend.

Importing this package loads no model and no torch; the encoder loads its model on first use.
"""

from ingest.encoder import EncodeResult, Encoder, PoolingConfig
from ingest.models import OFFLINE_MODELS, resolve_model
from ingest.pipeline import Checkpoint, IngestSummary, index_spec_for, run_ingest
from ingest.sources import (
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
)
from ingest.validate import Document, Reject, RejectsFile, validate

__all__ = [
    "HUB_DATASETS",
    "OFFLINE_MODELS",
    "BeirFolder",
    "Checkpoint",
    "CorpusSource",
    "CsvFile",
    "Document",
    "EncodeResult",
    "Encoder",
    "FieldMap",
    "HubBeir",
    "IngestSummary",
    "JsonlFile",
    "ParquetFile",
    "PoolingConfig",
    "QuerySet",
    "RawRecord",
    "Reject",
    "RejectsFile",
    "index_spec_for",
    "open_query_set",
    "open_source",
    "resolve_model",
    "run_ingest",
    "validate",
]
