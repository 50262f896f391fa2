"""Settings and errors shared by every hybrid-search package. Imports nothing heavy."""

from config.errors import (
    BackendUnavailable,
    BadRecordError,
    ConfigError,
    FailedItem,
    FusionUnsupported,
    HybridSearchError,
    IndexingError,
    IndexNotFound,
    QueryError,
    SourceError,
)
from config.settings import (
    BackendSettings,
    IndexSettings,
    IngestSettings,
    ModelSettings,
    SearchSettings,
    Secret,
    Settings,
    load_settings,
)

__all__ = [
    "BackendSettings",
    "BackendUnavailable",
    "BadRecordError",
    "ConfigError",
    "FailedItem",
    "FusionUnsupported",
    "HybridSearchError",
    "IndexNotFound",
    "IndexSettings",
    "IndexingError",
    "IngestSettings",
    "ModelSettings",
    "QueryError",
    "SearchSettings",
    "Secret",
    "SourceError",
    "Settings",
    "load_settings",
]
