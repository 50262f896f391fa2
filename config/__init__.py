"""Settings and errors shared by every hybrid-search package. Imports nothing heavy."""

from hybrid_search.config.errors import (
    BackendUnavailable,
    BadRecordError,
    ConfigError,
    DashboardsError,
    FailedItem,
    FusionUnsupported,
    HybridSearchError,
    IndexingError,
    IndexNotFound,
    QueryError,
    SourceError,
)
from hybrid_search.config.settings import (
    BackendSettings,
    IndexSettings,
    IngestSettings,
    LogSettings,
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
    "DashboardsError",
    "FailedItem",
    "FusionUnsupported",
    "HybridSearchError",
    "IndexNotFound",
    "IndexSettings",
    "IndexingError",
    "IngestSettings",
    "LogSettings",
    "ModelSettings",
    "QueryError",
    "SearchSettings",
    "Secret",
    "SourceError",
    "Settings",
    "load_settings",
]
