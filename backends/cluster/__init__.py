"""What Elasticsearch and OpenSearch backends share: ``store`` (the backend base: connection, alias-based
builds, counts, searches), ``bulk`` (resilient bulk writes), ``locks`` (the one-writer lock), ``bodies``
(request bodies and constants both engines send) and ``logsink`` (log documents on the cluster).

Bulk loading retries only what can succeed later: items answered 429/502/503/504 and whole requests that
failed on a dropped connection, with capped exponential backoff and full jitter (tenacity). Per-item
refusals (mapping errors, wrong dimensions) come back as ``FailedItem`` for the rejects file.
"""

from hybrid_search.backends.cluster.bodies import ServerInfo, alias_actions, bm25_body, latest_body, log_index_body
from hybrid_search.backends.cluster.logsink import ClusterLogSink
from hybrid_search.backends.cluster.store import ClusterBackend

__all__ = [
    "ClusterBackend",
    "ClusterLogSink",
    "ServerInfo",
    "alias_actions",
    "bm25_body",
    "latest_body",
    "log_index_body",
]
