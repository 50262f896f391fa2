"""Corpus, query and qrels sources: BEIR folders, the BEIR sets on the Hugging Face hub, JSONL/CSV/Parquet.

Sources only *read*. Each yields :class:`RawRecord` objects carrying their position in the source and either
the raw fields or the reason they could not be parsed (malformed line, undecodable bytes), so the
validation stage can reject them with a position instead of crashing or dropping them silently. Large
sources are streamed: nothing here loads a whole corpus into memory.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, cast

from hybrid_search.config.errors import ConfigError, SourceError
from hybrid_search.config.extras import require

SAMPLE_SOURCE = "sample"
_BOM = b"\xef\xbb\xbf"

__all__ = [
    "JsonArrayFile",
    "as_source",
    "Records",
    "StoredIndex",
    "SAMPLE_SOURCE",
    "sample_path",
    "BeirFolder",
    "CorpusSource",
    "CsvFile",
    "FieldMap",
    "HUB_DATASETS",
    "HubBeir",
    "JsonlFile",
    "ParquetFile",
    "QuerySet",
    "RawRecord",
    "open_query_set",
    "open_source",
]

# Short names users type -> BEIR repositories on the hub (corpus/queries configs, qrels in "<repo>-qrels").
HUB_DATASETS: dict[str, str] = {"quora": "BeIR/quora", "nq": "BeIR/nq"}


@dataclass(frozen=True, slots=True)
class FieldMap:
    """Which fields hold the id, title, text and metadata of a record."""

    id_fields: tuple[str, ...] = ("_id", "id")
    title_field: str = "title"
    text_field: str = "text"
    metadata_fields: tuple[str, ...] = ()
    vector_field: str | None = None  # a precomputed embedding: stored as is, never encoded
    sparse_field: str | None = None  # precomputed learned-sparse vectors (token -> weight): checked, never encoded


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as read: 1-based ``position`` in the source, and fields or the reason it is unreadable."""

    position: int
    fields: Mapping[str, Any] | None = None
    error: str | None = None


class CorpusSource(Protocol):
    """Anything that yields raw corpus records in a stable order."""

    name: str
    fields: FieldMap

    def records(self) -> Iterator[RawRecord]: ...

    def count_hint(self) -> int | None:
        """How many positions ``records`` will go through, when that is cheap to know (else ``None``)."""


@dataclass(frozen=True, slots=True)
class QuerySet:
    """Queries and graded relevance judgements (``qrels[query_id][doc_id] = grade``)."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


# the CSV parser's own bound on one field (its default, 131,072 characters, would stop the whole read); a
# field past ingest.max_field_chars is rejected by validation with its size
_CSV_FIELD_LIMIT = 64 * 1024 * 1024
csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))


def _decode_text(raw: bytes) -> str:
    # surrogateescape keeps undecodable bytes visible as lone surrogates; validation rejects them per field
    return raw.decode("utf-8", errors="surrogateescape")


class JsonlFile:
    """One JSON object a line. Blank lines are skipped but keep their position count."""

    def __init__(self, path: str | Path, fields: FieldMap = FieldMap()) -> None:
        self.path = Path(path)
        self.fields = fields
        self.name = f"jsonl:{self.path.resolve()}"

    def count_hint(self) -> int | None:
        """Lines in the file (blank ones too, as positions count them), read in 1 MiB blocks."""
        lines, last = 0, b"\n"
        with _open_binary(self.path) as fh:
            while block := fh.read(1 << 20):
                lines += block.count(b"\n")
                last = block[-1:]
        return lines + (last != b"\n")

    def records(self) -> Iterator[RawRecord]:
        with _open_binary(self.path) as fh:
            for position, raw in enumerate(fh, start=1):
                if position == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM) :]  # editors on Windows write one; it is not part of the first record
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(_decode_text(raw))
                except json.JSONDecodeError as exc:
                    yield RawRecord(position, error=f"malformed JSON line: {exc.msg} at character {exc.pos}")
                    continue
                except RecursionError:
                    yield RawRecord(position, error="malformed JSON line: nested too deeply")
                    continue
                if not isinstance(obj, dict):
                    yield RawRecord(position, error=f"malformed line: expected a JSON object, got {type(obj).__name__}")
                    continue
                yield RawRecord(position, fields=obj)


class JsonArrayFile:
    """A ``.json`` file: one JSON array of objects, read element by element in 1 MiB blocks (never the whole
    file at once), positions counting elements from 1. A file whose first character is ``{`` is JSON Lines
    under another name, and is read as such. Past a syntax error the array has no reliable next element, so
    the rest of the file is one rejected record saying where it broke."""

    MAX_ELEMENT_CHARS = 64 * 1024 * 1024  # one element's bound, as a CSV field's

    def __init__(self, path: str | Path, fields: FieldMap = FieldMap()) -> None:
        self.path = Path(path)
        self.fields = fields
        self.name = f"json:{self.path.resolve()}"

    def count_hint(self) -> int | None:
        return None

    def records(self) -> Iterator[RawRecord]:
        with _open_binary(self.path) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape")
            buf, at = text.read(1 << 20), 0
            if not buf.strip():
                return  # an empty file holds no records
            while at < len(buf) and buf[at].isspace():
                at += 1
            if buf[at : at + 1] == "{":
                yield from JsonlFile(self.path, self.fields).records()
                return
            if buf[at : at + 1] != "[":
                yield RawRecord(1, error="malformed JSON file: expected an array of objects ([{...}, ...])")
                return
            yield from self._elements(text, buf, at + 1)

    def _elements(self, text: io.TextIOWrapper, buf: str, at: int) -> Iterator[RawRecord]:
        decoder, position, eof = json.JSONDecoder(), 0, False
        while True:
            while at < len(buf) and (buf[at].isspace() or (buf[at] == "," and position)):
                at += 1
            if at == len(buf) and not eof:
                more = text.read(1 << 20)
                buf, at, eof = buf[at:] + more, 0, not more
                continue
            if buf[at : at + 1] == "]" or (eof and at == len(buf)):
                return
            try:
                obj, end = decoder.raw_decode(buf, at)
            except (json.JSONDecodeError, RecursionError) as exc:
                if not eof and len(buf) - at < self.MAX_ELEMENT_CHARS:  # the element may go on in the next block
                    more = text.read(1 << 20)
                    buf, at, eof = buf[at:] + more, 0, not more
                    continue
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
                yield RawRecord(
                    position + 1,
                    error=f"malformed JSON array at element {position + 1}: {reason}; "
                    "the rest of the file was not read",
                )
                return
            position += 1
            at = end
            if isinstance(obj, dict):
                yield RawRecord(position, fields=obj)
            else:
                yield RawRecord(position, error=f"malformed element: expected a JSON object, got {type(obj).__name__}")


class CsvFile:
    """A CSV file with a header row; quoted fields may span lines. Positions count data rows from 1."""

    def __init__(self, path: str | Path, fields: FieldMap = FieldMap(), *, delimiter: str = ",") -> None:
        self.path = Path(path)
        self.fields = fields
        self.delimiter = delimiter
        self.name = f"csv:{self.path.resolve()}"

    def count_hint(self) -> int | None:
        return None  # quoted fields may span lines: only a full parse would know

    def records(self) -> Iterator[RawRecord]:
        with _open_binary(self.path) as raw:
            # utf-8-sig: a byte-order mark would otherwise glue itself to the first column's name
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
            reader = csv.reader(text, delimiter=self.delimiter)
            header = next(reader, None)
            if not header:
                return
            position = 0
            while True:
                position += 1
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:  # a field over the parser's limit: this row is rejected, the rest read on
                    yield RawRecord(position, error=f"malformed row: {exc}")
                    continue
                if not row:
                    continue
                if len(row) != len(header):
                    yield RawRecord(position, error=f"malformed row: {len(row)} fields, header has {len(header)}")
                    continue
                yield RawRecord(position, fields=dict(zip(header, row, strict=True)))


class ParquetFile:
    """A Parquet file read in row batches."""

    def __init__(self, path: str | Path, fields: FieldMap = FieldMap(), *, batch_rows: int = 8192) -> None:
        self.path = Path(path)
        self.fields = fields
        self.batch_rows = batch_rows
        self.name = f"parquet:{self.path.resolve()}"

    def count_hint(self) -> int | None:
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(self.path).metadata.num_rows)
        except Exception:  # an unreadable file is reported by records()
            return None

    def records(self) -> Iterator[RawRecord]:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self.path)
        except Exception as exc:  # pyarrow raises several unrelated types for a bad file
            raise SourceError(f"{self.path} is not a readable Parquet file: {exc}") from exc
        position = 0
        for batch in pf.iter_batches(batch_size=self.batch_rows):
            for row in batch.to_pylist():
                position += 1
                yield RawRecord(position, fields={k: _bytes_to_text(v) for k, v in row.items()})


def _bytes_to_text(value: Any) -> Any:
    return _decode_text(value) if isinstance(value, bytes) else value


class BeirFolder:
    """A BEIR-layout folder: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``."""

    def __init__(self, path: str | Path, fields: FieldMap = FieldMap()) -> None:
        self.path = Path(path)
        self.fields = fields
        self.name = f"beir:{self.path.resolve()}"
        self._corpus = JsonlFile(self.path / "corpus.jsonl", fields)

    def records(self) -> Iterator[RawRecord]:
        return self._corpus.records()

    def count_hint(self) -> int | None:
        return self._corpus.count_hint()

    def query_set(self, split: str = "test") -> QuerySet:
        qrels_path = self.path / "qrels" / f"{split}.tsv"
        if not qrels_path.exists():
            have = sorted(p.stem for p in (self.path / "qrels").glob("*.tsv"))
            raise SourceError(f"{qrels_path} not found: choose --split from {have or 'nothing (no qrels/)'}")
        queries_path = self.path / "queries.jsonl"
        if not queries_path.is_file():
            raise SourceError(f"{queries_path} not found: a BEIR folder needs queries.jsonl to evaluate")
        queries: dict[str, str] = {}
        for rec in JsonlFile(queries_path).records():
            if rec.fields is None or rec.fields.get("_id") in (None, ""):
                # a query lost here would silently change every metric: stop and say where
                raise SourceError(f"{queries_path} line {rec.position}: {rec.error or 'a query without _id'}")
            text = str(rec.fields.get("text", ""))
            if any("\udc80" <= ch <= "\udcff" for ch in text):
                raise SourceError(f"{queries_path} line {rec.position}: the query text is not UTF-8")
            queries[str(rec.fields["_id"])] = text
        return QuerySet(queries=queries, qrels=_read_qrels_tsv(qrels_path))


def _read_qrels_tsv(path: Path) -> dict[str, dict[str, int]]:
    """``query-id <TAB> corpus-id <TAB> score`` lines (a header line is optional); any other line is an error."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8").rstrip("\r\n")
                parts = line.split("\t")
                if not line.strip() or (n == 1 and parts[0] == "query-id"):
                    continue
                if len(parts) < 3 or not parts[0] or not parts[1]:
                    raise ValueError("expected query-id, corpus-id and score separated by tabs")
                qrels.setdefault(parts[0], {})[parts[1]] = int(float(parts[2]))
            except (UnicodeDecodeError, ValueError, OverflowError) as exc:
                raise SourceError(f"{path} line {n} is not a qrels line ({exc}): fix the file") from None
    return qrels


class HubBeir:
    """A BEIR set on the Hugging Face hub through ``datasets``; the corpus is streamed, never loaded whole."""

    def __init__(self, repo: str, fields: FieldMap = FieldMap(), *, loader: Any = None) -> None:
        self.repo = repo
        self.fields = fields
        self.name = f"hub:{repo}"
        self._loader = loader  # tests hand in a loader over local files; None means datasets.load_dataset

    def count_hint(self) -> int | None:
        return None  # streamed: the size is not known before the end

    def _load(self, *args: Any, **kwargs: Any) -> Any:
        loader = self._loader
        if loader is None:
            loader = require("datasets", extra=None, purpose="reading corpora from the Hugging Face hub").load_dataset
        try:
            return loader(*args, **kwargs)
        except Exception as exc:  # datasets raises many types for network and hub errors
            raise SourceError(
                f"could not load {args[0]} from the Hugging Face hub ({type(exc).__name__}: {exc}); check the "
                "network or HF_ENDPOINT, or download the BEIR folder and pass its path instead"
            ) from exc

    def records(self) -> Iterator[RawRecord]:
        stream = self._load(self.repo, "corpus", split="corpus", streaming=True)
        for position, row in enumerate(stream, start=1):
            yield RawRecord(position, fields=dict(row))

    def query_set(self, split: str = "test") -> QuerySet:
        queries = {str(r["_id"]): str(r["text"]) for r in self._load(self.repo, "queries", split="queries")}
        qrels: dict[str, dict[str, int]] = {}
        for r in self._load(f"{self.repo}-qrels", split=split):
            qrels.setdefault(str(r["query-id"]), {})[str(r["corpus-id"])] = int(r["score"])
        return QuerySet(queries=queries, qrels=qrels)


def _open_binary(path: Path) -> io.BufferedReader:
    try:
        return path.open("rb")
    except OSError as exc:
        raise SourceError(f"cannot open {path}: {exc.strerror}") from exc


_FILE_TYPES: dict[str, type] = {
    ".jsonl": JsonlFile,
    ".ndjson": JsonlFile,
    ".json": JsonArrayFile,
    ".csv": CsvFile,
    ".parquet": ParquetFile,
}


class _DocumentReader(Protocol):
    def iter_documents(self, index: str, batch: int = ...) -> Iterator[list[Any]] | Any: ...

    def count(self, index: str) -> int: ...


class StoredIndex:
    """The documents a physical index already holds, as a source: what ``reindex`` re-encodes. Read in the
    store's own stable order (key order on the embedded backend, ``_doc`` order of an index no one writes to
    on a cluster), so a resumed reindex skips exactly what it stored before."""

    def __init__(self, backend: _DocumentReader, physical: str, metadata_fields: tuple[str, ...] = ()) -> None:
        self.backend, self.physical = backend, physical
        self.fields = FieldMap(id_fields=("_id",), metadata_fields=metadata_fields)
        self.name = f"index:{physical}"

    def count_hint(self) -> int | None:
        return self.backend.count(self.physical)

    def records(self) -> Iterator[RawRecord]:
        position = 0
        for batch in self.backend.iter_documents(self.physical):
            for doc in batch:
                position += 1
                yield RawRecord(position, {**doc.metadata, "_id": doc.doc_id, "title": doc.title, "text": doc.text})


class Records:
    """Records held in memory as a source: an iterable of mappings, a pandas ``DataFrame``, a pyarrow
    ``Table`` or a ``datasets.Dataset``, read row by row through the same validation, rejects and checkpoints
    as a file. ``name`` identifies the records for ``resume``: a resumed ingest must be given the same records
    in the same order under the same name (an unnamed one cannot be resumed, since nothing says it is the same)."""

    def __init__(self, data: Any, fields: FieldMap = FieldMap(), *, name: str | None = None) -> None:
        if isinstance(data, (str, bytes, Mapping)) or not hasattr(data, "__iter__") and not _is_table(data):
            raise SourceError(
                f"records must be an iterable of mappings, a pandas DataFrame, a pyarrow Table or a datasets "
                f"Dataset, not {type(data).__name__}"
            )
        self.data, self.fields = data, fields
        # a one-shot iterator (a generator) can be read once: its first records are kept so that the field
        # check's look at them does not consume them (the ingest then reads them again, then the rest)
        self._once = iter(data) if not _is_table(data) and iter(data) is data else None
        self._head: list[Any] = []
        self.named = name is not None
        self.name = f"records:{name}" if name is not None else "records:(unnamed)"

    def count_hint(self) -> int | None:
        size = getattr(self.data, "num_rows", None)
        if size is None and hasattr(self.data, "__len__"):
            size = len(self.data)
        return int(size) if size is not None else None

    def _rows(self) -> Iterator[Any]:
        data = self.data
        if hasattr(data, "to_batches"):  # pyarrow Table: a batch at a time, never the whole table as Python
            for batch in data.to_batches(max_chunksize=8192):
                yield from batch.to_pylist()
        elif hasattr(data, "iterrows") and hasattr(data, "columns"):  # pandas DataFrame
            for _, row in data.iterrows():  # a missing cell is NaN in pandas: it is a missing field here
                yield {k: None if isinstance(v, float) and v != v else v for k, v in row.to_dict().items()}
        elif self._once is not None:
            yield from self._head
            for row in self._once:
                if len(self._head) < _HEAD_KEPT:
                    self._head.append(row)
                yield row
        else:
            yield from data

    def records(self) -> Iterator[RawRecord]:
        for position, row in enumerate(self._rows(), start=1):
            if isinstance(row, Mapping):
                yield RawRecord(position, fields={str(k): _bytes_to_text(v) for k, v in row.items()})
            else:
                yield RawRecord(position, error=f"malformed record: expected a mapping, got {type(row).__name__}")


_HEAD_KEPT = 1_000  # as many as the field check looks at (ingest.pipeline.FIELD_SAMPLE)


def _is_table(data: Any) -> bool:
    return hasattr(data, "to_batches") or (hasattr(data, "iterrows") and hasattr(data, "columns"))


def sample_path() -> Path:
    """The bundled demo corpus (a small BEIR folder shipped inside the package), also named ``sample``."""
    return Path(str(resources.files("hybrid_search.ingest") / "sample"))


def open_source(spec: str | Path, fields: FieldMap | None = None) -> CorpusSource:
    """``quora`` / ``nq`` (hub), ``sample`` (bundled), a BEIR folder, or a ``.jsonl`` / ``.csv`` / ``.parquet``
    file."""
    fields = fields or FieldMap()
    text = str(spec)
    if text in HUB_DATASETS:
        return HubBeir(HUB_DATASETS[text], fields)
    if text == SAMPLE_SOURCE and not Path(text).exists():
        return BeirFolder(sample_path(), fields)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "corpus.jsonl").exists():
            return BeirFolder(path, fields)
        raise SourceError(f"{path} is a folder without corpus.jsonl: give a BEIR folder or a file")
    if path.is_file():
        kind = _FILE_TYPES.get(path.suffix.lower())
        if kind is None:
            raise SourceError(f"{path}: unknown file type {path.suffix!r}; use .jsonl, .json, .csv or .parquet")
        return kind(path, fields)
    raise SourceError(f"source {text!r} not found: give {' or '.join(HUB_DATASETS)}, a BEIR folder or a file")


def open_query_set(spec: str | Path, split: str = "test") -> QuerySet:
    """Queries and qrels of a hub set or a BEIR folder; a folder of judgements alone (``queries.jsonl`` and
    ``qrels/``, no corpus: what the workbench saves) evaluates an index that already holds the corpus."""
    path = Path(str(spec)).expanduser()
    if path.is_dir() and not (path / "corpus.jsonl").exists() and (path / "queries.jsonl").is_file():
        return BeirFolder(path).query_set(split)
    source = open_source(spec)
    if not isinstance(source, (BeirFolder, HubBeir)):
        raise SourceError(f"{spec} has no queries or qrels: evaluation needs a BEIR folder, quora or nq")
    return source.query_set(split)


FIELD_OPTIONS = ("metadata_fields", "id_field", "title_field", "text_field", "vector_field", "sparse_field", "fields")


def as_source(source: Any, *, name: str | None = None, options: Mapping[str, Any] | None = None) -> CorpusSource:
    """A corpus source from what the Python client is given: a source name or path, a ``CorpusSource``, or
    records in memory (dicts, a DataFrame, an Arrow table or a ``datasets.Dataset``, named by ``name``).
    ``options``: ``HybridSearch.ingest``'s field options (``FIELD_OPTIONS``), or a whole ``FieldMap`` as
    ``fields``."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(FIELD_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown field option {unknown[0]!r}: use one of {', '.join(FIELD_OPTIONS)}")
    fields = options.get("fields")
    if fields is None:
        id_field = options.get("id_field")
        fields = FieldMap(
            id_fields=(id_field,) if id_field else ("_id", "id"),
            title_field=options.get("title_field") or "title",
            text_field=options.get("text_field") or "text",
            metadata_fields=tuple(options.get("metadata_fields") or ()),
            vector_field=options.get("vector_field"),
            sparse_field=options.get("sparse_field"),
        )
    if isinstance(source, (str, Path)):
        return open_source(source, fields)
    if hasattr(source, "records") and hasattr(source, "fields"):
        return cast("CorpusSource", source)
    return Records(source, fields, name=name)
