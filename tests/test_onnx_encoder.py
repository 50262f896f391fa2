"""The bi-encoder's runtimes and precisions on the CPU: ONNX Runtime (exported once, cached, int8 where the
CPU has int8 dot products) and torch in bf16 where the CPU has AMX, each against torch fp32 on the real model."""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest
import torch

from hybrid_search.config.errors import ConfigError
from hybrid_search.config.settings import ModelSettings
from hybrid_search.encoding import onnx_export
from hybrid_search.encoding.encoder import Encoder, fast_cpu_bf16, torch_dtype
from tests.conftest import SAMPLE

TEXTS = [
    "How do I learn Python quickly?",
    "What is the best way to learn python fast",
    "Berlin is the capital and largest city of Germany by both area and population.",
    "a",
    "word " * 400,
]


@pytest.fixture
def model_copy(tmp_path, encoder):
    """The real model's folder as links in a temporary folder, so an export beside it lands in tmp_path."""
    folder = tmp_path / "minilm"
    shutil.copytree(
        encoder.folder, folder, copy_function=os.symlink, ignore=shutil.ignore_patterns(".hybrid_search_onnx")
    )
    return folder


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


def test_onnx_runtimes_encode_as_torch_does_and_export_once(model_copy):
    expected = Encoder(str(model_copy), settings=ModelSettings(dtype="float32")).encode(TEXTS).vectors
    fp32 = Encoder(str(model_copy), settings=ModelSettings(encode_runtime="onnx-fp32"))
    got = fp32.encode(TEXTS)
    assert fp32.precision == "float32" and got.truncated == 1
    np.testing.assert_allclose(got.vectors, expected, atol=1e-4)
    int8 = Encoder(str(model_copy), settings=ModelSettings(encode_runtime="onnx"))
    assert int8.precision == ("int8" if onnx_export.has_int8_dot() else "float32")
    quantized = int8.encode(TEXTS).vectors
    np.testing.assert_allclose(np.linalg.norm(quantized, axis=1), 1.0, atol=1e-5)
    assert cosines(quantized, expected).min() > 0.97  # int8 weights: close, not equal (quality: bench --quality)
    assert int8.encode(TEXTS[:2]).vectors[0] @ int8.encode(TEXTS[:2]).vectors[1] > 0.8
    cached = sorted((model_copy / ".hybrid_search_onnx").glob("*.onnx"))
    assert len(cached) == (2 if int8.precision == "int8" else 1)
    stamps = [p.stat().st_mtime_ns for p in cached]
    again = Encoder(str(model_copy), settings=ModelSettings(encode_runtime="onnx"))
    np.testing.assert_array_equal(again.encode(TEXTS).vectors, quantized)  # the cached export, read back
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    assert not list((model_copy / ".hybrid_search_onnx").glob("*.tmp"))
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in cached)  # readable by every user of a shared model


def test_new_weights_in_the_same_folder_are_exported_anew(model_copy):
    first = Encoder(str(model_copy), settings=ModelSettings(encode_runtime="onnx-fp32"))
    first.load()
    weights = model_copy / "model.safetensors"
    target = weights.resolve()
    weights.unlink()
    shutil.copyfile(target, weights)  # same bytes, new file: a retrained model saved over the old one
    second = Encoder(str(model_copy), settings=ModelSettings(encode_runtime="onnx-fp32"))
    second.load()
    assert second._onnx.path != first._onnx.path and second._onnx.path.exists()


def test_a_model_folder_that_cannot_hold_the_export_falls_back_to_the_user_cache(model_copy, tmp_path, monkeypatch):
    """Where the cache cannot be made beside the model (here a file already holds its name: the same refusal
    a read-only folder gives, and one root cannot override), the export goes to the user's cache folder."""
    monkeypatch.setenv("HYBRID_SEARCH_CACHE", str(tmp_path / "cache"))
    (model_copy / ".hybrid_search_onnx").write_text("not a folder")
    enc = Encoder(str(model_copy), settings=ModelSettings(encode_runtime="onnx-fp32"))
    enc.load()
    assert enc._onnx.path.is_relative_to(tmp_path / "cache") and enc._onnx.path.exists()
    assert enc.encode(TEXTS[:1]).vectors.shape == (1, 384)


def test_a_process_with_a_cached_export_encodes_without_torch(model_copy, tmp_path):
    """The ONNX runtime's point on a CPU beyond speed: a search process never imports torch to encode."""
    import subprocess

    Encoder(str(model_copy), settings=ModelSettings(encode_runtime="onnx-fp32")).load()  # the export, once
    code = (
        "import sys\n"
        "from hybrid_search.config.settings import ModelSettings\n"
        "from hybrid_search.encoding.encoder import Encoder\n"
        f"e = Encoder({str(model_copy)!r}, settings=ModelSettings(encode_runtime='onnx-fp32'))\n"
        "v = e.encode_queries(['what is python'])\n"
        "print(v.shape, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["(1,", "384)", "False"]


def test_onnx_is_refused_off_the_cpu_with_what_to_do(model_copy):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine: the refusal needs a GPU device to be chosen")
    with pytest.raises(ConfigError, match="--encode-runtime torch"):
        _ = Encoder(str(model_copy), settings=ModelSettings(device="cuda", encode_runtime="onnx")).device


def test_auto_precision_on_the_cpu_is_bf16_only_with_amx(monkeypatch):
    amx = "amx_bf16" in onnx_export.cpu_flags()
    assert (torch_dtype("auto", "cpu", cpu_bf16=True) == torch.bfloat16) == amx
    assert (Encoder(settings=ModelSettings(device="cpu")).precision == "bfloat16") == amx
    assert torch_dtype("auto", "cpu") == torch.float32  # other models (SPLADE, cross-encoders) stay fp32
    monkeypatch.setattr(onnx_export, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16", "amx_tile"}))
    assert fast_cpu_bf16()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")  # AMX capped off: bf16 would be slower
    assert not fast_cpu_bf16()
    monkeypatch.setattr(onnx_export, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert not fast_cpu_bf16() and torch_dtype("auto", "cpu", cpu_bf16=True) == torch.float32
    assert torch_dtype("float32", "cpu") == torch.float32 and torch_dtype("auto", "cuda") == torch.float16


@pytest.mark.parametrize(
    ("flags", "runtime", "precision"),
    [
        ({"avx512f", "avx512_vnni", "amx_bf16", "amx_tile"}, "torch", "bfloat16"),  # bf16 measured fastest
        ({"avx512f", "avx512_vnni", "avx512_bf16"}, "onnx", "int8"),  # int8 2.2x torch fp32 there
        ({"avx2", "avx_vnni"}, "onnx", "int8"),
        ({"avx2", "fma"}, "torch", "float32"),  # no int8 dot products: ONNX int8 not measured faster
    ],
)
def test_auto_runtime_is_what_measured_fastest_on_each_cpu(monkeypatch, flags, runtime, precision):
    monkeypatch.setattr(onnx_export, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(onnx_export.platform, "machine", lambda: "x86_64")
    chosen = Encoder(settings=ModelSettings(device="cpu"))
    assert (chosen.runtime, chosen.precision, chosen.query_precision) == (runtime, precision, "float32")
    pinned = Encoder(settings=ModelSettings(device="cpu", dtype="float32"))  # a dtype is torch's: torch in it
    assert (pinned.runtime, pinned.precision, pinned.query_precision) == ("torch", "float32", "float32")
    assert Encoder(settings=ModelSettings(device="cuda:7")).runtime == "torch"  # a GPU named: torch says if it is there


def test_an_export_that_fails_under_auto_encodes_in_torch_and_says_so(model_copy, tmp_path, monkeypatch, caplog):
    """No writable cache anywhere (a file holds the folder's name beside the model, and the user cache sits
    under a file): auto encodes in torch with a warning; an asked-for ONNX runtime is the error."""
    flags = onnx_export.cpu_flags()
    monkeypatch.setattr(onnx_export, "cpu_flags", lambda: (flags - {"amx_bf16"}) | {"avx512_vnni"})
    (model_copy / ".hybrid_search_onnx").write_text("not a folder")
    (tmp_path / "plain-file").write_text("")
    monkeypatch.setenv("HYBRID_SEARCH_CACHE", str(tmp_path / "plain-file" / "cache"))
    chosen = Encoder(str(model_copy), settings=ModelSettings(device="cpu"))
    assert chosen.runtime == "onnx"
    with caplog.at_level("WARNING", logger="hybrid_search.encoding.encoder"):
        got = chosen.encode(TEXTS).vectors
    assert chosen.runtime == "torch" and "no writable folder" in caplog.text and "torch instead" in caplog.text
    exact = Encoder(str(model_copy), settings=ModelSettings(device="cpu", dtype="float32")).encode(TEXTS).vectors
    np.testing.assert_allclose(got, exact, atol=1e-5)
    with pytest.raises(ConfigError, match="HYBRID_SEARCH_CACHE"):
        Encoder(str(model_copy), settings=ModelSettings(encode_runtime="onnx")).encode(TEXTS)


def test_bf16_vectors_stay_close_to_fp32(encoder):
    expected = Encoder(settings=ModelSettings(device="cpu", dtype="float32")).encode(TEXTS).vectors
    got = Encoder(settings=ModelSettings(device="cpu", dtype="bfloat16")).encode(TEXTS).vectors
    assert cosines(got, expected).min() > 0.999


def test_bench_encode_compares_runtimes_and_their_retrieval_quality(model_copy, tmp_path):
    from hybrid_search.app.bench import run_bench
    from hybrid_search.config.settings import load_settings

    settings = load_settings(overrides={"data_dir": str(tmp_path), "models": {"bi_encoder": str(model_copy)}})
    report = run_bench(
        "encode", settings, source=str(SAMPLE), docs=16, repeats=1, runtimes=["torch", "onnx"], quality=True
    )
    assert list(report["variants"]) == ["torch", "onnx"]
    onnx = report["variants"]["onnx"]
    assert (
        onnx["ours"]["runtime"] == "onnx"
        and onnx["ours"]["query_precision"] == "float32"
        and onnx["reference"]["precision"] == "float32"
    )
    quality = onnx["quality"]
    assert quality["documents"] > 16 and quality["queries"] > 0
    for side in ("ours", "reference"):
        assert 0 < quality[side]["ndcg@10"] <= 1 and quality[side]["docs_per_s"] > 0
    assert quality["ndcg@10_difference"] == pytest.approx(quality["ours"]["ndcg@10"] - quality["reference"]["ndcg@10"])
    assert abs(quality["ndcg@10_difference"]) < 0.1
    assert quality["document_cosine_to_reference"]["min"] > 0.97
    with pytest.raises(ConfigError, match="--runtimes"):
        run_bench("encode", settings, docs=4, repeats=1, runtimes=["tensorrt"])
    unjudged = tmp_path / "docs.jsonl"
    unjudged.write_text('{"_id": "a", "text": "one"}\n{"_id": "b", "text": "two"}\n')
    with pytest.raises(ConfigError, match="--quality needs --source: a BEIR folder"):
        run_bench("encode", settings, source=str(unjudged), docs=4, repeats=1, quality=True)


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_a_query_vector_never_depends_on_the_queries_beside_it(model_copy, monkeypatch, runtime):
    """Documents encode at the fast precision (bf16 where the CPU has AMX, ONNX int8 where it has VNNI), which
    rounds a text differently in another batch; queries encode in fp32, so a query gets the same vector, hence
    the same hits, alone (a search) as among others (eval, tune's cache)."""
    flags = onnx_export.cpu_flags()
    monkeypatch.setattr(onnx_export, "cpu_flags", lambda: flags | {"amx_bf16"})  # bf16 runs on any CPU: slower
    enc = Encoder(str(model_copy), settings=ModelSettings(device="cpu", encode_runtime=runtime))
    fast = "bfloat16" if runtime == "torch" else ("int8" if onnx_export.has_int8_dot() else "float32")
    assert enc.precision == fast
    fp32 = Encoder(str(model_copy), settings=ModelSettings(device="cpu", dtype="float32"))
    together = enc.encode_queries(TEXTS)
    alone = np.stack([enc.encode_queries([text])[0] for text in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(together, fp32.encode_queries(TEXTS), atol=1e-4)
    if fast != "float32":  # documents stay at the fast precision: close to fp32, not equal
        documents, exact = enc.encode_documents(TEXTS).vectors, fp32.encode_documents(TEXTS).vectors
        assert 0.97 < cosines(documents, exact).min() and np.abs(documents - exact).max() > 1e-4
