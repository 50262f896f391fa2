"""The bi-encoder: transformers ``AutoModel`` + the pooling the model declares + L2 normalisation.

Embeddings match sentence-transformers' for the same model (the tests check it), but batching is planned by
a token budget over length-sorted texts, so short and long documents both run at full width. CUDA is used
when present, with fp16 or bf16; CPU otherwise. The model loads on first use, never in the constructor.
This module must never talk to a search backend.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from hybrid_search.config.errors import ConfigError
from hybrid_search.config.settings import ModelSettings
from hybrid_search.encoding.models import resolve_model

if TYPE_CHECKING:
    import torch

    from hybrid_search.encoding.onnx_export import OnnxSentenceEncoder

__all__ = [
    "EncodeResult",
    "Encoder",
    "ModelOnDevice",
    "TransformerParts",
    "load_weights",
    "PoolingConfig",
    "pad_encodings",
    "plan_batches",
    "pool",
    "select_device",
    "torch_dtype",
]

log = logging.getLogger(__name__)

POOLING_MODES = ("mean", "cls", "max", "lasttoken")
_BGE_QUERY = "Represent this sentence for searching relevant passages: "


@dataclass(frozen=True, slots=True)
class PoolingConfig:
    """How token states become one vector, as the model's sentence-transformers config declares it."""

    mode: str = "mean"
    normalize: bool = False  # L2-normalise the pooled vector: only when the model has a Normalize module

    @staticmethod
    def from_model_dir(folder: Path) -> PoolingConfig:
        """Read ``modules.json`` / the Pooling module's config, as sentence-transformers does: mean pooling
        and no normalisation when the model declares none."""
        modules_path = folder / "modules.json"
        if not modules_path.exists():
            return PoolingConfig()
        modules = json.loads(modules_path.read_text(encoding="utf-8"))
        normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
        pooling = next((m for m in modules if m.get("type", "").endswith("Pooling")), None)
        if pooling is None:
            return PoolingConfig(normalize=normalize)
        cfg = json.loads((folder / pooling.get("path", "") / "config.json").read_text(encoding="utf-8"))
        flags = {
            "cls": cfg.get("pooling_mode_cls_token"),
            "mean": cfg.get("pooling_mode_mean_tokens"),
            "max": cfg.get("pooling_mode_max_tokens"),
            "lasttoken": cfg.get("pooling_mode_lasttoken"),
        }
        # sentence-transformers 6 writes one key, "pooling_mode": a name or a list of names
        declared = cfg.get("pooling_mode")
        for mode in [declared] if isinstance(declared, str) else declared or []:
            if mode in ("mean_sqrt_len_tokens", "weightedmean"):
                cfg[f"pooling_mode_{mode}" + ("_tokens" if mode == "weightedmean" else "")] = True
            else:
                flags[mode] = True
        if cfg.get("pooling_mode_mean_sqrt_len_tokens") or cfg.get("pooling_mode_weightedmean_tokens"):
            raise ConfigError(f"{folder}: only mean, cls, max or last-token pooling is supported")
        chosen = [mode for mode, on in flags.items() if on]
        if len(chosen) != 1:
            raise ConfigError(f"{folder}: exactly one pooling mode must be set, found {chosen or 'none'}")
        return PoolingConfig(mode=chosen[0], normalize=normalize)


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool token states ``[batch, seq, dim]`` under ``mask`` ``[batch, seq]`` (right-padded)."""
    if mode == "cls":
        return hidden[:, 0]
    if mode == "lasttoken":
        import torch

        last = mask.sum(dim=1).long() - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "mean":
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    if mode == "max":
        return hidden.masked_fill(m == 0, float("-inf")).max(dim=1).values
    raise ConfigError(f"unknown pooling mode {mode!r}: choose one of {POOLING_MODES}")


def plan_batches(lengths: Sequence[int], batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Group indices, longest first, so each padded batch holds at most ``batch_tokens`` tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i in order:
        w = max(width, lengths[i])
        if current and (w * (len(current) + 1) > batch_tokens or len(current) >= max_batch_size):
            batches.append(current)
            current, w = [], lengths[i]
        current.append(i)
        width = w
    if current:
        batches.append(current)
    return batches


def select_device(preference: str = "auto") -> str:
    """``auto`` picks CUDA when available; otherwise the preference as given."""
    import torch

    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {preference!r} asked for but CUDA is not available: use --device cpu")
    return preference


def gpu_possible() -> bool:
    """Whether torch may find a GPU here: answered without importing torch where Linux shows no GPU driver."""
    if sys.platform == "linux" and not (Path("/proc/driver/nvidia").exists() or Path("/dev/kfd").exists()):
        return False
    return select_device("auto") != "cpu"


def fast_cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX): bf16 then encodes ~3x faster than
    fp32 (measured on NQ passages); without AMX (AVX-512 BF16 alone) bf16 ran 0.75x fp32, so it is not used.
    ``ONEDNN_MAX_CPU_ISA`` set below AMX turns it off, as it turns off AMX in torch's kernels."""
    from hybrid_search.encoding.onnx_export import cpu_flags

    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    return "amx_bf16" in cpu_flags() and (not isa or isa in ("ALL", "DEFAULT") or "AMX" in isa)


def torch_dtype(name: str, device: str, *, cpu_bf16: bool = False) -> Any:
    """The torch dtype the ``dtype`` setting names; ``auto`` is fp16 on CUDA, and on a CPU bf16 where the
    model allows it (``cpu_bf16``: measured at equal retrieval quality) and the CPU has AMX, fp32 otherwise."""
    import torch

    if name == "auto":
        if device.startswith("cuda"):
            return torch.float16
        return torch.bfloat16 if cpu_bf16 and fast_cpu_bf16() else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """A library call prints nothing of its own: transformers' "Loading weights" bar is off while loading
    (and back as it was after), so a Python user's output holds only what they print."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def load_weights(auto_class: str, folder: Path, settings: ModelSettings, device: str, *, cpu_bf16: bool = False) -> Any:
    """A model's weights through the named transformers Auto class, in inference mode, on ``device``."""
    import torch
    import transformers

    dtype = torch_dtype(settings.dtype, device, cpu_bf16=cpu_bf16)
    with quiet_loading(), torch.inference_mode():
        model = getattr(transformers, auto_class).from_pretrained(
            folder, dtype=dtype, trust_remote_code=settings.trust_remote_code
        )
    return model.to(device).eval()


class ModelOnDevice:
    """A model's local folder and the device it runs on, each resolved on first use (every model here)."""

    model_name: str
    settings: ModelSettings

    @cached_property
    def folder(self) -> Path:
        return resolve_model(self.model_name)

    @cached_property
    def device(self) -> str:
        return select_device(self.settings.device)


class TransformerParts(ModelOnDevice):
    """What the bi-encoder and the sparse encoder load the same way, each on first use: a fast tokenizer
    truncating at ``max_length``, and the weights through ``auto_class``."""

    auto_class = "AutoModel"
    # dtype auto on a CPU with AMX: bf16 (the bi-encoder, measured at equal nDCG@10); the SPLADE encoder stays
    # fp32 there (its bf16 term weights are not measured)
    cpu_bf16 = False

    @cached_property
    def max_length(self) -> int:
        return self.settings.max_length or 512

    @cached_property
    def batch_tokens(self) -> int:
        """Padded tokens per batch: small batches stay in CPU caches, large ones fill a GPU (measured)."""
        if self.settings.batch_tokens:
            return self.settings.batch_tokens
        return 65_536 if self.device.startswith("cuda") else 4_096

    @cached_property
    def _hf_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(self.folder, trust_remote_code=self.settings.trust_remote_code)
        if not tok.is_fast:
            raise ConfigError(f"{self.model_name}: a fast (Rust) tokenizer is required")
        return tok

    @cached_property
    def _tokenizer_json(self) -> str:
        """The fast tokenizer as the ``tokenizers`` library serialises it, as transformers configures it."""
        return str(self._hf_tokenizer.backend_tokenizer.to_str())

    @cached_property
    def _tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(self._tokenizer_json)
        tok.no_padding()
        tok.enable_truncation(max_length=self.max_length)
        return tok

    @cached_property
    def _model(self) -> Any:
        return load_weights(self.auto_class, self.folder, self.settings, self.device, cpu_bf16=self.cpu_bf16)

    def load(self) -> None:
        """Load the tokenizer and weights now, so the first batch's timing is encoding alone."""
        self._tokenizer  # noqa: B018
        self._model  # noqa: B018

    def close(self) -> None:
        """Release the model (and GPU memory)."""
        if "_model" in self.__dict__:
            del self.__dict__["_model"]
            if self.device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class EncodeResult:
    """L2-normalised float32 vectors in input order, and how many inputs were cut at max length."""

    vectors: np.ndarray
    truncated: int


class Encoder(TransformerParts):
    """A transformer bi-encoder. ``encode_documents`` / ``encode_queries`` apply the model's prompts."""

    cpu_bf16 = True

    def __init__(self, model: str | None = None, *, settings: ModelSettings | None = None) -> None:
        self.settings = settings or ModelSettings()
        self.model_name = model or self.settings.bi_encoder

    @classmethod
    def from_settings(cls, settings: ModelSettings) -> Encoder:
        return cls(settings.bi_encoder, settings=settings)

    # --- lazy pieces ------------------------------------------------------------------------------
    @cached_property
    def pooling(self) -> PoolingConfig:
        return PoolingConfig.from_model_dir(self.folder)

    @cached_property
    def dims(self) -> int:
        """Output dimension, read from the model config (no weights loaded)."""
        cfg = json.loads((self.folder / "config.json").read_text(encoding="utf-8"))
        dims = cfg.get("hidden_size") or cfg.get("d_model") or cfg.get("dim")
        if not dims:
            raise ConfigError(f"{self.folder}/config.json gives no hidden size; is this a transformer encoder?")
        return int(dims)

    @cached_property
    def max_length(self) -> int:
        if self.settings.max_length:
            return self.settings.max_length
        st_cfg = self.folder / "sentence_bert_config.json"
        if st_cfg.exists():
            value = json.loads(st_cfg.read_text(encoding="utf-8")).get("max_seq_length")
            if value:
                return int(value)
        return int(min(self._hf_tokenizer.model_max_length or 512, 512))

    @cached_property
    def prompts(self) -> tuple[str, str]:
        """(query prompt, document prompt): settings, then the model's own, then known families'."""
        query, document = "", ""
        st_cfg = self.folder / "config_sentence_transformers.json"
        if st_cfg.exists():
            declared = json.loads(st_cfg.read_text(encoding="utf-8")).get("prompts") or {}
            query = declared.get("query", "")
            document = declared.get("document", declared.get("passage", declared.get("corpus", "")))
        elif "e5" in self.model_name.lower():
            query, document = "query: ", "passage: "
        elif "bge-" in self.model_name.lower() and "-en" in self.model_name.lower():
            query = _BGE_QUERY
        if self.settings.query_prompt is not None:
            query = self.settings.query_prompt
        if self.settings.document_prompt is not None:
            document = self.settings.document_prompt
        return query, document

    @cached_property
    def _counting_tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(self._tokenizer_json)
        tok.no_padding()
        tok.no_truncation()
        return tok

    def token_offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Each text's tokens as (start, end) character offsets: no special tokens, no truncation (what
        chunking counts with; the tokenizer alone loads, not the weights)."""
        found = self._counting_tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [[tuple(o) for o in e.offsets] for e in found]

    def passage_overhead(self, title: str) -> int:
        """Tokens a document passage spends before its text: special tokens, the document prompt, the title."""
        tok = self._counting_tokenizer
        head = self.prompts[1] + title
        return tok.num_special_tokens_to_add(False) + (
            len(tok.encode(head, add_special_tokens=False).ids) if head else 0
        )

    # --- encoding ---------------------------------------------------------------------------------
    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Query vectors, in fp32 whatever documents encode in (``query_precision``)."""
        prompt = self.prompts[0]
        return self.encode([prompt + q for q in queries], queries=True).vectors

    def encode_documents(self, passages: Sequence[str]) -> EncodeResult:
        prompt = self.prompts[1]
        return self.encode([prompt + p for p in passages] if prompt else list(passages))

    def encode(self, texts: Sequence[str], *, queries: bool = False) -> EncodeResult:
        """Encode ``texts`` as given (no prompt added), as documents (``precision``) or as ``queries``."""
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        if not texts:
            return EncodeResult(out, 0)
        encodings = self._tokenizer.encode_batch(list(texts))
        truncated = sum(1 for e in encodings if e.overflowing)
        lengths = [len(e.ids) for e in encodings]
        run, pad_id, with_types = self._runner(queries)
        for batch in plan_batches(lengths, self.batch_tokens, self.settings.max_batch_size):
            out[batch] = run(pad_encodings([encodings[i] for i in batch], pad_id, with_types))
        return EncodeResult(out, truncated)

    def _runner(self, queries: bool) -> tuple[Callable[[dict[str, np.ndarray]], np.ndarray], int, bool]:
        """What encodes a padded batch (documents or queries), the padding id and whether it reads token
        types. An ONNX export that fails where ``encode_runtime`` is auto falls back to torch, and says so."""
        if self.runtime != "torch":
            try:  # padding is masked out, so its id changes nothing; the session takes the inputs it reads
                return self._onnx_queries if queries else self._onnx, 0, True
            except ConfigError as exc:
                if self.settings.encode_runtime != "auto":
                    raise
                log.warning("%s; encoding in torch instead", exc)
                self.__dict__["runtime"] = "torch"
        model = self._query_model if queries else self._model
        return partial(self._run_torch, model), self._hf_tokenizer.pad_token_id or 0, self._with_types

    def _run_torch(self, model: Any, arrays: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            inputs = {k: torch.from_numpy(v).to(self.device, non_blocking=True) for k, v in arrays.items()}
            hidden = model(**inputs).last_hidden_state
            vectors = pool(hidden, inputs["attention_mask"], self.pooling.mode).float()
            if self.pooling.normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
            return vectors.cpu().numpy()  # one host transfer per batch

    # --- runtime ----------------------------------------------------------------------------------
    @cached_property
    def runtime(self) -> str:
        """``torch``, ``onnx`` (int8 where the CPU has int8 dot products, else fp32) or ``onnx-fp32``.
        ``auto`` is what measured fastest at equal nDCG@10 (README, speed): torch on a GPU (fp16), with a
        ``dtype`` set, and on a CPU with AMX (bf16); ONNX int8 on a CPU with int8 dot products and no AMX
        (2.2x torch fp32 on AVX-512 VNNI); torch fp32 elsewhere."""
        from hybrid_search.encoding.onnx_export import has_int8_dot

        if self.settings.encode_runtime != "auto":
            return self.settings.encode_runtime
        if self.settings.dtype != "auto" or fast_cpu_bf16() or not has_int8_dot():
            return "torch"
        device = self.settings.device  # a GPU asked for by name is torch's, whether or not it is there
        return "onnx" if device == "cpu" or (device == "auto" and not gpu_possible()) else "torch"

    @cached_property
    def device(self) -> str:
        """ONNX Runtime encodes on the CPU (so a process encoding there never imports torch); torch where the
        ``device`` setting says."""
        if self.runtime == "torch":
            return select_device(self.settings.device)
        if self.settings.device not in ("auto", "cpu"):
            raise ConfigError(
                f"--encode-runtime {self.runtime} runs on the CPU only (device {self.settings.device}): use "
                "--device cpu, or --encode-runtime torch on a GPU"
            )
        return "cpu"

    @property
    def precision(self) -> str:
        """What the vectors are computed in: ``float32``, ``float16``, ``bfloat16`` or (ONNX) ``int8``."""
        if self.runtime == "torch":
            return str(torch_dtype(self.settings.dtype, self.device, cpu_bf16=self.cpu_bf16)).removeprefix("torch.")
        from hybrid_search.encoding.onnx_export import has_int8_dot

        return "int8" if self.runtime == "onnx" and has_int8_dot() else "float32"

    @property
    def query_precision(self) -> str:
        """What query vectors are computed in: fp32 where ``dtype`` is auto (or ``--encode-runtime onnx``).
        A reduced precision rounds a text differently beside other texts of another length (int8 scales
        activations per batch), so a query would get other hits alone (a search) than among others (eval,
        tune); queries are few and latency-bound: fp32 cost ~0.3 ms over bf16 and ~1.5 ms over ONNX int8 a
        query where measured (README, speed)."""
        return self.precision if self.runtime == "torch" and self.settings.dtype != "auto" else "float32"

    @cached_property
    def _query_model(self) -> Any:
        if self.query_precision == self.precision:
            return self._model
        exact = self.settings.model_copy(update={"dtype": "float32"})
        return load_weights(self.auto_class, self.folder, exact, self.device)

    @cached_property
    def _tokenizer_json(self) -> str:
        """ONNX Runtime reads the model's ``tokenizer.json`` itself (transformers' tokenizer classes import
        torch, which a process encoding on ONNX never needs); torch through transformers' loader."""
        saved = self.folder / "tokenizer.json"
        if self.runtime != "torch" and saved.exists():
            return saved.read_text(encoding="utf-8")
        return super()._tokenizer_json

    @cached_property
    def _with_types(self) -> bool:
        return "token_type_ids" in self._hf_tokenizer.model_input_names

    @cached_property
    def _onnx(self) -> OnnxSentenceEncoder:
        return self._onnx_session(quantize=self.precision == "int8")

    @cached_property
    def _onnx_queries(self) -> OnnxSentenceEncoder:
        """The fp32 export for queries (an int8 export is quantized from it, so it is on disk already)."""
        return self._onnx if self.precision == "float32" else self._onnx_session(quantize=False)

    def _onnx_session(self, *, quantize: bool) -> OnnxSentenceEncoder:
        from hybrid_search.encoding.onnx_export import OnnxSentenceEncoder, onnx_file

        variant = f"{self.pooling.mode}|{self.pooling.normalize}"
        return OnnxSentenceEncoder(onnx_file(self.folder, variant, quantize, self._sentence_module))

    def _sentence_module(self) -> tuple[Any, list[str]]:
        """The model, its pooling and normalisation as one fp32 torch module, and its input names: what the
        ONNX export traces (eager attention: one graph for every batch shape)."""
        import torch
        import transformers

        with quiet_loading():
            model = transformers.AutoModel.from_pretrained(
                self.folder,
                dtype=torch.float32,
                attn_implementation="eager",
                trust_remote_code=self.settings.trust_remote_code,
            )
        from hybrid_search.encoding.onnx_export import positional_module

        names = ["input_ids", "attention_mask"] + (["token_type_ids"] if self._with_types else [])
        mode, normalize = self.pooling.mode, self.pooling.normalize

        def vectors(out: Any, inputs: tuple[Any, ...]) -> Any:
            pooled = pool(out.last_hidden_state, inputs[1], mode)
            return torch.nn.functional.normalize(pooled, p=2, dim=1) if normalize else pooled

        return positional_module(model, names, vectors), names

    def load(self) -> None:
        """Load the tokenizer and the chosen runtime's model now (exporting it to ONNX once when asked)."""
        self._tokenizer  # noqa: B018
        self._runner(queries=False)

    def close(self) -> None:
        for name in ("_onnx", "_onnx_queries", "_query_model"):
            self.__dict__.pop(name, None)
        super().close()


def pad_encodings(encodings: Sequence[Any], pad_id: int, with_types: bool) -> dict[str, np.ndarray]:
    """Right-pad a batch of ``tokenizers`` encodings into int64 arrays."""
    width = max(len(e.ids) for e in encodings)
    ids = np.full((len(encodings), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    types = np.zeros((len(encodings), width), dtype=np.int64)
    for row, enc in enumerate(encodings):
        n = len(enc.ids)
        ids[row, :n] = enc.ids
        mask[row, :n] = 1
        types[row, :n] = enc.type_ids
    batch = {"input_ids": ids, "attention_mask": mask}
    if with_types:
        batch["token_type_ids"] = types
    return batch


def set_cpu_threads(threads: int) -> int:
    """Set the intra-op threads of torch and faiss (0: every core); return the count torch had before (0
    when torch is not imported yet: a job that never encodes, such as storing given vectors, never imports it,
    and a later import starts at torch's own default)."""
    n = threads or os.cpu_count() or 1
    previous = 0
    if "torch" in sys.modules:  # imported, or being imported by another thread: the import waits for it
        import torch

        previous = torch.get_num_threads()
        if n != previous:
            torch.set_num_threads(n)
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:  # pragma: no cover - faiss is a base dependency
        pass
    return previous
