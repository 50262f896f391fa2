"""The application layer: the ``HybridSearch`` client, the CLI, evaluation, benchmarks, duplicate mining,
query and ingest logs, inspection and the Kibana / OpenSearch Dashboards saved objects.

It may import every other package; nothing else imports it (except the top-level ``hybrid_search`` facade).
"""

from hybrid_search.app.client import DEFAULT_MODES, HybridSearch
from hybrid_search.app.evaluate import EvalReport, ModeReport, evaluate
from hybrid_search.app.inspection import Inspection, inspect_index
from hybrid_search.app.logs import IngestLog, QueryLog, QueryLogStats

__all__ = [
    "DEFAULT_MODES",
    "EvalReport",
    "HybridSearch",
    "IngestLog",
    "Inspection",
    "ModeReport",
    "QueryLog",
    "QueryLogStats",
    "evaluate",
    "inspect_index",
]
