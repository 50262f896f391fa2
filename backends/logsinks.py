"""Where log documents are stored, and the strict-mapping checks every store applies.

``LogSink`` is the storage side of the query and ingest logs (``hybrid_search.app.logs`` builds the
documents): a cluster stores them in an index (``ClusterLogSink`` in ``cluster.py``), the embedded backend
in JSONL files, each beside its mapping. Documents are checked against the mapping as a strict cluster
would, so the embedded backend cannot drift from the engines. Nothing here knows what a log document means.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from hybrid_search.backends.base import checks_names
from hybrid_search.config.errors import FailedItem, IndexingError
from hybrid_search.config.files import atomic_write_text, read_json_file

log = logging.getLogger(__name__)

__all__ = ["JsonlLogSink", "LogSink", "check_document", "mapping_fields", "new_log_id"]

TAIL_BYTES = 1 << 20  # how far back JsonlLogSink.latest looks for the newest document


# --- mappings -------------------------------------------------------------------------------------
def mapping_fields(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Every field path a mapping defines, multi-fields included, with its type (objects as ``object``)."""
    out: dict[str, str] = {}
    for name, spec in (mapping.get("properties") or {}).items():
        path = f"{prefix}{name}"
        out[path] = spec.get("type", "object")
        if "properties" in spec:
            out.update(mapping_fields(spec, path + "."))
        for sub, sub_spec in (spec.get("fields") or {}).items():
            out[f"{path}.{sub}"] = sub_spec.get("type", "object")
    return out


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "keyword": (str,),
    "text": (str,),
    "date": (str,),
    "boolean": (bool,),
    "float": (int, float),
    "integer": (int,),
    "long": (int,),
    "short": (int,),
    "byte": (int,),
}


def check_document(doc: Mapping[str, Any], mapping: Mapping[str, Any], prefix: str = "") -> list[str]:
    """What a strict mapping would refuse in ``doc``: unknown fields and values of the wrong kind."""
    problems = []
    props = mapping.get("properties") or {}
    for name, value in doc.items():
        path, spec = f"{prefix}{name}", props.get(name)
        if spec is None:
            problems.append(f"{path}: not in the mapping")
            continue
        values = value if isinstance(value, list) else [value]
        for v in values:
            if "properties" in spec:
                problems += (
                    check_document(v, spec, path + ".") if isinstance(v, Mapping) else [f"{path}: expected an object"]
                )
            elif v is not None:
                kinds = _PY_TYPES.get(spec.get("type", ""), (object,))
                if not isinstance(v, kinds) or (bool not in kinds and isinstance(v, bool)):
                    problems.append(f"{path}: {type(v).__name__} for a {spec.get('type')} field")
    return problems


# --- sinks ----------------------------------------------------------------------------------------
class LogSink(Protocol):
    """Where log documents are stored. Each method may raise; ``QueryLog`` catches and counts."""

    location: str

    def ensure(self, name: str, mapping: Mapping[str, Any]) -> None:
        """Create the log ``name`` with ``mapping`` if missing; add new fields to an existing one."""

    def append(self, name: str, docs: Sequence[Mapping[str, Any]], *, refresh: bool = False) -> int:
        """Store documents (visible to searches at once with ``refresh``); return how many were stored.

        Refused ones raise ``IndexingError`` naming each with its reason.
        """

    def latest(self, name: str) -> dict[str, Any] | None:
        """The newest document by ``@timestamp``, or ``None`` when the log is empty or missing."""

    def count(self, name: str) -> int:
        """Documents in the log (0 when it does not exist)."""

    def drop(self, name: str) -> bool:
        """Remove the log ``name``; return whether it existed."""


class JsonlLogSink:
    """Logs of the embedded backend: ``<dir>/<name>.jsonl`` with the mapping beside it in ``<name>.mapping.json``.

    Documents are checked against the mapping as a strict cluster would, so the embedded backend writes
    exactly what an engine would accept (and the files can be bulk-loaded into one later).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.location = str(self.directory)
        self._lock = threading.Lock()
        self._mappings: dict[str, Mapping[str, Any]] = {}

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.jsonl"

    @checks_names
    def drop(self, name: str) -> bool:
        found = self._path(name).exists()
        for path in (self._path(name), self.directory / f"{name}.mapping.json"):
            path.unlink(missing_ok=True)
        self._mappings.pop(name, None)
        return found

    @checks_names
    def ensure(self, name: str, mapping: Mapping[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.directory / f"{name}.mapping.json", json.dumps(mapping, indent=1))
        self._mappings[name] = mapping

    @checks_names
    def append(self, name: str, docs: Sequence[Mapping[str, Any]], *, refresh: bool = False) -> int:
        mapping = self._mappings.get(name) or self._stored_mapping(name)
        failed, good = [], []
        for i, doc in enumerate(docs):
            problems = check_document(doc, mapping) if mapping else []
            if problems:
                failed.append(FailedItem(str(i), "; ".join(problems)))
            else:
                good.append(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
        if good:
            with self._lock, self._path(name).open("ab+") as fh:  # bytes: a text file cannot seek to any byte
                # a torn last line (a writer killed mid-line) is closed first, so it never glues to this one
                end = fh.seek(0, os.SEEK_END)
                torn = end > 0 and fh.seek(end - 1) >= 0 and fh.read(1) != b"\n"
                fh.write((("\n" if torn else "") + "\n".join(good) + "\n").encode("utf-8"))
        if failed:
            raise IndexingError(f"{len(failed)} log documents do not fit the {name} mapping", failed=failed)
        return len(good)

    def _stored_mapping(self, name: str) -> Mapping[str, Any] | None:
        path = self.directory / f"{name}.mapping.json"
        if not path.exists():
            return None
        self._mappings[name] = read_json_file(path, expect=dict, fix="remove it; the next write restores it")
        return self._mappings[name]

    @checks_names
    def latest(self, name: str) -> dict[str, Any] | None:
        # Writers append within seconds of each document's timestamp, so the newest is among the last lines:
        # the newest of the final TAIL_BYTES (at least one whole line) is the newest of the file.
        path = self._path(name)
        if not path.exists():
            return None
        with self._lock, path.open("rb") as fh:
            end = fh.seek(0, 2)
            start = max(0, end - TAIL_BYTES)
            fh.seek(start)
            tail = fh.read()
            while start > 0 and tail.count(b"\n") < 2:  # one huge last line: read further back
                start = max(0, start - TAIL_BYTES)
                fh.seek(start)
                tail = fh.read()
        lines = tail.splitlines()[1 if start > 0 else 0 :]  # the first may be cut in half
        docs, torn = [], 0
        for line in lines:
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError:  # a line a killed writer left half-written: skipped, and said
                torn += 1
                continue
            if isinstance(doc, dict):
                docs.append(doc)
        if torn:
            log.warning("%s: skipped %d torn line(s) a writer left half-written", path, torn)
        return max(docs, key=lambda d: str(d.get("@timestamp", ""))) if docs else None

    @checks_names
    def count(self, name: str) -> int:
        path = self._path(name)
        if not path.exists():
            return 0
        with self._lock, path.open("rb") as fh:
            return sum(1 for line in fh if line.strip())


def new_log_id() -> str:
    """An id for a log document, so a retried write cannot store it twice."""
    return uuid.uuid4().hex
