"""The bi-encoder on ONNX Runtime: exported from the model's transformers weights at first use, cached.

The export is the whole sentence encoder (transformer, the model's pooling and, when it declares one, L2
normalisation), so a batch comes back as finished vectors and a process holding a cached export never imports
torch to encode. ``onnx`` quantizes the weights to int8 (dynamic, per channel) where the CPU has int8
dot-product instructions (VNNI on x86, the dot-product extension on arm64), and keeps fp32 elsewhere;
``onnx-fp32`` always keeps fp32.

The cache lives beside the model (a ``.hybrid_search_onnx`` folder in it) when that folder is writable, and
otherwise under the user's cache folder (``$HYBRID_SEARCH_CACHE`` or ``~/.cache/hybrid-search``), keyed by a
fingerprint of the model's files, pooling and the export's format: new weights in the same folder export anew.
Files are written under a temporary name and renamed into place, so concurrent processes never read half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import tempfile
import warnings
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_search.config.errors import ConfigError

# builds the module to export: (fp32 torch module taking int64 inputs and answering vectors, its input names)
SentenceModule = Callable[[], tuple[Any, list[str]]]

__all__ = ["OnnxSentenceEncoder", "cpu_flags", "has_int8_dot", "onnx_file", "positional_module"]

log = logging.getLogger(__name__)

_FORMAT = 1  # bumped when what is exported changes, so older cached exports are not read
_CACHE_SUB = ".hybrid_search_onnx"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty where ``/proc/cpuinfo`` is not there)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / arm64
            return frozenset(value.split())
    return frozenset()


def has_int8_dot() -> bool:
    """Whether int8 matrix products run on dot-product instructions (where dynamic int8 pays off)."""
    flags = cpu_flags()
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "asimddp" in flags or platform.system() == "Darwin"  # every Apple Silicon core has it
    return bool({"avx512_vnni", "avx_vnni"} & flags)


def positional_module(model: Any, names: list[str], head: Callable[[Any, tuple[Any, ...]], Any]) -> Any:
    """``model`` as an eval-mode torch module of positional int64 inputs named ``names`` in order (what the
    exporter traces), answering ``head(model outputs, inputs)``."""
    import torch

    class Positional(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return head(self.model(**dict(zip(names, inputs, strict=True))), inputs)

    return Positional().eval()


def _fingerprint(folder: Path, variant: str, quantized: bool) -> str:
    h = hashlib.sha256(f"{_FORMAT}|{variant}|{quantized}".encode())
    h.update((folder / "config.json").read_bytes())
    for name in _WEIGHT_FILES:
        path = folder / name
        if path.exists():
            stat = path.stat()
            h.update(f"{name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _cache_folders(folder: Path, key: str) -> list[Path]:
    root = Path(os.environ.get("HYBRID_SEARCH_CACHE") or Path.home() / ".cache" / "hybrid-search")
    return [folder / _CACHE_SUB, root / "onnx" / key]


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK)


def onnx_file(folder: Path, variant: str, quantize: bool, build: SentenceModule) -> Path:
    """The cached export of the model in ``folder`` (int8 when ``quantize``), exported now when missing from
    what ``build`` returns: the fp32 torch module (vectors out) and its input names. ``variant`` names what
    else decides the export (the pooling), so it is part of the cache key."""
    key = _fingerprint(folder, variant, quantize)
    name = f"encoder-{'int8' if quantize else 'fp32'}-{key}.onnx"
    places = _cache_folders(folder, key)
    for place in places:
        if (place / name).exists():
            return place / name
    writable = next((p for p in places if _writable(p)), None)
    if writable is None:
        raise ConfigError(
            f"no writable folder for the ONNX export of {folder} (tried {', '.join(map(str, places))}): "
            "set HYBRID_SEARCH_CACHE to a writable folder, or use --encode-runtime torch"
        )
    place = writable
    log.info("exporting %s to ONNX%s in %s (once)", folder, " (int8)" if quantize else "", place)
    fp32 = place / f"encoder-fp32-{_fingerprint(folder, variant, False)}.onnx"
    if not fp32.exists():
        _atomic(fp32, lambda tmp: _export(folder, build, tmp))
    if quantize:
        _atomic(place / name, lambda tmp: _quantize(fp32, tmp))
    return place / name


def _atomic(target: Path, write: Any) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # as a saved model is (mkstemp made it 0600): other users of a shared model read it
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _export(folder: Path, build: SentenceModule, target: Path) -> None:
    import torch

    module, names = build()
    sample = tuple(torch.ones((2, 8), dtype=torch.int64) for _ in names)
    axes = {n: {0: "batch", 1: "tokens"} for n in names} | {"vectors": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on constant shapes: the axes above stay dynamic
        try:
            torch.onnx.export(
                module,
                sample,
                str(target),
                input_names=names,
                output_names=["vectors"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
        except Exception as exc:
            raise ConfigError(
                f"{folder}: the model could not be exported to ONNX ({type(exc).__name__}: {exc}); "
                "use --encode-runtime torch"
            ) from exc


def _quantize(fp32: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings.catch_warnings(), _quiet_root():
        warnings.simplefilter("ignore")
        quantize_dynamic(
            fp32,
            target,
            weight_type=QuantType.QInt8,
            per_channel=True,  # per-row scales: cosine to fp32 0.994 on NQ passages, 0.954 per tensor (measured)
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


@contextlib.contextmanager
def _quiet_root() -> Any:
    """onnxruntime's quantizer advises pre-processing on the root logger at WARNING: not for our users."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class OnnxSentenceEncoder:
    """An ONNX Runtime session over an exported sentence encoder: padded int64 arrays in (those the export
    reads: token type ids only where the model has them), vectors out."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: onnxruntime's own choice (the physical cores)
        self.path = path
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]

    def __call__(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        out = self._session.run(None, {name: arrays[name] for name in self._inputs})[0]
        return np.asarray(out, dtype=np.float32)
