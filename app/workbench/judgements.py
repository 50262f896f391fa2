"""Relevance judgements made in the workbench, kept as a BEIR-layout folder per index under the data dir:
``judgements/<index>/queries.jsonl`` and ``qrels/test.tsv``, which ``eval`` and ``tune`` read as they read any
BEIR folder (the corpus is the index itself).

A judgement is (query, document, grade 0-2); judging a document for a query again replaces its grade, and
grade ``None`` removes it. Query ids are derived from the query text, so the same query judged in two
columns, two sessions or two processes is one query (TREC-style pooling). Every change rewrites both
files atomically under a file lock: a reader never sees half a file, and two servers never lose each
other's judgements.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybrid_search.config.errors import ConfigError, SourceError
from hybrid_search.config.files import FileLock, atomic_write_text, describe_holder

__all__ = ["GRADES", "JudgementStore", "Judgements", "query_id"]

GRADES = (0, 1, 2)  # not relevant, relevant, highly relevant
_HEADER = "query-id\tcorpus-id\tscore"


def query_id(text: str) -> str:
    """A stable id for a query's text (whitespace and case folded)."""
    folded = " ".join(text.split()).casefold()
    return "q" + hashlib.sha256(folded.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Judgements:
    """Queries (id -> text) and their graded documents (id -> doc id -> grade)."""

    queries: Mapping[str, str]
    qrels: Mapping[str, Mapping[str, int]]

    @property
    def judged_queries(self) -> int:
        return sum(1 for docs in self.qrels.values() if docs)

    @property
    def count(self) -> int:
        return sum(len(docs) for docs in self.qrels.values())

    def grades_for(self, query: str) -> dict[str, int]:
        return dict(self.qrels.get(query_id(query), {}))

    def summary(self) -> dict[str, Any]:
        return {"judged_queries": self.judged_queries, "judgements": self.count}


class JudgementStore:
    """The judgements folder of one index (see the module docstring)."""

    def __init__(self, data_dir: str | Path, index: str) -> None:
        self.folder = Path(data_dir) / "judgements" / index
        self._lock = FileLock(
            Path(data_dir) / "locks" / f".judgements-{index}.lock",
            lambda holder: f"the judgements of {index!r} are being saved by {describe_holder(holder)}",
            wait=10.0,
        )

    @property
    def queries_path(self) -> Path:
        return self.folder / "queries.jsonl"

    @property
    def qrels_path(self) -> Path:
        return self.folder / "qrels" / "test.tsv"

    def load(self) -> Judgements:
        if not self.queries_path.exists():
            return Judgements({}, {})
        return parse(self.queries_path.read_text(encoding="utf-8"), self.qrels_path.read_text(encoding="utf-8"))

    def judge(self, query: str, doc_id: str, grade: int | None) -> Judgements:
        """Record (or with ``grade=None`` remove) one judgement; return the judgements after it."""
        if grade is not None and (isinstance(grade, bool) or grade not in GRADES):
            raise ConfigError(f"a grade is 0 (not relevant), 1 (relevant) or 2 (highly relevant), not {grade!r}")
        if not isinstance(query, str) or not query.strip() or not isinstance(doc_id, str) or not doc_id:
            raise ConfigError("a judgement needs the query text and the document id")
        with self._lock.held():
            current = self.load()
            queries, qrels = dict(current.queries), {q: dict(d) for q, d in current.qrels.items()}
            qid = query_id(query)
            queries.setdefault(qid, " ".join(query.split()))
            docs = qrels.setdefault(qid, {})
            if grade is None:
                docs.pop(doc_id, None)
            else:
                docs[doc_id] = grade
            return self._save(Judgements(queries, qrels))

    def import_files(self, queries_text: str, qrels_text: str) -> Judgements:
        """Merge judgement files (BEIR ``queries.jsonl`` and qrels TSV): imported grades replace existing ones."""
        incoming = parse(queries_text, qrels_text)
        with self._lock.held():
            current = self.load()
            queries = {**current.queries, **incoming.queries}
            qrels = {q: dict(d) for q, d in current.qrels.items()}
            for qid, docs in incoming.qrels.items():
                qrels.setdefault(qid, {}).update(docs)
            return self._save(Judgements(queries, qrels))

    def export(self) -> dict[str, str]:
        """The two files' contents, as ``import_files`` takes them."""
        current = self.load()
        return {"queries.jsonl": _queries_text(current), "qrels/test.tsv": _qrels_text(current)}

    def _save(self, judgements: Judgements) -> Judgements:
        self.folder.mkdir(parents=True, exist_ok=True)
        # qrels first: a query without qrels is harmless to a reader; qrels naming an unknown query are not
        atomic_write_text(self.qrels_path, _qrels_text(judgements))
        atomic_write_text(self.queries_path, _queries_text(judgements))
        return judgements


def _queries_text(j: Judgements) -> str:
    return "".join(json.dumps({"_id": q, "text": t}, ensure_ascii=False) + "\n" for q, t in sorted(j.queries.items()))


def _qrels_text(j: Judgements) -> str:
    lines = [_HEADER] + [
        f"{q}\t{d}\t{g}" for q, docs in sorted(j.qrels.items()) for d, g in sorted(docs.items()) if q in j.queries
    ]
    return "\n".join(lines) + "\n"


def parse(queries_text: str, qrels_text: str) -> Judgements:
    """Judgements from the two files' contents; ``SourceError`` naming the line that is wrong."""
    queries: dict[str, str] = {}
    for n, line in enumerate(queries_text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            queries[str(row["_id"])] = str(row["text"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SourceError(f"queries.jsonl line {n} is not a query with _id and text ({exc})") from None
    qrels: dict[str, dict[str, int]] = {}
    for n, line in enumerate(qrels_text.splitlines(), start=1):
        parts = line.split("\t")
        if not line.strip() or (parts[0] == "query-id"):
            continue
        try:
            grade = int(float(parts[2]))
        except (IndexError, ValueError):
            raise SourceError(f"qrels line {n} is not query-id <TAB> corpus-id <TAB> grade") from None
        if parts[0] not in queries:
            raise SourceError(f"qrels line {n} names query {parts[0]!r}, which queries.jsonl does not hold")
        qrels.setdefault(parts[0], {})[parts[1]] = grade
    return Judgements(queries, qrels)
