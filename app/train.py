"""``hybrid-search train``: fine-tune the bi-encoder or a cross-encoder on the user's pairs, or adapt the
bi-encoder to an index's documents without labels.

The training loops are sentence-transformers' own (``SentenceTransformerTrainer``, ``CrossEncoderTrainer``, in
the ``train`` extra); this module reads and checks the user's pairs, mines hard negatives through the
project's backend (any backend, at corpus scale), stages the output folder so an interrupted run leaves the
previous model untouched, and measures before and after. Output folders are ordinary sentence-transformers
folders: they load there, in our ``Encoder`` and in our ``CrossEncoderReranker``.

Pairs, from a CSV, JSONL or Parquet file:

- ``question1, question2[, is_duplicate]`` (Quora's columns) or ``sentence1, sentence2[, label]``: labelled
  pairs; the positives (label 1) are what ranking losses learn from.
- ``anchor, positive[, negative]``: positives, optionally with a negative each.
- a BEIR folder: each judged query with each of its relevant documents as a positive.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_search.config.errors import ConfigError, SourceError
from hybrid_search.config.extras import require

__all__ = [
    "LOSSES",
    "PairSet",
    "TrainOptions",
    "adapt",
    "mine_hard_negatives",
    "read_pairs",
    "train_bi_encoder",
    "train_cross_encoder",
]

log = logging.getLogger(__name__)

LOSSES = ("mnrl", "online-contrastive", "multi-task")
ADAPT_METHODS = ("simcse", "tsdae")

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
        x, y = _text(row.get(a)), _text(row.get(b))
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
            z = _text(z)
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


def _text(value: Any) -> str:
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
    texts = _passages(folder, wanted)
    first, second = [], []
    for qid, rels in query_set.qrels.items():
        query = _text(query_set.queries.get(qid))
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


def _passages(source: str | Path, only: set[str] | None = None) -> dict[str, str]:
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


# --- hard negatives, mined through the backend -----------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


@dataclass
class MiningReport:
    anchors: int = 0
    mined: int = 0
    skipped_positive: int = 0  # candidates that were the anchor itself or one of its known positives
    skipped_margin: int = 0  # candidates scoring too close to the positive (likely unlabelled positives)
    none_found: int = 0  # anchors with no usable candidate: left out of the triplets

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def mine_hard_negatives(
    hs: Any,
    anchors: Sequence[str],
    positives: Sequence[str],
    *,
    depth: int = 20,
    margin: float = 0.05,
    batch: int = 256,
) -> tuple[list[tuple[str, str, str]], MiningReport]:
    """(anchor, positive, negative) triplets, the negative found by kNN over ``hs``'s index (one batched call
    per ``batch`` anchors: the HNSW graph on the embedded backend, ``_msearch`` on a cluster).

    A candidate is never the anchor or any positive the pairs give for it (compared by normalised text), and
    never scores above ``(1 - margin)`` times the positive's similarity to the anchor: a candidate that close
    is more likely an unlabelled duplicate than a negative. Anchors with no usable candidate are counted and
    left out."""
    if not 0.0 <= margin < 1.0:
        raise ConfigError(f"--margin must be in [0, 1), got {margin}")
    known: dict[str, set[str]] = {}
    for a, p in zip(anchors, positives, strict=True):
        known.setdefault(_norm(a), {_norm(a)}).add(_norm(p))
    backend, index, encoder = hs.backend, hs.index, hs.query_encoder
    num_candidates = max(hs.settings.search.num_candidates, depth)
    report = MiningReport()
    out: list[tuple[str, str, str]] = []
    for start in range(0, len(anchors), batch):
        a_part, p_part = list(anchors[start : start + batch]), list(positives[start : start + batch])
        a_vec = encoder.encode_queries(a_part)
        p_vec = encoder.encode_documents(p_part).vectors
        pos_sim = np.sum(np.asarray(a_vec) * np.asarray(p_vec), axis=1)
        found = backend.knn_batch(index, np.asarray(a_vec, dtype=np.float32), depth, num_candidates)
        texts = backend.get_texts(index, sorted({d for hits in found for d, _ in hits}))
        for anchor, positive, sim, hits in zip(a_part, p_part, pos_sim, found, strict=True):
            report.anchors += 1
            exclude = known[_norm(anchor)]
            negative = None
            for doc_id, score in hits:
                text = texts.get(doc_id, "")
                if not text or _norm(text) in exclude:
                    report.skipped_positive += 1
                    continue
                if score > (1.0 - margin) * float(sim):
                    report.skipped_margin += 1
                    continue
                negative = text
                break
            if negative is None:
                report.none_found += 1
                continue
            out.append((anchor, positive, negative))
            report.mined += 1
    return out, report


# --- training ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrainOptions:
    epochs: float = 1.0
    batch_size: int = 64
    lr: float = 2e-5
    max_steps: int | None = None
    warmup_ratio: float = 0.1
    seed: int = 0
    device: str = "auto"  # auto: CUDA when present (bf16 where supported, else fp16), else CPU
    margin: float = 0.5  # OnlineContrastiveLoss margin
    progress: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise ConfigError("--batch-size must be at least 2 (in-batch negatives need company)")
        if self.epochs <= 0 or self.lr <= 0:
            raise ConfigError("--epochs and --lr must be positive")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError("--max-steps must be at least 1")


def _st() -> Any:
    return require("sentence_transformers", extra="train", purpose="training")


def _losses() -> Any:
    _st()
    try:
        from sentence_transformers.sentence_transformer import losses
    except ImportError:  # sentence-transformers 5.x
        from sentence_transformers import losses  # type: ignore[no-redef,attr-defined,unused-ignore]
    return losses


def _device(choice: str) -> tuple[str, dict[str, bool]]:
    """The device, and the mixed-precision flags for the trainer (bf16 where the GPU has it, else fp16)."""
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if choice == "auto" else choice
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available (use --device cpu)")
        return device, {"bf16": torch.cuda.is_bf16_supported(), "fp16": not torch.cuda.is_bf16_supported()}
    return device, {}


def _args(cls: Any, options: TrainOptions, work: Path, steps_hint: int) -> Any:
    device, precision = _device(options.device)
    require("accelerate", extra="train", purpose="training")
    return cls(
        output_dir=str(work / "checkpoints"),
        num_train_epochs=options.epochs,
        max_steps=options.max_steps or -1,
        per_device_train_batch_size=options.batch_size,
        learning_rate=options.lr,
        warmup_steps=int(options.warmup_ratio * steps_hint),
        seed=options.seed,
        data_seed=options.seed,
        logging_steps=max(1, min(50, steps_hint // 20 or 1)),
        save_strategy="no",
        report_to=[],
        disable_tqdm=not options.progress,
        use_cpu=device == "cpu",
        dataloader_drop_last=False,
        **precision,
    )


def _steps_hint(rows: int, options: TrainOptions) -> int:
    per_epoch = max(1, -(-rows // options.batch_size))
    total = int(per_epoch * options.epochs)
    return min(total, options.max_steps) if options.max_steps else total


@contextlib.contextmanager
def staged_output(out: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """A fresh folder beside ``out`` to train into, moved to ``out`` only when the block finishes: an
    interrupted or failed run leaves whatever ``out`` held untouched (and removes its partial folder)."""
    target = Path(out).resolve()
    if target.exists() and not overwrite:
        raise ConfigError(f"--out {out} already exists: choose a new folder, or pass --overwrite to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(work / "checkpoints", ignore_errors=True)
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        os.replace(target, old)
    os.replace(work, target)
    shutil.rmtree(old, ignore_errors=True)


def _run(trainer: Any, options: TrainOptions) -> float:
    """Train; return the wall time. Without progress, the trainer's per-step log lines are not printed."""
    if not options.progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def _loss_curve(history: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    return [{"step": int(h["step"]), "loss": float(h["loss"])} for h in history if "loss" in h and "step" in h]


def _base_folder(base: str) -> Path:
    from hybrid_search.encoding.models import resolve_model

    return resolve_model(base)


@dataclass
class TrainSummary:
    kind: str
    out: str
    base: str
    pairs: int
    loss: str
    steps: int = 0
    seconds: float = 0.0
    device: str = "cpu"
    loss_curve: list[dict[str, float]] = field(default_factory=list)
    mining: dict[str, int] | None = None
    before: dict[str, float] | None = None
    after: dict[str, float] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def text(self) -> str:
        first = self.loss_curve[0]["loss"] if self.loss_curve else float("nan")
        last = self.loss_curve[-1]["loss"] if self.loss_curve else float("nan")
        lines = [
            f"trained {self.kind} ({self.loss}) from {self.base} on {self.pairs} examples: {self.steps} steps in "
            f"{self.seconds:.1f} s on {self.device}; loss {first:.4f} -> {last:.4f}",
            f"saved to {self.out} (loads in sentence-transformers and as --model / --cross-encoder)",
        ]
        if self.mining:
            m = self.mining
            lines.append(
                f"hard negatives: {m['mined']} of {m['anchors']} anchors ({m['skipped_positive']} positives and "
                f"{m['skipped_margin']} too-close candidates skipped, {m['none_found']} anchors without one)"
            )
        for name, metrics in (("before", self.before), ("after", self.after)):
            if metrics:
                lines.append(f"{name:<7}" + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return "\n".join(lines)


def train_bi_encoder(
    pairs: PairSet,
    out: str | Path,
    *,
    base: str,
    loss: str = "mnrl",
    options: TrainOptions = TrainOptions(),
    triplets: Sequence[tuple[str, str, str]] | None = None,
    overwrite: bool = False,
    evaluate: Any = None,
) -> TrainSummary:
    """Fine-tune a bi-encoder: ``mnrl`` (positives, in-batch negatives, both directions, plus a mined or given
    negative when there is one), ``online-contrastive`` (labelled pairs, ``options.margin``) or ``multi-task``
    (both losses, alternating batches). ``evaluate(model_folder) -> metrics`` runs before and after."""
    if loss not in LOSSES:
        raise ConfigError(f"unknown --loss {loss!r}: use one of {', '.join(LOSSES)}")
    st, losses = _st(), _losses()
    from datasets import Dataset

    datasets: dict[str, Any] = {}
    if loss in ("mnrl", "multi-task"):
        if triplets:
            a, p, n = (list(x) for x in zip(*triplets, strict=True))
            datasets["mnrl"] = Dataset.from_dict({"anchor": a, "positive": p, "negative": n})
        else:
            a, p, neg = pairs.positives()
            cols = {"anchor": a, "positive": p, **({"negative": neg} if neg is not None else {})}
            datasets["mnrl"] = Dataset.from_dict(cols)
    if loss in ("online-contrastive", "multi-task"):
        s1, s2, y = pairs.labelled()
        datasets["contrastive"] = Dataset.from_dict({"sentence1": s1, "sentence2": s2, "label": y})
    folder = _base_folder(base)
    before = evaluate(folder) if evaluate is not None else None
    device, _ = _device(options.device)
    with staged_output(out, overwrite=overwrite) as work:
        model = st.SentenceTransformer(str(folder), device=device)
        loss_fns = {}
        if "mnrl" in datasets:
            loss_fns["mnrl"] = losses.MultipleNegativesSymmetricRankingLoss(model)
        if "contrastive" in datasets:
            loss_fns["contrastive"] = losses.OnlineContrastiveLoss(model, margin=options.margin)
        rows = sum(len(d) for d in datasets.values())
        args = _args(st.SentenceTransformerTrainingArguments, options, work, _steps_hint(rows, options))
        single = len(datasets) == 1
        name = next(iter(datasets))
        trainer = st.SentenceTransformerTrainer(
            model=model,
            args=args,
            train_dataset=datasets[name] if single else datasets,
            loss=loss_fns[name] if single else loss_fns,
        )
        seconds = _run(trainer, options)
        model.save(str(work))
        _write_card(work, kind="bi-encoder", base=base, loss=loss, pairs=len(pairs))
    return _summary(
        "bi-encoder",
        out,
        base,
        len(pairs),
        loss,
        trainer,
        seconds,
        device,
        before,
        evaluate,
        options,
        ("epochs", "batch_size", "lr", "max_steps", "seed", "margin"),
    )


def train_cross_encoder(
    pairs: PairSet,
    out: str | Path,
    *,
    base: str,
    options: TrainOptions = TrainOptions(),
    overwrite: bool = False,
    evaluate: Any = None,
    reference: str | None = None,
) -> TrainSummary:
    """A binary cross-encoder (duplicate or not) from labelled pairs, each pair in both orders. ``base`` may be
    a bi-encoder's folder: its transformer weights start the model, with a fresh one-logit head."""
    st = _st()
    from datasets import Dataset

    s1, s2, y = pairs.labelled()
    data = Dataset.from_dict({"sentence1": s1 + s2, "sentence2": s2 + s1, "label": [float(v) for v in y + y]})
    folder = _base_folder(base)
    # before: the base when it is a cross-encoder already, else the reference one (the configured reranker)
    start_from = folder if _is_cross_encoder(folder) else (_base_folder(reference) if reference else None)
    before = evaluate(start_from) if evaluate is not None and start_from is not None else None
    device, _ = _device(options.device)
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    with staged_output(out, overwrite=overwrite) as work:
        model = st.CrossEncoder(str(folder), num_labels=1, device=device)
        args = _args(CrossEncoderTrainingArguments, options, work, _steps_hint(len(data), options))
        trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=data, loss=BinaryCrossEntropyLoss(model))
        seconds = _run(trainer, options)
        model.save(str(work))
        _write_card(work, kind="cross-encoder", base=base, loss="binary-cross-entropy", pairs=len(pairs))
    return _summary(
        "cross-encoder",
        out,
        base,
        len(pairs),
        "binary-cross-entropy",
        trainer,
        seconds,
        device,
        before,
        evaluate,
        options,
        ("epochs", "batch_size", "lr", "max_steps", "seed"),
    )


def _summary(
    kind: str,
    out: str | Path,
    base: str,
    examples: int,
    loss: str,
    trainer: Any,
    seconds: float,
    device: str,
    before: dict[str, float] | None,
    evaluate: Any,
    options: TrainOptions,
    keys: tuple[str, ...],
) -> TrainSummary:
    """The run's summary; ``evaluate`` (if any) measures the folder now in place at ``out``."""
    target = Path(out).resolve()
    return TrainSummary(
        kind=kind,
        out=str(target),
        base=base,
        pairs=examples,
        loss=loss,
        steps=int(trainer.state.global_step),
        seconds=round(seconds, 1),
        device=device,
        loss_curve=_loss_curve(trainer.state.log_history),
        before=before,
        after=evaluate(target) if evaluate is not None else None,
        options={k: getattr(options, k) for k in keys},
    )


def _is_cross_encoder(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or [])


def adapt(
    texts: Sequence[str],
    out: str | Path,
    *,
    base: str,
    method: str = "simcse",
    options: TrainOptions = TrainOptions(),
    overwrite: bool = False,
    evaluate: Any = None,
) -> TrainSummary:
    """Unsupervised adaptation to a corpus: ``simcse`` (each text against itself under dropout, in-batch
    negatives) or ``tsdae`` (reconstruct each text from a noisy copy through a tied decoder)."""
    if method not in ADAPT_METHODS:
        raise ConfigError(f"unknown --method {method!r}: use one of {', '.join(ADAPT_METHODS)}")
    kept = [t for t in (_text(t) for t in texts) if len(t.split()) >= 3]
    if len(kept) < 2:
        raise ConfigError("adaptation needs at least two documents of three words or more in the index")
    st, losses = _st(), _losses()
    from datasets import Dataset

    folder = _base_folder(base)
    before = evaluate(folder) if evaluate is not None else None
    device, _ = _device(options.device)
    rng = random.Random(options.seed)
    with staged_output(out, overwrite=overwrite) as work:
        model = st.SentenceTransformer(str(folder), device=device)
        if method == "simcse":
            data = Dataset.from_dict({"anchor": kept, "positive": kept})
            loss_fn = losses.MultipleNegativesRankingLoss(model)
        else:
            data = Dataset.from_dict({"noisy": [_delete_words(t, rng) for t in kept], "text": kept})
            loss_fn = losses.DenoisingAutoEncoderLoss(model, decoder_name_or_path=str(folder), tie_encoder_decoder=True)
        args = _args(st.SentenceTransformerTrainingArguments, options, work, _steps_hint(len(data), options))
        trainer = st.SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss_fn)
        seconds = _run(trainer, options)
        model.save(str(work))
        _write_card(work, kind="bi-encoder", base=base, loss=method, pairs=len(kept))
    return _summary(
        "adapted bi-encoder",
        out,
        base,
        len(kept),
        method,
        trainer,
        seconds,
        device,
        before,
        evaluate,
        options,
        ("epochs", "batch_size", "lr", "max_steps", "seed"),
    )


def _delete_words(text: str, rng: random.Random, ratio: float = 0.6) -> str:
    """TSDAE's noise: delete each word with probability ``ratio``, keeping at least one."""
    words = text.split()
    kept = [w for w in words if rng.random() >= ratio]
    return " ".join(kept or [rng.choice(words)])


def _write_card(folder: Path, **facts: Any) -> None:
    """What made this model, beside its weights (``hybrid-search-train.json``)."""
    (folder / "hybrid-search-train.json").write_text(json.dumps(facts, indent=2), encoding="utf-8")


# --- measuring before and after ---------------------------------------------------------------------------------


def _exact_knn(
    model_folder: str | Path, source: str | Path, *, depth: int, max_queries: int | None, device: str
) -> tuple[Any, list[tuple[str, str]], dict[str, list[tuple[str, float]]], dict[str, str]]:
    """(query set, judged queries, exact kNN run with scores, doc id -> passage) of a bi-encoder on a BEIR
    folder, the corpus encoded in memory: a measurement that needs no index."""
    from hybrid_search.app.evaluate import select_queries
    from hybrid_search.config.settings import ModelSettings
    from hybrid_search.encoding.encoder import Encoder
    from hybrid_search.ingest.sources import open_query_set

    query_set = open_query_set(source)
    queries = select_queries(query_set.queries, query_set.qrels, max_queries)
    encoder = Encoder(str(model_folder), settings=ModelSettings(device=device))
    passages = _passages(source)
    ids = list(passages)
    docs = np.asarray(encoder.encode_documents(list(passages.values())).vectors, dtype=np.float32)
    qvec = np.asarray(encoder.encode_queries([t for _, t in queries]), dtype=np.float32)
    run: dict[str, list[tuple[str, float]]] = {}
    for start in range(0, len(queries), 256):
        sims = qvec[start : start + 256] @ docs.T
        top = np.argsort(-sims, axis=1)[:, :depth]
        for (qid, _), row, srow in zip(queries[start : start + 256], top, sims, strict=True):
            run[qid] = [(ids[i], float(srow[i])) for i in row]
    return query_set, queries, run, passages


def _metrics(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Sequence[str]]) -> dict[str, float]:
    from hybrid_search.app.evaluate import score_run

    scores = score_run(qrels, run, ignore_identical_ids=True)
    return {k: round(float(v), 4) for k, v in scores.items() if k in ("ndcg@10", "recall@100", "mrr@10")}


def knn_quality(
    model_folder: str | Path, source: str | Path, *, max_queries: int | None = None, device: str = "auto"
) -> dict[str, float]:
    """Exact kNN nDCG@10, Recall@100 and MRR@10 of a bi-encoder on a BEIR folder (query ids equal to a
    document id are ignored, as BEIR-Quora needs)."""
    query_set, _, run, _ = _exact_knn(model_folder, source, depth=101, max_queries=max_queries, device=device)
    return _metrics(query_set.qrels, {q: [d for d, _ in hits] for q, hits in run.items()})


def rerank_quality(
    cross_encoder: str | Path,
    source: str | Path,
    *,
    bi_encoder: str,
    depth: int = 20,
    max_queries: int | None = None,
    device: str = "auto",
) -> dict[str, float]:
    """nDCG@10 of exact kNN with ``bi_encoder``, and of its top ``depth`` reranked by ``cross_encoder``
    alone (a = 1) and interpolated with the kNN score (a = 0.5), on a BEIR folder."""
    from hybrid_search.config.settings import ModelSettings
    from hybrid_search.rerank.cross_encoder import CrossEncoderReranker
    from hybrid_search.search.searcher import blend_rerank_scores

    query_set, queries, run, passages = _exact_knn(
        _base_folder(bi_encoder), source, depth=101, max_queries=max_queries, device=device
    )
    reranker = CrossEncoderReranker(str(cross_encoder), settings=ModelSettings(device=device))
    out = {"knn_ndcg@10": _metrics(query_set.qrels, {q: [d for d, _ in h] for q, h in run.items()})["ndcg@10"]}
    reranked: dict[float, dict[str, list[str]]] = {1.0: {}, 0.5: {}}
    for qid, text in queries:
        head, tail = run[qid][:depth], run[qid][depth:]
        ce = reranker.score(text, [passages[d] for d, _ in head])
        for a in reranked:
            final = blend_rerank_scores([s for _, s in head], ce, a)
            order = sorted(range(len(head)), key=lambda i: (-final[i], i))
            reranked[a][qid] = [head[i][0] for i in order] + [d for d, _ in tail]
    out[f"rerank@{depth}_ndcg@10"] = _metrics(query_set.qrels, reranked[1.0])["ndcg@10"]
    out[f"rerank@{depth}_a0.5_ndcg@10"] = _metrics(query_set.qrels, reranked[0.5])["ndcg@10"]
    return out
