"""The bi-encoder: pooling, batching, prompts, and equality with sentence-transformers on the real model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hybrid_search.config.errors import ConfigError
from hybrid_search.config.settings import ModelSettings
from hybrid_search.encoding.encoder import Encoder, PoolingConfig, plan_batches, pool
from hybrid_search.encoding.models import OFFLINE_MODELS, resolve_model

TEXTS = [
    "How do I learn Python quickly?",
    "What is the best way to learn python fast",
    "Berlin is the capital and largest city of Germany by both area and population.",
    "a",
    "word " * 400,  # longer than the model's 256 tokens: truncated
    "Ünïcödé and emoji 🚀 survive tokenisation",
]


def test_embeddings_match_sentence_transformers(encoder):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(encoder.folder), device="cpu")
    expected = reference.encode(TEXTS, batch_size=4, normalize_embeddings=True)
    got = Encoder(settings=ModelSettings(device="cpu", dtype="float32")).encode_documents(TEXTS)
    assert got.vectors.dtype == np.float32 and got.vectors.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(got.vectors, expected, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(got.vectors, axis=1), 1.0, atol=1e-5)
    assert got.truncated == 1


def test_order_is_kept_whatever_the_batching(encoder):
    # fp32 on both sides: bf16 (the default on a CPU with AMX) rounds differently at other batch widths
    small = Encoder(settings=ModelSettings(device="cpu", dtype="float32", batch_tokens=64, max_batch_size=2))
    whole = Encoder(settings=ModelSettings(device="cpu", dtype="float32"))
    np.testing.assert_allclose(small.encode(TEXTS).vectors, whole.encode(TEXTS).vectors, atol=2e-5)
    assert encoder.encode([]).vectors.shape == (0, 384)


def test_similar_questions_are_nearer(encoder):
    v = encoder.encode_queries(TEXTS[:3])
    assert v[0] @ v[1] > 0.8 > v[0] @ v[2]


def test_plan_batches_respects_the_token_budget():
    lengths = [5, 50, 7, 300, 12, 12, 90]
    batches = plan_batches(lengths, batch_tokens=120, max_batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 120
    assert batches[0] == [3]  # longest first, alone since it exceeds the budget


def test_pool_modes_by_hand():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 3.0]]
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 2.0]]
    assert pool(hidden, mask, "max").tolist() == [[3.0, 4.0]]
    assert pool(hidden, mask, "lasttoken").tolist() == [[3.0, 4.0]]
    with pytest.raises(ConfigError):
        pool(hidden, mask, "median")


def test_pooling_config_is_read_from_the_model(tmp_path, encoder):
    assert PoolingConfig.from_model_dir(encoder.folder) == PoolingConfig("mean", True)
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(
        json.dumps([{"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])
    )
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert PoolingConfig.from_model_dir(tmp_path).mode == "cls"
    assert PoolingConfig.from_model_dir(tmp_path / "1_Pooling").mode == "mean"  # no modules.json
    # sentence-transformers 6 writes one "pooling_mode" key (what `train` saves)
    for declared, mode in (("cls", "cls"), (["max"], "max"), ("lasttoken", "lasttoken")):
        (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": declared}))
        assert PoolingConfig.from_model_dir(tmp_path).mode == mode
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "weightedmean"}))
    with pytest.raises(ConfigError, match="only mean, cls, max or last-token"):
        PoolingConfig.from_model_dir(tmp_path)


def test_prompts_for_families_and_overrides(encoder):
    assert encoder.prompts == ("", "")
    e5 = Encoder("intfloat/e5-small-v2")
    e5.__dict__["folder"] = encoder.folder.parent / "nowhere"  # no declared prompts there
    assert e5.prompts == ("query: ", "passage: ")
    bge = Encoder("BAAI/bge-small-en-v1.5")
    bge.__dict__["folder"] = encoder.folder.parent / "nowhere"
    assert bge.prompts[0].startswith("Represent this sentence") and bge.prompts[1] == ""
    custom = Encoder(settings=ModelSettings(query_prompt="Q: ", document_prompt="D: "))
    assert custom.prompts == ("Q: ", "D: ")


def test_construction_loads_nothing_and_errors_say_what_to_do():
    enc = Encoder("no-such-org/no-such-model")
    assert "folder" not in enc.__dict__ and "_model" not in enc.__dict__
    with pytest.raises(ConfigError, match="pass a local model folder"):
        enc.dims


def test_offline_models_resolve_to_package_files():
    for name in OFFLINE_MODELS:
        folder = resolve_model(name)
        assert (folder / "tokenizer.json").exists()
    assert (resolve_model("sentence-transformers/all-MiniLM-L6-v2") / "model.safetensors").exists()
    assert (resolve_model("cross-encoder/ms-marco-MiniLM-L-12-v2") / "model.onnx").exists()


def test_normalisation_follows_the_models_modules(tmp_path, encoder):
    """A model without a Normalize module gives raw pooled vectors (as sentence-transformers does) and its
    index uses cosine similarity; the same weights with the module give unit vectors and dot product."""
    import shutil

    from sentence_transformers import SentenceTransformer

    from hybrid_search.config.settings import load_settings
    from hybrid_search.ingest.pipeline import index_spec_for

    folder = tmp_path / "minilm-no-normalize"
    shutil.copytree(encoder.folder, folder)
    modules = json.loads((folder / "modules.json").read_text())
    (folder / "modules.json").write_text(json.dumps([m for m in modules if not m["type"].endswith("Normalize")]))
    raw = Encoder(str(folder), settings=ModelSettings(device="cpu", dtype="float32"))
    got = raw.encode_documents(TEXTS[:3]).vectors
    expected = SentenceTransformer(str(folder), device="cpu").encode(TEXTS[:3])
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)
    settings = load_settings()
    assert index_spec_for(raw, settings).similarity == "cosine"
    assert index_spec_for(encoder, settings).similarity == "dot_product"
