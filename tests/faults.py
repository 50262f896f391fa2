"""Fault injection around a *real* Elasticsearch client's transport, for faults that cannot be caused on a
healthy loopback server: 429 storms, item-level 429s, 5xx answers and dropped connections (before the
server saw the request, and after it applied it, so a retry re-sends what is already stored).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

FAULTS = ("storm429", "item429", "http502", "http503", "http504", "drop_before", "drop_after")


class BulkFaults:
    """Patches ``client.transport.perform_request``; each ``_bulk`` call takes the next scripted fault."""

    def __init__(self, client: Any, script: Iterable[str | None]) -> None:
        self.transport = client.transport
        self.real = self.transport.perform_request
        self.script = list(script)
        self.seen: list[str | None] = []
        self.threads: set[str] = set()  # which threads sent bulk requests (parallel bulk uses several)
        self.transport.perform_request = self._perform

    def restore(self) -> None:
        self.transport.perform_request = self.real

    def _meta(self, status: int) -> Any:
        from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig

        return ApiResponseMeta(
            status=status,
            http_version="1.1",
            headers=HttpHeaders({"content-type": "application/json"}),
            duration=0.0,
            node=NodeConfig("http", "127.0.0.1", 9200),
        )

    def _perform(self, method: str, target: str, **kwargs: Any) -> Any:
        if not target.split("?")[0].endswith("/_bulk"):
            return self.real(method, target, **kwargs)
        fault = self.script.pop(0) if self.script else None
        self.seen.append(fault)
        self.threads.add(threading.current_thread().name)
        from elastic_transport import ConnectionError

        if fault == "storm429":
            return self._meta(429), {
                "error": {"type": "es_rejected_execution_exception", "reason": "rejected execution of bulk"},
                "status": 429,
            }
        if fault in ("http502", "http503", "http504"):
            status = int(fault[4:])
            return self._meta(status), {"error": {"type": "unavailable", "reason": f"HTTP {status}"}, "status": status}
        if fault == "drop_before":
            raise ConnectionError("connection reset by peer (injected before sending)")
        meta, body = self.real(method, target, **kwargs)
        if fault == "drop_after":
            raise ConnectionError("connection reset by peer (injected after the server applied the bulk)")
        if fault == "item429":
            items = body["items"]
            for item in items[: max(1, len(items) // 2)]:
                op = next(iter(item.values()))
                op.update(
                    {
                        "status": 429,
                        "error": {"type": "es_rejected_execution_exception", "reason": "rejected execution (injected)"},
                    }
                )
            body["errors"] = True
        return meta, body


class OpenSearchBulkFaults(BulkFaults):
    """The same faults around opensearch-py's transport, which raises instead of returning error statuses."""

    def _perform(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if not url.split("?")[0].endswith("/_bulk"):
            return self.real(method, url, *args, **kwargs)
        fault = self.script.pop(0) if self.script else None
        self.seen.append(fault)
        self.threads.add(threading.current_thread().name)
        from opensearchpy import ConnectionError, TransportError

        if fault == "storm429":
            raise TransportError(429, "rejected_execution_exception", {"error": "rejected execution of bulk"})
        if fault in ("http502", "http503", "http504"):
            raise TransportError(int(fault[4:]), "unavailable", {"error": fault})
        if fault == "drop_before":
            raise ConnectionError("N/A", "connection reset by peer (injected before sending)", OSError())
        body = self.real(method, url, *args, **kwargs)
        if fault == "drop_after":
            raise ConnectionError("N/A", "connection reset by peer (injected after the bulk applied)", OSError())
        if fault == "item429":
            items = body["items"]
            for item in items[: max(1, len(items) // 2)]:
                op = next(iter(item.values()))
                op.update({"status": 429, "error": {"type": "rejected_execution_exception", "reason": "injected"}})
            body["errors"] = True
        return body
