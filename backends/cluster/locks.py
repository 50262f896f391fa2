"""The one-writer lock of a cluster index: a create-only document per alias in ``LOCK_INDEX``, kept alive by
a heartbeat, released on exit; a holder on this host whose process is gone is taken over at once, one
elsewhere whose heartbeat is older than ``LOCK_TTL_SECONDS`` only with ``force``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from hybrid_search.backends.cluster.bodies import (
    log_index_body,
)
from hybrid_search.config.errors import (
    IndexLocked,
)
from hybrid_search.config.files import describe_holder, holder_info
from hybrid_search.config.names import LOCK_INDEX

if TYPE_CHECKING:
    from hybrid_search.backends.cluster.store import ClusterBackend

__all__ = ["LOCK_MAPPING", "LOCK_TTL_SECONDS", "WriterLocks"]

log = logging.getLogger(__name__)

LOCK_TTL_SECONDS = 60.0  # a lock whose heartbeat is older than this is stale (its holder is gone)
LOCK_MAPPING = {
    "dynamic": "strict",
    "properties": {
        "alias": {"type": "keyword"},
        "pid": {"type": "long"},
        "host": {"type": "keyword"},
        "since": {"type": "keyword"},
        "heartbeat": {"type": "double"},
    },
}


class WriterLocks:
    """Takes, keeps alive and releases writer locks through one backend's client."""

    def __init__(self, backend: ClusterBackend) -> None:
        self.b = backend

    @contextlib.contextmanager
    def held(self, alias: str, force: bool) -> Iterator[None]:
        self._ensure_lock_index()
        if force:
            self._break_lock(alias, self._lock_holder(alias))
        record = {**holder_info(), "alias": alias, "heartbeat": time.time()}
        taken = self._try_lock(alias, record)
        if taken is None:
            holder = self._lock_holder(alias)
            if not died_on_this_host(holder):
                raise IndexLocked(self._lock_refusal(alias, holder))
            # its holder was a process on this host that no longer exists (killed): the lock is certainly stale
            self._break_lock(alias, holder)
            taken = self._try_lock(alias, record)
            if taken is None:
                raise IndexLocked(self._lock_refusal(alias, self._lock_holder(alias)))
        stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(alias, record, taken, stop), name=f"lock-{alias}", daemon=True
        )
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join(timeout=5)
            with contextlib.suppress(Exception):  # a lock we cannot delete expires by its heartbeat
                self.b.call("release writer lock", self.b.client.delete, index=LOCK_INDEX, id=alias, refresh="true")

    def _try_lock(self, alias: str, record: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Create the lock document; its write result, or ``None`` when one exists (another holder)."""
        try:
            return self.b.call(
                "take writer lock", self.b.client.create, index=LOCK_INDEX, id=alias, body=dict(record), refresh="true"
            )
        except self.b.api_error as exc:
            if self.b.status_of(exc) != 409:
                raise
            return None

    def _ensure_lock_index(self) -> None:
        if not self.b.index_exists(LOCK_INDEX):
            self.b.create_if_missing(LOCK_INDEX, log_index_body(LOCK_MAPPING), "create lock index")

    def _lock_refusal(self, alias: str, holder: Mapping[str, Any] | None) -> str:
        age = time.time() - float((holder or {}).get("heartbeat") or 0)
        if holder is not None and age > LOCK_TTL_SECONDS:
            return (
                f"index {alias!r} is locked by {describe_holder(holder)}, whose last heartbeat was {age:.0f} s ago: "
                "that process is gone. If so, rerun with --force-unlock"
            )
        return (
            f"index {alias!r} is being written by {describe_holder(holder)}: wait for it to finish, or "
            "--force-unlock if that process is gone"
        )

    def _lock_holder(self, alias: str) -> dict[str, Any] | None:
        try:
            found = self.b.call("read writer lock", self.b.client.get, index=LOCK_INDEX, id=alias)
        except self.b.api_error:
            return None
        return dict(found.get("_source") or {})

    def _break_lock(self, alias: str, holder: Mapping[str, Any] | None) -> None:
        if holder is not None:
            log.warning("breaking the writer lock of %s held by %s", alias, describe_holder(holder))
            with contextlib.suppress(self.b.api_error):
                self.b.call("break writer lock", self.b.client.delete, index=LOCK_INDEX, id=alias, refresh="true")

    def _heartbeat(self, alias: str, record: dict[str, Any], taken: Mapping[str, Any], stop: threading.Event) -> None:
        seq, term = taken.get("_seq_no"), taken.get("_primary_term")
        while not stop.wait(LOCK_TTL_SECONDS / 4):
            try:
                cond = {"if_seq_no": seq, "if_primary_term": term} if seq is not None and term is not None else {}
                body = {**record, "heartbeat": time.time()}
                done = self.b.call("lock heartbeat", self.b.client.index, index=LOCK_INDEX, id=alias, body=body, **cond)
                seq, term = done.get("_seq_no", seq), done.get("_primary_term", term)
            except Exception as exc:  # a lost heartbeat only makes the lock look stale sooner
                log.warning("writer lock heartbeat of %s failed: %s", alias, exc)


def died_on_this_host(holder: Mapping[str, Any] | None) -> bool:
    """Whether a lock's holder was a process on this host that no longer exists."""
    if not holder or holder.get("host") != holder_info()["host"] or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        return False
    return False
