"""What an evaluation keeps as it goes, so stopping it loses nothing finished.

Each query's ranked run is appended to a cache file, one per mode and pipeline (the physical build, its
document count, the request without its query, the models), and flushed: a rerun, or a run stopped midway
and started again, skips the queries already done. A torn last line (a kill mid-write) is ignored. Run files
in TREC format and per-query metrics let other tools (trec_eval, ir_measures, ranx, pyserini) compare runs.
It never decides what to search or how to score: ``evaluate`` does.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["QueryRunCache", "Run", "format_seconds", "run_key", "safe_name", "write_per_query", "write_trec_run"]

Run = dict[str, list[tuple[str, float]]]  # query id -> (doc id, score), best first


def safe_name(text: str) -> str:
    """``text`` with anything but letters, digits and ``-_.+`` as ``_``: a mode as a file name or a run tag."""
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in text)


def run_key(parts: Mapping[str, Any]) -> str:
    """A short stable name for what produced a run (any JSON-able description)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class QueryRunCache:
    """Per-query runs of one mode and pipeline on disk: ``get`` what an earlier run finished, ``add`` each
    new one as it completes (appended and flushed, so a kill keeps every finished query)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._done: dict[str, tuple[list[tuple[str, float]], float]] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self._done[str(row["qid"])] = ([(str(d), float(s)) for d, s in row["docs"]], float(row["ms"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line from a stopped run: that query runs again
        self._file: IO[str] | None = None

    def __len__(self) -> int:
        return len(self._done)

    def get(self, qid: str) -> tuple[list[tuple[str, float]], float] | None:
        return self._done.get(qid)

    def add(self, qid: str, docs: Sequence[tuple[str, float]], ms: float) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(json.dumps({"qid": qid, "docs": [list(d) for d in docs], "ms": round(ms, 3)}) + "\n")
        self._file.flush()
        self._done[qid] = (list(docs), ms)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def write_trec_run(path: Path, tag: str, run: Mapping[str, Sequence[tuple[str, float]]]) -> None:
    """``qid Q0 docid rank score tag`` lines, best first (the format trec_eval and ir_measures read).

    Those tools rank by score and break ties by doc id, so a tie (or a score out of order) is written a step
    of 1e-6 below the one before it: every tool then reads the ranking that was served."""
    path.parent.mkdir(parents=True, exist_ok=True)
    safe_tag = safe_name(tag)
    with path.open("w", encoding="utf-8") as out:
        for qid, docs in run.items():
            previous = math.inf
            for rank, (doc, score) in enumerate(docs, start=1):
                shown = round(score, 6) if round(score, 6) < previous else round(previous - 1e-6, 6)
                out.write(f"{qid} Q0 {doc} {rank} {shown:.6f} {safe_tag}\n")
                previous = shown


def write_per_query(path: Path, mode: str, scores: Mapping[str, Mapping[str, float]]) -> None:
    """Append ``mode qid metric value`` rows (tab-separated, a header on a new file) for one mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file()
    with path.open("a", encoding="utf-8") as out:
        if new:
            out.write("mode\tquery_id\tmetric\tvalue\n")
        for metric, per_query in scores.items():
            for qid, value in per_query.items():
                out.write(f"{mode}\t{qid}\t{metric}\t{value:.6f}\n")


def format_seconds(seconds: float) -> str:
    """``42 s``, ``12 min``, ``4.6 h``: an estimate's precision, no more."""
    if not math.isfinite(seconds):
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
