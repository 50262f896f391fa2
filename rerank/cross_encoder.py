"""Cross-encoder reranking of the top hits.

Two runtimes score (query, passage) pairs with the same batching (length-sorted, padded per batch):
transformers on CUDA (fp16/bf16) or CPU, and onnxruntime for ONNX exports such as the int8 model the
``offline`` extra ships. ``auto`` picks ONNX on CPU when the model folder has ``model.onnx``, transformers
otherwise; ``onnx`` for a model with transformers weights only exports it once on the CPU (int8 where the CPU
has int8 dot products, as the bi-encoder's export; cached the same way). Scores are the model's raw logits
(a monotone stand-in for its sigmoid). The model loads on first use; nothing here touches a backend.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_search.config.errors import ConfigError
from hybrid_search.config.settings import ModelSettings
from hybrid_search.encoding.encoder import ModelOnDevice, load_weights, pad_encodings, plan_batches, quiet_loading

__all__ = ["CrossEncoderReranker"]

log = logging.getLogger(__name__)


class CrossEncoderReranker(ModelOnDevice):
    """A cross-encoder such as ``cross-encoder/ms-marco-MiniLM-L-12-v2`` on transformers or onnxruntime."""

    def __init__(self, model: str | None = None, *, settings: ModelSettings | None = None) -> None:
        self.settings = settings or ModelSettings()
        self.model_name = model or self.settings.cross_encoder
        if self.settings.rerank_batch_size < 1:
            raise ConfigError("rerank batch size must be at least 1")

    @cached_property
    def runtime(self) -> str:
        """``onnx`` or ``torch``, decided from the settings, the device and the files present."""
        choice = self.settings.rerank_runtime
        has_onnx = (self.folder / "model.onnx").exists()
        has_torch = any((self.folder / f).exists() for f in ("model.safetensors", "pytorch_model.bin"))
        if choice == "auto":
            choice = "onnx" if has_onnx and (self.device == "cpu" or not has_torch) else "torch"
        if choice == "onnx" and not has_onnx and not has_torch:
            raise ConfigError(f"{self.folder} has neither model.onnx nor transformers weights to export")
        if choice == "onnx" and not has_onnx and self.device != "cpu":
            raise ConfigError(f"{self.folder} has no model.onnx, and an export runs on the CPU: use --device cpu")
        if choice == "torch" and not has_torch:
            raise ConfigError(f"{self.folder} has no transformers weights: use --rerank-runtime onnx")
        return choice

    @cached_property
    def _tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(max_length=self.settings.rerank_max_length, strategy="longest_first")
        return tok

    @cached_property
    def _pad_id(self) -> int:
        padding = self._tokenizer.padding  # None after no_padding(); fall back to the [PAD] token
        return int(self._tokenizer.token_to_id("[PAD]") or 0) if padding is None else int(padding["pad_id"])

    @cached_property
    def _session(self) -> Any:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if self.device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        return ort.InferenceSession(str(self.onnx_path), providers=providers)

    @cached_property
    def onnx_path(self) -> Path:
        """The model's own ``model.onnx``, else its export (made once: int8 where the CPU has int8 dot products)."""
        from hybrid_search.encoding.onnx_export import has_int8_dot, onnx_file

        own = self.folder / "model.onnx"
        return own if own.exists() else onnx_file(self.folder, "cross-encoder", has_int8_dot(), self._scoring_module)

    def _scoring_module(self) -> tuple[Any, list[str]]:
        """The fp32 classifier as one torch module (logits out) and its input names, for the ONNX export."""
        import inspect

        import torch
        import transformers

        from hybrid_search.encoding.onnx_export import positional_module

        with quiet_loading():
            model = transformers.AutoModelForSequenceClassification.from_pretrained(
                self.folder, dtype=torch.float32, attn_implementation="eager"
            )
        takes = inspect.signature(model.forward).parameters
        names = ["input_ids", "attention_mask"] + (["token_type_ids"] if "token_type_ids" in takes else [])
        return positional_module(model, names, lambda out, _inputs: out.logits), names

    @cached_property
    def _torch_model(self) -> Any:
        return load_weights("AutoModelForSequenceClassification", self.folder, self.settings, self.device)

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """One relevance score a passage, in input order."""
        return self.score_pairs([(query, p) for p in passages])

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """One score per (first, second) text pair, in input order."""
        out = np.zeros(len(pairs), dtype=np.float32)
        if not pairs:
            return out
        encodings = self._tokenizer.encode_batch(list(pairs))
        lengths = [len(e.ids) for e in encodings]
        batch_tokens = self.settings.rerank_batch_size * max(lengths)
        run = self._run_onnx if self.runtime == "onnx" else self._run_torch
        for batch in plan_batches(lengths, batch_tokens, self.settings.rerank_batch_size):
            out[batch] = run(pad_encodings([encodings[i] for i in batch], self._pad_id, with_types=True))
        return out

    def _run_onnx(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        wanted = {i.name for i in self._session.get_inputs()}
        logits = self._session.run(None, {k: v for k, v in inputs.items() if k in wanted})[0]
        return np.asarray(logits, dtype=np.float32).reshape(len(inputs["input_ids"]), -1)[:, 0]

    def _run_torch(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tensors = {k: torch.from_numpy(v).to(self.device) for k, v in inputs.items()}
            logits = self._torch_model(**tensors).logits
            return logits[:, 0].float().cpu().numpy()

    def close(self) -> None:
        for name in ("_session", "_torch_model", "onnx_path"):
            self.__dict__.pop(name, None)

    def __enter__(self) -> CrossEncoderReranker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
