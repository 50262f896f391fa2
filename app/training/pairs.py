"""Training pairs from a CSV, JSONL or Parquet file, or a BEIR folder, read and checked.

- ``question1, question2[, is_duplicate]`` (Quora's columns) or ``sentence1, sentence2[, label]``: labelled
  pairs; the positives (label 1) are what ranking losses learn from.
- ``anchor, positive[, negative]``: positives, optionally with a negative each.
- a BEIR folder: each judged query with each of its relevant documents as a positive.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybrid_search.config.errors import ConfigError, SourceError
from hybrid_search.config.text import passage_text

if TYPE_CHECKING:
    from hybrid_search.app.client import HybridSearch

__all__ = ["index_passages", "PairSet", "read_pairs"]

log = logging.getLogger(__name__)


# accepted column sets, first match wins: (first text, second text, label or negative column, kind)
_SHAPES = (
    ("question1", "question2", "is_duplicate", "label"),
    ("sentence1", "sentence2", "label", "label"),
    ("anchor", "positive", "negative", "negative"),
)


_SHAPES_TEXT = "question1,question2[,is_duplicate] or sentence1,sentence2[,label] or anchor,positive[,negative]"


@dataclass(frozen=True, slots=True)
class PairSet:
    """Training pairs as read: two texts a row, and a 0/1 label or a negative text when the source has one."""

    first: list[str]
    second: list[str]
    labels: list[int] | None = None
    negatives: list[str] | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.first)

    def positives(self) -> tuple[list[str], list[str], list[str] | None]:
        """(anchors, positives, negatives or None): the rows a ranking loss learns from (label 1 or unlabelled)."""
        keep = [i for i in range(len(self)) if self.labels is None or self.labels[i] == 1]
        if not keep:
            raise ConfigError(f"{self.source}: no positive pair (label 1): a ranking loss needs duplicates to learn")
        neg = [self.negatives[i] for i in keep] if self.negatives is not None else None
        return [self.first[i] for i in keep], [self.second[i] for i in keep], neg

    def labelled(self) -> tuple[list[str], list[str], list[int]]:
        """(texts, texts, labels): what a pair classifier learns from. Both classes must be present."""
        if self.labels is None:
            raise ConfigError(
                f"{self.source}: this needs labelled pairs (question1,question2,is_duplicate or "
                "sentence1,sentence2,label), and the pairs have no label column"
            )
        classes = set(self.labels)
        if len(classes) < 2:
            raise ConfigError(
                f"{self.source}: every pair is labelled {classes.pop()}: a pair classifier needs both duplicates "
                "(1) and non-duplicates (0)"
            )
        return self.first, self.second, self.labels


def read_pairs(path: str | Path, *, max_pairs: int | None = None) -> PairSet:
    """Pairs from a CSV / JSONL / Parquet file or a BEIR folder, checked; any problem is one ``ConfigError``."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: no such file or folder (give a pairs CSV / JSONL / Parquet file or a BEIR folder)")
    if p.is_dir():
        return _beir_pairs(p, max_pairs)
    rows = list(_rows(p, max_pairs))
    if not rows:
        raise ConfigError(f"{p}: no pairs in the file (expected columns {_SHAPES_TEXT})")
    columns = set(rows[0])
    shape = next((s for s in _SHAPES if s[0] in columns and s[1] in columns), None)
    if shape is None:
        raise ConfigError(f"{p}: columns {sorted(columns)} hold no pairs: expected {_SHAPES_TEXT}")
    a, b, extra, kind = shape
    has_extra = extra in columns
    first, second, third, bad = [], [], [], []
    for row_no, row in enumerate(rows, start=2 if p.suffix.lower() == ".csv" else 1):
        x, y = cell_text(row.get(a)), cell_text(row.get(b))
        z = row.get(extra) if has_extra else None
        if not x or not y:
            bad.append((row_no, f"empty {a if not x else b}"))
            continue
        if kind == "label" and has_extra:
            try:
                label = int(float(z))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                label = -1
            if label not in (0, 1):
                bad.append((row_no, f"{extra} {z!r} is not 0 or 1"))
                continue
            z = label
        elif kind == "negative" and has_extra:
            z = cell_text(z)
            if not z:
                bad.append((row_no, f"empty {extra}"))
                continue
        first.append(x)
        second.append(y)
        third.append(z)
    if bad:
        shown = ", ".join(f"row {n}: {why}" for n, why in bad[:5])
        raise ConfigError(f"{p}: {len(bad)} of {len(rows)} pairs are unusable ({shown}): fix or remove them")
    labels = [int(z) for z in third if z is not None] if kind == "label" and has_extra else None
    negatives = [str(z) for z in third] if kind == "negative" and has_extra else None
    return PairSet(first, second, labels, negatives, source=str(p))


def cell_text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ("" if value is None else str(value).strip())


def _rows(p: Path, max_pairs: int | None) -> Iterator[Mapping[str, Any]]:
    suffix = p.suffix.lower()
    n = 0
    try:
        if suffix == ".csv":
            with open(p, encoding="utf-8-sig", newline="") as fh:
                for row in csv.DictReader(fh):
                    yield row
                    n += 1
                    if max_pairs and n >= max_pairs:
                        return
        elif suffix in (".jsonl", ".json"):
            with open(p, encoding="utf-8-sig") as fh:
                for line_no, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ConfigError(f"{p}: line {line_no} is not JSON ({exc.msg}): fix or remove it") from None
                    if not isinstance(row, dict):
                        raise ConfigError(f"{p}: line {line_no} is not a JSON object")
                    yield row
                    n += 1
                    if max_pairs and n >= max_pairs:
                        return
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(p).iter_batches(batch_size=10_000):
                for row in batch.to_pylist():
                    yield row
                    n += 1
                    if max_pairs and n >= max_pairs:
                        return
        else:
            raise ConfigError(f"{p}: pairs must be a .csv, .jsonl or .parquet file, or a BEIR folder")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise SourceError(f"{p}: cannot read it ({exc})") from exc


def _beir_pairs(folder: Path, max_pairs: int | None) -> PairSet:
    """Each judged query with each relevant document (grade > 0) as a positive pair."""
    from hybrid_search.ingest.sources import open_query_set

    query_set = open_query_set(folder)
    wanted = {doc for rels in query_set.qrels.values() for doc, grade in rels.items() if grade > 0}
    texts = read_passages(folder, wanted)
    first, second = [], []
    for qid, rels in query_set.qrels.items():
        query = cell_text(query_set.queries.get(qid))
        for doc, grade in rels.items():
            if grade > 0 and query and texts.get(doc) and doc != qid:
                first.append(query)
                second.append(texts[doc])
        if max_pairs and len(first) >= max_pairs:
            break
    if not first:
        raise ConfigError(f"{folder}: no (query, relevant document) pair with both texts found in this BEIR folder")
    return PairSet(
        first[:max_pairs] if max_pairs else first, second[:max_pairs] if max_pairs else second, source=str(folder)
    )


def read_passages(source: str | Path, only: set[str] | None = None) -> dict[str, str]:
    """doc id -> passage (title and text, as encoders read them) of a corpus's valid documents, read through
    the ingest validation so ids and texts are exactly what an ingest of it stores."""
    from hybrid_search.ingest.sources import open_source
    from hybrid_search.ingest.validate import Document, validate

    src = open_source(source)
    return {
        item.doc_id: item.passage
        for item in validate(src.records(), src.fields)
        if isinstance(item, Document) and (only is None or item.doc_id in only)
    }


def norm_text(text: str) -> str:
    return " ".join(text.lower().split())


def index_passages(hs: HybridSearch, *, limit: int | None = None) -> list[str]:
    """The passage texts (title and text) of the documents ``hs``'s index stores, the first ``limit`` of them:
    what ``train adapt`` learns from."""
    texts: list[str] = []
    for batch in hs.backend.iter_documents(hs.index):
        texts += [passage_text(d.title, d.text) for d in batch]
        if limit is not None and len(texts) >= limit:
            return texts[:limit]
    return texts
