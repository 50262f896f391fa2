"""The cross-encoder: real offline ONNX model, reordering, and the torch runtime against sentence-transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybrid_search.app.bench import random_cross_encoder
from hybrid_search.config.settings import ModelSettings
from hybrid_search.rerank.cross_encoder import CrossEncoderReranker
from hybrid_search.search.hits import Hit
from hybrid_search.search.searcher import rerank_hits

QUERY = "how many people live in berlin"
PASSAGES = [
    "The capital of France is Paris, on the Seine.",
    "Berlin has a population of about 3.7 million inhabitants, the most of any German city.",
    "Berlin is known for its museums and nightlife.",
]


def test_onnx_model_ranks_the_answer_first(reranker):
    assert reranker.runtime == "onnx"
    scores = reranker.score(QUERY, PASSAGES)
    assert scores.shape == (3,) and int(np.argmax(scores)) == 1
    assert scores[1] > scores[2] > scores[0]
    assert reranker.score(QUERY, []).shape == (0,)


def test_rerank_reorders_the_head_and_keeps_the_tail(reranker):
    hits = [Hit(doc_id=f"d{i}", rank=i + 1, score=1.0 - i / 10, text=t) for i, t in enumerate(PASSAGES)]
    hits.append(Hit(doc_id="tail", rank=4, score=0.1, text="Berlin population figures"))
    out = rerank_hits(reranker, QUERY, hits, depth=3)
    assert [h.doc_id for h in out] == ["d1", "d2", "d0", "tail"]
    assert [h.rank for h in out] == [1, 2, 3, 4]
    assert out[0].rerank_score == out[0].score and out[-1].rerank_score is None


def test_torch_runtime_matches_sentence_transformers(tmp_path, reranker):
    from sentence_transformers import CrossEncoder

    folder = random_cross_encoder(reranker.folder, tmp_path / "tiny", layers=2, hidden=64, heads=2, intermediate=128)
    ours = CrossEncoderReranker(
        str(folder), settings=ModelSettings(device="cpu", rerank_runtime="auto", rerank_batch_size=2)
    )
    assert ours.runtime == "torch"  # no ONNX file there
    reference = CrossEncoder(str(folder), device="cpu")
    expected = reference.predict([(QUERY, p) for p in PASSAGES], batch_size=2)
    got = ours.score(QUERY, PASSAGES)
    np.testing.assert_allclose(1 / (1 + np.exp(-got)), expected, atol=1e-5)  # predict applies a sigmoid


def test_runtime_choice_errors_say_what_to_use(reranker):
    forced = CrossEncoderReranker(str(reranker.folder), settings=ModelSettings(rerank_runtime="torch"))
    from hybrid_search.config.errors import ConfigError

    with pytest.raises(ConfigError, match="--rerank-runtime onnx"):
        forced.runtime


def test_a_transformers_only_cross_encoder_is_exported_to_onnx_when_asked(tmp_path, encoder):
    """``--rerank-runtime onnx`` on a model with transformers weights only: exported once beside it (int8
    where the CPU has int8 dot products), scoring as torch does (fp32 close; int8 nearly in the same order).
    The model: MiniLM's pretrained layers under a new one-logit head (real features, so int8 errors are
    measured against real score differences)."""
    import shutil

    from transformers import AutoModelForSequenceClassification

    from hybrid_search.encoding import onnx_export

    folder = tmp_path / "minilm-ce"
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(encoder.folder, num_labels=1)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(encoder.folder / name, folder / name)
    texts = PASSAGES + [f"{w} is a word about berlin and its {w} people" for w in ("one", "many", "few", "old", "new")]
    settings = ModelSettings(device="cpu", rerank_batch_size=3)
    torch_scores = CrossEncoderReranker(str(folder), settings=settings).score(QUERY, texts)
    exported = CrossEncoderReranker(str(folder), settings=settings.model_copy(update={"rerank_runtime": "onnx"}))
    assert exported.runtime == "onnx"
    got = exported.score(QUERY, texts)
    int8 = onnx_export.has_int8_dot()
    assert exported.onnx_path.parent == folder / ".hybrid_search_onnx"
    assert exported.onnx_path.name.startswith("encoder-int8-" if int8 else "encoder-fp32-")
    if int8:
        assert np.corrcoef(got, torch_scores)[0, 1] > 0.95
    else:
        np.testing.assert_allclose(got, torch_scores, atol=1e-4)
    again = CrossEncoderReranker(str(folder), settings=settings.model_copy(update={"rerank_runtime": "onnx"}))
    np.testing.assert_array_equal(again.score(QUERY, texts), got)  # the cached export, read back
    (folder / "model.safetensors").unlink()
    from hybrid_search.config.errors import ConfigError

    with pytest.raises(ConfigError, match="neither model.onnx nor transformers weights"):
        _ = CrossEncoderReranker(str(folder), settings=ModelSettings(device="cpu", rerank_runtime="onnx")).runtime
