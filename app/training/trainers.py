"""The training runs: sentence-transformers' own trainers (``SentenceTransformerTrainer``,
``CrossEncoderTrainer``, in the ``train`` extra) for the bi-encoder and a cross-encoder, and unsupervised
adaptation (SimCSE, TSDAE). The output folder is staged so an interrupted run leaves the previous model
untouched; output folders are ordinary sentence-transformers folders."""

from __future__ import annotations

import contextlib
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

from hybrid_search.app.training.pairs import PairSet, cell_text
from hybrid_search.config.errors import ConfigError
from hybrid_search.config.extras import require

__all__ = [
    "LOSSES",
    "ADAPT_METHODS",
    "TrainOptions",
    "staged_output",
    "TrainSummary",
    "train_bi_encoder",
    "train_cross_encoder",
    "train_sparse_encoder",
    "adapt",
]

log = logging.getLogger(__name__)


LOSSES = ("mnrl", "online-contrastive", "multi-task")


ADAPT_METHODS = ("simcse", "tsdae")


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
    """Train; return the wall time. The trainer's raw per-step log dicts are never printed: with progress,
    the bar shows the latest loss instead."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    if options.progress:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(_loss_bar())
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def _loss_bar() -> Any:
    """A progress callback made on first use (transformers is imported lazily)."""
    from transformers.trainer_callback import ProgressCallback

    class LossOnTheBar(ProgressCallback):
        """The trainer's progress bar, with the latest loss as its postfix instead of a printed dict per log."""

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            bar = getattr(self, "training_bar", None)
            if state.is_world_process_zero and bar is not None and logs and "loss" in logs:
                bar.set_postfix(loss=f"{float(logs['loss']):.4f}")

    return LossOnTheBar()


def _loss_curve(history: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    return [{"step": int(h["step"]), "loss": float(h["loss"])} for h in history if "loss" in h and "step" in h]


def base_folder(base: str) -> Path:
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
    epochs: float = 0.0  # passes over the examples actually run (--max-steps decides it when given)
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
            f"trained {self.kind} ({self.loss}) from {self.base} on {self.pairs} examples: {self.steps} steps "
            f"({self.epochs:g} epochs) in {self.seconds:.1f} s on {self.device}; loss {first:.4f} -> {last:.4f}",
            f"saved to {self.out} (loads in sentence-transformers and as --model / --cross-encoder)",
        ]
        if self.options.get("max_steps"):
            lines.insert(
                1,
                f"--max-steps {self.options['max_steps']} set the length: {self.epochs:g} passes over the "
                f"{self.pairs} examples (--epochs {self.options.get('epochs')} was not used)",
            )
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
    folder = base_folder(base)
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
        finished = _finish(model, trainer, work, options)
        _write_card(work, kind="bi-encoder", base=base, loss=loss, pairs=rows)
    # the examples the loss saw (mnrl keeps the positive pairs only), not the rows read
    return _Run("bi-encoder", base, rows, loss, device, before, (*_RECORDED, "margin")).summary(
        out, finished, evaluate, options
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
    folder = base_folder(base)
    # before: the base when it is a cross-encoder already, else the reference one (the configured reranker)
    start_from = folder if _is_cross_encoder(folder) else (base_folder(reference) if reference else None)
    before = evaluate(start_from) if evaluate is not None and start_from is not None else None
    device, _ = _device(options.device)
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    with staged_output(out, overwrite=overwrite) as work:
        model = st.CrossEncoder(str(folder), num_labels=1, device=device)
        args = _args(CrossEncoderTrainingArguments, options, work, _steps_hint(len(data), options))
        trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=data, loss=BinaryCrossEntropyLoss(model))
        finished = _finish(model, trainer, work, options)
        _write_card(work, kind="cross-encoder", base=base, loss="binary-cross-entropy", pairs=len(pairs))
    return _Run("cross-encoder", base, len(pairs), "binary-cross-entropy", device, before, _RECORDED).summary(
        out, finished, evaluate, options
    )


def train_sparse_encoder(
    pairs: PairSet,
    out: str | Path,
    *,
    base: str,
    options: TrainOptions = TrainOptions(),
    overwrite: bool = False,
    evaluate: Any = None,
    query_regularizer: float = 5e-5,
    document_regularizer: float = 3e-5,
) -> TrainSummary:
    """Fine-tune a SPLADE sparse encoder on positives (a given negative joins each batch) with
    sentence-transformers' own ``SparseEncoderTrainer``: ``SpladeLoss`` around
    ``SparseMultipleNegativesRankingLoss`` (in-batch negatives), with FLOPS regularisation of query and
    document vectors (``query_regularizer`` / ``document_regularizer``: higher keeps vectors sparser, hence
    faster to search). ``base`` is a SPLADE model (hub id, folder, or splade-tiny offline)."""
    _st()  # the train extra, or a clear error naming it
    from datasets import Dataset
    from sentence_transformers.sparse_encoder import (
        SparseEncoder,
        SparseEncoderTrainer,
        SparseEncoderTrainingArguments,
    )
    from sentence_transformers.sparse_encoder.losses import SparseMultipleNegativesRankingLoss, SpladeLoss

    a, p, neg = pairs.positives()
    data = Dataset.from_dict({"anchor": a, "positive": p, **({"negative": neg} if neg is not None else {})})
    folder = base_folder(base)
    before = evaluate(folder) if evaluate is not None else None
    device, _ = _device(options.device)
    loss_name = "splade(sparse-mnrl)"
    with staged_output(out, overwrite=overwrite) as work:
        model = SparseEncoder(str(folder), device=device)
        loss = SpladeLoss(
            model,
            loss=SparseMultipleNegativesRankingLoss(model),
            query_regularizer_weight=query_regularizer,
            document_regularizer_weight=document_regularizer,
        )
        args = _args(SparseEncoderTrainingArguments, options, work, _steps_hint(len(data), options))
        trainer = SparseEncoderTrainer(model=model, args=args, train_dataset=data, loss=loss)
        finished = _finish(model, trainer, work, options)
        _write_card(work, kind="sparse-encoder", base=base, loss=loss_name, pairs=len(data))
    return _Run("sparse-encoder", base, len(data), loss_name, device, before, _RECORDED).summary(
        out, finished, evaluate, options
    )


_RECORDED = ("epochs", "batch_size", "lr", "max_steps", "seed")  # the options a summary records


@dataclass(frozen=True, slots=True)
class _Run:
    """What one training run was: its kind, base model, examples, loss, device, the quality before, and the
    options worth recording."""

    kind: str
    base: str
    examples: int
    loss: str
    device: str
    before: dict[str, float] | None
    keys: tuple[str, ...]

    def summary(
        self, out: str | Path, finished: tuple[Any, float], evaluate: Any, options: TrainOptions
    ) -> TrainSummary:
        """The run's summary; ``evaluate`` (if any) measures the folder now in place at ``out``."""
        trainer, seconds = finished
        target = Path(out).resolve()
        return TrainSummary(
            kind=self.kind,
            out=str(target),
            base=self.base,
            pairs=self.examples,
            loss=self.loss,
            steps=int(trainer.state.global_step),
            epochs=round(float(trainer.state.epoch or 0.0), 2),
            seconds=round(seconds, 1),
            device=self.device,
            loss_curve=_loss_curve(trainer.state.log_history),
            before=self.before,
            after=evaluate(target) if evaluate is not None else None,
            options={k: getattr(options, k) for k in self.keys},
        )


def _finish(model: Any, trainer: Any, work: Path, options: TrainOptions) -> tuple[Any, float]:
    """Train, then save the model into the staged folder: ``(trainer, seconds)``."""
    seconds = _run(trainer, options)
    model.save(str(work))
    return trainer, seconds


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
    kept = [t for t in (cell_text(t) for t in texts) if len(t.split()) >= 3]
    if len(kept) < 2:
        raise ConfigError("adaptation needs at least two documents of three words or more in the index")
    st, losses = _st(), _losses()
    from datasets import Dataset

    folder = base_folder(base)
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
        finished = _finish(model, trainer, work, options)
        _write_card(work, kind="bi-encoder", base=base, loss=method, pairs=len(kept))
    return _Run("adapted bi-encoder", base, len(kept), method, device, before, _RECORDED).summary(
        out, finished, evaluate, options
    )


def _delete_words(text: str, rng: random.Random, ratio: float = 0.6) -> str:
    """TSDAE's noise: delete each word with probability ``ratio``, keeping at least one."""
    words = text.split()
    kept = [w for w in words if rng.random() >= ratio]
    return " ".join(kept or [rng.choice(words)])


def _write_card(folder: Path, **facts: Any) -> None:
    """What made this model, beside its weights (``hybrid-search-train.json``)."""
    (folder / "hybrid-search-train.json").write_text(json.dumps(facts, indent=2), encoding="utf-8")
